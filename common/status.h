// Status and Result<T>: how every mnemo subsystem reports expected failures.
//
// A Status is a code plus a message a user can act on ("dimension 64 does not
// match collection 'docs' (128)"). Codes are stable numbers so that the wire
// can carry them; they tell the caller what to do next:
//   kInvalidArgument, kNotFound, kAlreadyExists, kOutOfRange: fix the request.
//   kFailedPrecondition: fix the state first (e.g. train before search; a
//     store that stopped taking writes after a failed write: reopen it).
//   kUnavailable, kResourceExhausted: retry later.
//   kIOError, kCorruption, kInternal: the server is unhealthy.
//   kUnimplemented: this server does not offer the operation.
// Exceptions from libraries are caught at subsystem boundaries and turned
// into a Status; none crosses a module boundary or the network.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace mnemo {

enum class StatusCode : uint8_t {
  kOk = 0,
  kInvalidArgument = 1,
  kNotFound = 2,
  kAlreadyExists = 3,
  kOutOfRange = 4,
  kFailedPrecondition = 5,
  kUnavailable = 6,
  kResourceExhausted = 7,
  kIOError = 8,
  kCorruption = 9,
  kInternal = 10,
  kUnauthenticated = 11,
  kPermissionDenied = 12,
  kUnimplemented = 13,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status OK() { return Status(); }
  static Status InvalidArgument(std::string m) { return {StatusCode::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
  static Status OutOfRange(std::string m) { return {StatusCode::kOutOfRange, std::move(m)}; }
  static Status FailedPrecondition(std::string m) { return {StatusCode::kFailedPrecondition, std::move(m)}; }
  static Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
  static Status ResourceExhausted(std::string m) { return {StatusCode::kResourceExhausted, std::move(m)}; }
  static Status IOError(std::string m) { return {StatusCode::kIOError, std::move(m)}; }
  static Status Corruption(std::string m) { return {StatusCode::kCorruption, std::move(m)}; }
  static Status Unauthenticated(std::string m) { return {StatusCode::kUnauthenticated, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {StatusCode::kPermissionDenied, std::move(m)}; }
  static Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
  static Status Unimplemented(std::string m) { return {StatusCode::kUnimplemented, std::move(m)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: dimension 64 does not match ..." or "OK".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Ends the process with `status` on stderr: the value of a Result that holds
// an error was asked for, a bug in the caller.
[[noreturn]] void DieOnBadResultAccess(const Status& status);

// Either a value or a non-OK Status. Asking for the value of a Result that
// is not ok() ends the process with the error (as absl::StatusOr does):
// check ok() first, or use MNEMO_ASSIGN_OR_RETURN.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  // `status` must not be OK (an OK Status holds no value: that is Internal).
  Result(Status status)  // NOLINT: implicit by design
      : status_(status.ok() ? Status::Internal("Result made from an OK Status") : std::move(status)) {}
  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return Checked(); }
  const T& value() const& { return Checked(); }
  T&& value() && { return std::move(Checked()); }
  T* operator->() { return &Checked(); }
  const T* operator->() const { return &Checked(); }
  T& operator*() & { return Checked(); }
  const T& operator*() const& { return Checked(); }

 private:
  T& Checked() {
    if (!value_) DieOnBadResultAccess(status_);
    return *value_;
  }
  const T& Checked() const {
    if (!value_) DieOnBadResultAccess(status_);
    return *value_;
  }

  Status status_;
  std::optional<T> value_;
};

}  // namespace mnemo

// Returns early from the enclosing function when `expr` is not OK.
#define MNEMO_RETURN_IF_ERROR(expr)          \
  do {                                        \
    ::mnemo::Status _st = (expr);             \
    if (!_st.ok()) return _st;                \
  } while (0)

#define MNEMO_CONCAT_INNER(a, b) a##b
#define MNEMO_CONCAT(a, b) MNEMO_CONCAT_INNER(a, b)
// Declares `lhs` from a Result, or returns its Status.
#define MNEMO_ASSIGN_OR_RETURN(lhs, expr) \
  MNEMO_ASSIGN_OR_RETURN_IMPL(MNEMO_CONCAT(_res_, __LINE__), lhs, expr)
#define MNEMO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

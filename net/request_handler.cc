#include "net/request_handler.h"

#include <atomic>
#include <chrono>
#include <exception>
#include <string>

#include <spdlog/spdlog.h>

namespace mnemo::net {
namespace {

// Frames larger than this (many queries, or not searches at all) are not
// worth verifying on the I/O thread: they run on the pool.
constexpr size_t kInlineMaxBytes = 16 << 10;

std::string_view View(const std::vector<uint8_t>& body) {
  return {reinterpret_cast<const char*>(body.data()), body.size()};
}

// An exception thrown while handling, as the error that answers the request.
Status FromException(std::exception_ptr thrown, const char* operation) {
  std::string what = "unknown exception";
  try {
    std::rethrow_exception(thrown);
  } catch (const std::bad_alloc&) {
    what = "out of memory";
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  spdlog::error("{} failed with an exception: {}", operation, what);
  return Status::Internal(std::string(operation) + " failed inside the server: " + what);
}

}  // namespace

Runs RequestHandler::Classify(InFrame& in) {
  if (!in.attachment.empty() || in.body.size() > kInlineMaxBytes) return Runs::kOrdered;
  const Operation* op = VerifyHere(in);
  return op != nullptr && op->runs == Runs::kSearch ? Runs::kSearch : Runs::kOrdered;
}

bool RequestHandler::CanStream(InFrame& in) {
  const Operation* op = VerifyHere(in);
  return op != nullptr && op->runs == Runs::kStreamed;
}

Status RequestHandler::Admit(InFrame& in) const {
  if (keys_ == nullptr) return Status::OK();
  if (VerifyHere(in) == nullptr) {
    auto verified = VerifyRequest(View(in.body));
    return verified.ok() ? Status::InvalidArgument("unknown operation or a request without a body")
                         : verified.status();
  }
  auto checked = keys_->Check(*in.verified);
  return checked.ok() ? Status::OK() : checked.status();
}

const Operation* RequestHandler::VerifyHere(InFrame& in) {
  if (in.verified != nullptr) {  // Admit verified it already
    return in.verified->request() != nullptr ? FindOperation(in.verified->request_type()) : nullptr;
  }
  auto verified = VerifyRequest(View(in.body));
  if (!verified.ok()) return nullptr;  // Handle verifies it again and answers the error
  in.verified = *verified;
  return in.verified->request() != nullptr ? FindOperation(in.verified->request_type()) : nullptr;
}

void RequestHandler::OverrideForTesting(wire::Request type, Handler handler) {
  overrides_.emplace_back(type, handler);
}

void RequestHandler::Handle(Frame frame, Done done) {
  const auto start = std::chrono::steady_clock::now();
  auto finish = [this, start, done](wire::Request type, Reply reply, bool error) {
    metrics_->RecordRequest(
        type, error, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    done(std::move(reply));
  };
  auto fail = [&finish](wire::Request type, uint64_t id, const Status& st) {
    finish(type, ErrorResponse(id, st), true);
  };

  const wire::RequestFrame* f = frame->verified;
  if (f == nullptr) {
    auto verified = VerifyRequest(View(frame->body));
    if (!verified.ok()) return fail(wire::Request::NONE, 0, verified.status());
    f = *verified;
  }
  const uint64_t id = f->request_id();
  const wire::Request type = f->request_type();
  const char* name = RequestName(type);
  const Operation* op = FindOperation(type);
  if (op == nullptr) {
    return fail(type, id, Status::InvalidArgument("unknown operation " + std::to_string(int(type))));
  }
  // The verifier accepts a union whose value is absent; every operation
  // needs its body. (Found by tests/fuzz/frame_fuzzer.)
  if (f->request() == nullptr) {
    return fail(type, id, Status::InvalidArgument(std::string("request '") + name + "' has no body"));
  }
  if (!frame->attachment.empty() && !op->takes_attachment) {
    return fail(type, id,
                Status::InvalidArgument(std::string("request '") + name + "' takes no attachment"));
  }
  const Grant* grant = nullptr;
  if (keys_ != nullptr) {
    auto checked = keys_->Check(*f);
    if (!checked.ok()) return fail(type, id, checked.status());
    grant = *checked;
  }

  Handler handler = op->handler;
  for (const auto& [t, h] : overrides_) {
    if (t == type) handler = h;
  }
  // Answered once: by the handler, or here if it throws before it did.
  auto answered = std::make_shared<std::atomic<bool>>(false);
  Respond respond = [finish, answered, type, id](Result<Reply> reply) {
    if (answered->exchange(true)) return;
    if (!reply.ok()) return finish(type, ErrorResponse(id, reply.status()), true);
    finish(type, std::move(reply).value(), false);
  };
  Send send = [done, answered](Reply part) {
    if (!answered->load()) done(std::move(part));
  };
  try {
    handler(Call{*engine_, *batcher_, *f, frame, grant}, send, respond);
  } catch (...) {
    respond(FromException(std::current_exception(), name));
  }
}

}  // namespace mnemo::net

// The wire protocol's framing and the helpers both ends share: verifying an
// inbound frame, building error replies, and the limits that keep a
// malformed or hostile peer from hurting the server.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "common/mutex.h"
#include "common/status.h"
#include "net/buffer_pool.h"
#include "net/mnemo_generated.h"

namespace mnemo::net {

inline constexpr uint16_t kProtocolVersion = 2;
inline constexpr uint32_t kDefaultMaxFrameBytes = 256u << 20;       // FlatBuffer part
inline constexpr uint32_t kDefaultMaxAttachmentBytes = 2047u << 20;  // attachment part

// Bounds for the FlatBuffers verifier: nesting is shallow in this schema, and
// the table count bounds the per-entry payload tables of one upsert.
inline constexpr uint32_t kVerifierMaxDepth = 16;
inline constexpr uint32_t kVerifierMaxTables = 4u << 20;

// Verifies `bytes` as a RequestFrame; InvalidArgument when it is not one or
// speaks a newer protocol version.
Result<const wire::RequestFrame*> VerifyRequest(std::string_view bytes);
Result<const wire::ResponseFrame*> VerifyResponse(std::string_view bytes);

// A finished ResponseFrame carrying `status` (which must not be OK).
flatbuffers::DetachedBuffer ErrorResponse(uint64_t request_id, const Status& status);

// The completion condition for reading and writing whole frames: Asio's
// default (transfer_all) moves at most 64 KiB per system call, which made a
// 32 MiB KV attachment cost 512 syscalls and reactor round trips; this lets
// each call move whatever the socket takes.
struct TransferAllAtOnce {
  template <typename Error>
  size_t operator()(const Error& ec, size_t) const {
    return ec ? 0 : size_t(1) << 30;
  }
};

// Every frame's header (net/mnemo.fbs, "Framing"): the bytes of its
// FlatBuffer and of its attachment, as two little-endian uint32s.
struct FrameHeader {
  static constexpr size_t kBytes = 8;
  uint32_t body = 0;
  uint32_t attachment = 0;
  void EncodeTo(uint8_t* dst) const;
  static FrameHeader DecodeFrom(const uint8_t* src);
};

// How much of an attachment has arrived, for a request that runs while the
// rest is still on the wire (a put_kv appends its first layers while the
// later ones arrive). The connection's reader calls Advance as bytes land
// and Fail if they never will (the connection ended); the request waits for
// the bytes it needs. Thread-safe.
class AttachmentProgress {
 public:
  explicit AttachmentProgress(size_t have) : have_(have) {}
  void Advance(size_t have);
  void Fail();
  // True once the attachment's first `bytes` have arrived; false if they
  // will not.
  bool WaitFor(size_t bytes);

 private:
  Mutex mu_;
  std::condition_variable_any arrived_;
  size_t have_ GUARDED_BY(mu_);
  bool failed_ GUARDED_BY(mu_) = false;
};

// A request as received: its FlatBuffer and its attachment (often empty).
struct InFrame {
  std::vector<uint8_t> body;
  Buffer attachment;
  // Set when the request was dispatched before its attachment had arrived;
  // then only the bytes it reports may be read.
  std::shared_ptr<AttachmentProgress> progress;
  // The body as a verified RequestFrame, once the thread that read it has
  // verified it (RequestHandler::Classify); null until then, and for a body
  // that did not verify. Points into `body`.
  const wire::RequestFrame* verified = nullptr;
};

// A reply to send: a finished ResponseFrame and its attachment.
struct Reply {
  Reply() = default;
  Reply(flatbuffers::DetachedBuffer b) : body(std::move(b)) {}  // NOLINT: implicit on purpose
  Reply(flatbuffers::DetachedBuffer b, Buffer a) : body(std::move(b)), attachment(std::move(a)) {}
  flatbuffers::DetachedBuffer body;
  Buffer attachment;
  // One part of a streamed reply, with more to follow for the same request.
  bool more = false;
};

}  // namespace mnemo::net

#include "net/protocol.h"

#include <cstring>

namespace mnemo::net {

Result<const wire::RequestFrame*> VerifyRequest(std::string_view bytes) {
  auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier verifier(data, bytes.size(), kVerifierMaxDepth, kVerifierMaxTables);
  if (!wire::VerifyRequestFrameBuffer(verifier)) {
    return Status::InvalidArgument("malformed request frame (" + std::to_string(bytes.size()) +
                                   " bytes failed verification)");
  }
  auto* frame = wire::GetRequestFrame(data);
  if (frame->version() > kProtocolVersion) {
    return Status::InvalidArgument("protocol version " + std::to_string(frame->version()) +
                                   " is newer than this server's " +
                                   std::to_string(kProtocolVersion));
  }
  return frame;
}

Result<const wire::ResponseFrame*> VerifyResponse(std::string_view bytes) {
  auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  flatbuffers::Verifier verifier(data, bytes.size(), kVerifierMaxDepth, kVerifierMaxTables);
  if (!verifier.VerifyBuffer<wire::ResponseFrame>(nullptr)) {
    return Status::Corruption("malformed response frame");
  }
  return flatbuffers::GetRoot<wire::ResponseFrame>(data);
}

flatbuffers::DetachedBuffer ErrorResponse(uint64_t request_id, const Status& status) {
  flatbuffers::FlatBufferBuilder b(128 + status.message().size());
  auto err = wire::CreateErrorDirect(b, uint8_t(status.code()), status.message().c_str());
  b.Finish(wire::CreateResponseFrame(b, kProtocolVersion, request_id, wire::Response::Error,
                                     err.Union()));
  return b.Release();
}

// Little-endian on the wire; every machine mnemo builds for is too.
void FrameHeader::EncodeTo(uint8_t* dst) const {
  std::memcpy(dst, &body, 4);
  std::memcpy(dst + 4, &attachment, 4);
}

FrameHeader FrameHeader::DecodeFrom(const uint8_t* src) {
  FrameHeader h;
  std::memcpy(&h.body, src, 4);
  std::memcpy(&h.attachment, src + 4, 4);
  return h;
}

void AttachmentProgress::Advance(size_t have) {
  {
    MutexLock lock(&mu_);
    have_ = have;
  }
  arrived_.notify_all();
}

void AttachmentProgress::Fail() {
  {
    MutexLock lock(&mu_);
    failed_ = true;
  }
  arrived_.notify_all();
}

bool AttachmentProgress::WaitFor(size_t bytes) {
  MutexLock lock(&mu_);
  while (have_ < bytes && !failed_) arrived_.wait(mu_);
  return have_ >= bytes;
}

}  // namespace mnemo::net

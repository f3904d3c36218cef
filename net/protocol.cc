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

const char* RequestName(wire::Request type) {
  switch (type) {
    case wire::Request::CreateCollection: return "create_collection";
    case wire::Request::DropCollection: return "drop_collection";
    case wire::Request::ListCollections: return "list_collections";
    case wire::Request::GetStats: return "stats";
    case wire::Request::Train: return "train";
    case wire::Request::Upsert: return "upsert";
    case wire::Request::Get: return "get";
    case wire::Request::Delete: return "delete";
    case wire::Request::Search: return "search";
    case wire::Request::CreateKvSpace: return "create_kv_space";
    case wire::Request::DropKvSpace: return "drop_kv_space";
    case wire::Request::PutKv: return "put_kv";
    case wire::Request::GetKv: return "get_kv";
    case wire::Request::MatchPrefix: return "match_prefix";
    case wire::Request::Backup: return "backup";
    case wire::Request::GetKvStats: return "kv_stats";
    case wire::Request::ReserveKv: return "reserve_kv";
    default: return "unknown";
  }
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
    std::lock_guard<std::mutex> lock(mu_);
    have_ = have;
  }
  arrived_.notify_all();
}

void AttachmentProgress::Fail() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    failed_ = true;
  }
  arrived_.notify_all();
}

bool AttachmentProgress::WaitFor(size_t bytes) {
  std::unique_lock<std::mutex> lock(mu_);
  arrived_.wait(lock, [&] { return have_ >= bytes || failed_; });
  return have_ >= bytes;
}

}  // namespace mnemo::net

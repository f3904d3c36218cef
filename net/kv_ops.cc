// Handlers of the operations on KV spaces and their segments.
#include <algorithm>
#include <mutex>
#include <vector>

#include "net/conversions.h"
#include "net/operations.h"

namespace mnemo::net {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

Reply KvInfoReply(uint64_t id, const engine::KvSpaceStats& s) {
  FlatBufferBuilder b(256);
  return FinishReply(b, id, wire::Response::KvSpaceInfo, ToWire(b, s).Union());
}

Result<Reply> CreateKvSpace(const Call& c) {
  MNEMO_ASSIGN_OR_RETURN(auto space,
                         c.engine.CreateKvSpace(FromWire(*c.frame.request_as_CreateKvSpace())));
  return KvInfoReply(c.id(), space->Stats());
}

Result<Reply> DropKvSpace(const Call& c) {
  MNEMO_RETURN_IF_ERROR(c.engine.DropKvSpace(Str(c.frame.request_as_DropKvSpace()->name())));
  return AckReply(c.id(), 1);
}

Result<Reply> GetKvStats(const Call& c) {
  MNEMO_ASSIGN_OR_RETURN(auto space, c.engine.GetKvSpace(Str(c.frame.request_as_GetKvStats()->name())));
  return KvInfoReply(c.id(), space->Stats());
}

// The layers of a put come in the frame (keys and values vectors), in its
// attachment (layer by layer, keys then values; appended as they arrive),
// or, for a same-host put, already in the value log (a reservation).
Result<Reply> PutKv(const Call& c) {
  auto* r = c.frame.request_as_PutKv();
  const Buffer& in = c.in->attachment;
  MNEMO_ASSIGN_OR_RETURN(auto space, c.engine.GetKvSpace(Str(r->space())));
  if (r->reservation() != 0) {
    if (!in.empty() || r->keys() != nullptr || r->values() != nullptr) {
      return Status::InvalidArgument(
          "a same-host put_kv (reservation set) carries no keys, values or attachment");
    }
    MNEMO_RETURN_IF_ERROR(space->PutReserved(Bytes(r->chunk_hash()), r->reservation()));
  } else if (in.empty()) {
    MNEMO_RETURN_IF_ERROR(
        space->Put(Bytes(r->chunk_hash()), Span(r->keys()), Span(r->values()), r->tokens()));
  } else {
    if (r->keys() != nullptr || r->values() != nullptr) {
      return Status::InvalidArgument(
          "put_kv carries keys and values either in the frame or in its attachment, not both");
    }
    std::function<bool(size_t)> arrived;
    if (c.in->progress) arrived = [p = c.in->progress.get()](size_t n) { return p->WaitFor(n); };
    MNEMO_RETURN_IF_ERROR(
        space->PutInterleaved(Bytes(r->chunk_hash()), in.span(), r->tokens(), arrived));
  }
  return AckReply(c.id(), 1);
}

// A KvSegment reply whose attachment holds layers [first, first + count) of
// `read`; `part`: one frame of a streamed reply; `encoded`: as stored.
Reply KvSegmentReply(uint64_t request_id, const engine::KvSpaceConfig& c,
                     const engine::KvRead& read, size_t first, size_t count, bool part,
                     bool encoded, Buffer attachment) {
  FlatBufferBuilder b(256 + 12 * read.layers.size());
  auto dtype = b.CreateString(c.dtype);
  auto layers = b.CreateVector(read.layers);
  Offset<flatbuffers::String> codec;
  Offset<flatbuffers::Vector<uint64_t>> stored_bytes;
  if (encoded) {
    codec = b.CreateString(c.codec);
    std::vector<uint64_t> lengths;
    for (const auto& ref : read.stored) lengths.push_back(ref.length);
    stored_bytes = b.CreateVector(lengths);
  }
  wire::KvSegmentBuilder seg(b);
  seg.add_tokens(read.tokens);
  seg.add_dtype(dtype);
  seg.add_layers(layers);
  seg.add_layer_bytes(read.layer_bytes);
  seg.add_kv_heads(c.kv_heads);
  seg.add_head_dim(c.head_dim);
  if (part) {
    seg.add_part_first(uint32_t(first));
    seg.add_part_layers(uint32_t(count));
  }
  if (encoded) {
    seg.add_codec(codec);
    seg.add_stored_bytes(stored_bytes);
  }
  Reply reply = FinishReply(b, request_id, wire::Response::KvSegment, seg.Finish().Union());
  reply.attachment = std::move(attachment);
  return reply;
}

// A get_kv answered in the attachment: the layers are read (raw: one pread
// per layer) straight into it, each layer's keys then values (or, encoded,
// each layer as stored), in the order a streaming reader uses them. Asked
// to stream, the reply comes in parts of whole layers, about
// kStreamPartBytes each; up to kStreamReadThreads parts are read at once
// (one thread copies page-cached bytes at about the network's pace, so one
// reader would set it), and each is sent through `send` as soon as it and
// the parts before it are in: the first layers are on the wire while later
// ones are read. Returns the last (or only) part, or the error that ends
// the reply (no part after a failed one is sent).
constexpr size_t kStreamPartBytes = size_t(4) << 20;
constexpr int kStreamReadThreads = 4;

Result<Reply> GetKvInAttachment(const Call& c, const Send& send, const engine::KvSpace* space,
                                const engine::KvRead& read) {
  auto* r = c.frame.request_as_GetKv();
  const bool encoded = r->encoded();
  const size_t n = read.layers.size(), lb = read.layer_bytes;
  auto bytes_of_layer = [&](size_t i) { return encoded ? read.stored[i].length : 2 * lb; };
  size_t largest = 1;
  for (size_t i = 0; i < n; ++i) largest = std::max<size_t>(largest, bytes_of_layer(i));
  const size_t per_part = r->stream() ? std::max<size_t>(1, kStreamPartBytes / largest)
                                      : std::max<size_t>(1, n);
  const size_t parts = std::max<size_t>(1, (n + per_part - 1) / per_part);
  auto first_of = [&](size_t p) { return p * per_part; };
  auto count_of = [&](size_t p) { return std::min(per_part, n - std::min(n, first_of(p))); };
  auto bytes_of_part = [&](size_t p) {
    size_t total = 0;
    for (size_t i = first_of(p); i < first_of(p) + count_of(p); ++i) total += bytes_of_layer(i);
    return total;
  };
  auto fill = [&](size_t p, uint8_t* out) {
    return encoded ? space->ReadStoredInto(read, first_of(p), count_of(p), out)
                   : space->DecodeInterleavedInto(read, first_of(p), count_of(p), out);
  };
  auto reply_of = [&](size_t p, Buffer att) {
    return KvSegmentReply(c.id(), space->config(), read, first_of(p), count_of(p), r->stream(),
                          encoded, std::move(att));
  };

  std::vector<Buffer> bufs(parts);
  std::vector<Status> read_status(parts);
  std::vector<char> read_done(parts, 0);
  std::mutex mu;
  size_t sent = 0;  // parts sent; guarded by mu, as is read_done
  const int threads = int(std::min<size_t>(parts, kStreamReadThreads));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t p = 0; p < int64_t(parts); ++p) {
    bufs[p] = Buffer::Acquire(bytes_of_part(p));
    read_status[p] = fill(p, bufs[p].data());
    std::lock_guard<std::mutex> lock(mu);
    read_done[p] = 1;
    // In order, and under the lock: the connection writes parts as queued.
    while (sent + 1 < parts && read_done[sent] && read_status[sent].ok()) {
      Reply next = reply_of(sent, std::move(bufs[sent]));
      next.more = true;
      send(std::move(next));
      ++sent;
    }
  }
  for (const Status& st : read_status) MNEMO_RETURN_IF_ERROR(st);
  return reply_of(parts - 1, std::move(bufs.back()));
}

// A get_kv answered in the frame: keys and values vectors, decoded straight
// into the reply.
Result<Reply> GetKvInFrame(const Call& c, const engine::KvSpace* space, const engine::KvRead& read) {
  // Room for both vectors up front, so that the builder does not move them
  // while they are filled.
  const size_t n = read.layer_bytes * read.layers.size();
  FlatBufferBuilder b(1024 + 2 * n + 4 * read.layers.size());
  uint8_t *kp = nullptr, *vp = nullptr;
  auto kv = b.CreateUninitializedVector(n, &kp);
  auto vv = b.CreateUninitializedVector(n, &vp);
  kp = flatbuffers::GetMutableTemporaryPointer(b, kv)->data();
  MNEMO_RETURN_IF_ERROR(space->DecodeInto(read, kp, vp));
  auto body = wire::CreateKvSegment(b, read.tokens, b.CreateString(space->config().dtype),
                                    b.CreateVector(read.layers), kv, vv, read.layer_bytes,
                                    space->config().kv_heads, space->config().head_dim);
  return FinishReply(b, c.id(), wire::Response::KvSegment, body.Union());
}

void GetKv(const Call& c, const Send& send, Respond respond) {
  auto* r = c.frame.request_as_GetKv();
  auto space = c.engine.GetKvSpace(Str(r->space()));
  if (!space.ok()) return respond(space.status());
  auto read = (*space)->Read(Bytes(r->chunk_hash()), Span(r->layers()));
  if (!read.ok()) return respond(read.status());
  if (r->attachment()) return respond(GetKvInAttachment(c, send, space->get(), *read));
  if (r->encoded()) {
    return respond(Status::InvalidArgument("get_kv sends encoded layers only in its attachment"));
  }
  respond(GetKvInFrame(c, space->get(), *read));
}

Result<Reply> LocateKv(const Call& c) {
  auto* r = c.frame.request_as_LocateKv();
  MNEMO_ASSIGN_OR_RETURN(auto space, c.engine.GetKvSpace(Str(r->space())));
  MNEMO_ASSIGN_OR_RETURN(engine::KvLocation loc,
                         space->Locate(Bytes(r->chunk_hashes()), Span(r->layers())));
  const size_t n = loc.ranges.size();
  FlatBufferBuilder b(1024 + 32 * n + 128 * loc.files.size());
  std::vector<Offset<wire::KvLane>> files;
  for (const auto& f : loc.files) {
    files.push_back(wire::CreateKvLaneDirect(b, f.path.c_str(), f.device, f.inode, 0));
  }
  std::vector<uint32_t> file(n);
  std::vector<uint64_t> offset(n), length(n), checksum(n);
  for (size_t i = 0; i < n; ++i) {
    file[i] = loc.ranges[i].file;
    offset[i] = loc.ranges[i].offset;
    length[i] = loc.ranges[i].length;
    checksum[i] = loc.ranges[i].checksum;
  }
  const auto& cfg = space->config();
  auto body = wire::CreateKvLocations(
      b, b.CreateVector(files), b.CreateVector(loc.layers), b.CreateVector(loc.tokens),
      b.CreateVector(file), b.CreateVector(offset), b.CreateVector(length), b.CreateVector(checksum),
      uint64_t(loc.lease_ms), b.CreateString(cfg.codec), b.CreateString(cfg.dtype), cfg.kv_heads,
      cfg.head_dim);
  return FinishReply(b, c.id(), wire::Response::KvLocations, body.Union());
}

Result<Reply> ReserveKv(const Call& c) {
  auto* r = c.frame.request_as_ReserveKv();
  MNEMO_ASSIGN_OR_RETURN(auto space, c.engine.GetKvSpace(Str(r->space())));
  MNEMO_ASSIGN_OR_RETURN(engine::KvReservation res, space->Reserve(r->tokens()));
  FlatBufferBuilder b(1024 + res.layer_header.size());
  std::vector<Offset<wire::KvLane>> lanes;
  for (const auto& lane : res.lanes) {
    lanes.push_back(wire::CreateKvLaneDirect(b, lane.path.c_str(), lane.device, lane.inode, lane.offset));
  }
  auto lanes_vec = b.CreateVector(lanes);
  auto header = ByteVector(b, res.layer_header);
  auto body = wire::CreateKvReservation(b, res.id, lanes_vec, res.layers, res.layer_bytes, header,
                                        engine::KvSpace::kReservationTtlMs);
  return FinishReply(b, c.id(), wire::Response::KvReservation, body.Union());
}

Result<Reply> MatchPrefix(const Call& c) {
  auto* r = c.frame.request_as_MatchPrefix();
  MNEMO_ASSIGN_OR_RETURN(auto space, c.engine.GetKvSpace(Str(r->space())));
  MNEMO_ASSIGN_OR_RETURN(size_t n, space->MatchPrefix(Bytes(r->chunk_hashes())));
  return AckReply(c.id(), n);
}

constexpr Operation kRows[] = {
    {wire::Request::CreateKvSpace, "create_kv_space", Role::kAdmin, nullptr, Runs::kOrdered, false,
     AnswerNow<CreateKvSpace>},
    {wire::Request::DropKvSpace, "drop_kv_space", Role::kAdmin, nullptr, Runs::kOrdered, false,
     AnswerNow<DropKvSpace>},
    {wire::Request::GetKvStats, "kv_stats", Role::kRead,
     TargetOf<wire::GetKvStats, &wire::GetKvStats::name>, Runs::kOrdered, false,
     AnswerNow<GetKvStats>},
    {wire::Request::PutKv, "put_kv", Role::kWrite, TargetOf<wire::PutKv, &wire::PutKv::space>,
     Runs::kStreamed, true, AnswerNow<PutKv>},
    {wire::Request::GetKv, "get_kv", Role::kRead, TargetOf<wire::GetKv, &wire::GetKv::space>,
     Runs::kOrdered, false, GetKv},
    {wire::Request::ReserveKv, "reserve_kv", Role::kWrite,
     TargetOf<wire::ReserveKv, &wire::ReserveKv::space>, Runs::kOrdered, false,
     AnswerNow<ReserveKv>},
    {wire::Request::LocateKv, "locate_kv", Role::kRead,
     TargetOf<wire::LocateKv, &wire::LocateKv::space>, Runs::kOrdered, false,
     AnswerNow<LocateKv>},
    {wire::Request::MatchPrefix, "match_prefix", Role::kRead,
     TargetOf<wire::MatchPrefix, &wire::MatchPrefix::space>, Runs::kOrdered, false,
     AnswerNow<MatchPrefix>},
};

}  // namespace

std::span<const Operation> KvOperations() { return kRows; }

}  // namespace mnemo::net

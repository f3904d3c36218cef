#include "net/request_handler.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <string_view>

#include "net/protocol.h"

namespace mnemo::net {
namespace {

constexpr size_t kInlineSearchMaxBytes = 16 << 10;

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }

template <typename T>
std::span<const T> Span(const flatbuffers::Vector<T>* v) {
  if (v == nullptr) return {};
  return {v->data(), v->size()};
}

std::string_view Bytes(const flatbuffers::Vector<uint8_t>* v) {
  if (v == nullptr) return {};
  return {reinterpret_cast<const char*>(v->data()), v->size()};
}

flatbuffers::DetachedBuffer Finish(FlatBufferBuilder& b, uint64_t request_id, wire::Response type,
                                   Offset<void> body) {
  b.Finish(wire::CreateResponseFrame(b, kProtocolVersion, request_id, type, body));
  return b.Release();
}

flatbuffers::DetachedBuffer AckReply(uint64_t request_id, uint64_t count) {
  FlatBufferBuilder b(64);
  return Finish(b, request_id, wire::Response::Ack, wire::CreateAck(b, count).Union());
}

flatbuffers::DetachedBuffer KvInfoReply(uint64_t request_id, const engine::KvSpaceStats& s);

Offset<wire::CollectionInfo> Info(FlatBufferBuilder& b, const engine::CollectionStats& s) {
  return wire::CreateCollectionInfoDirect(b, s.name.c_str(), s.dim, s.metric.c_str(),
                                          s.index.c_str(), s.count, s.deleted_slots, s.trained,
                                          s.train_size, s.epoch, s.index_memory_bytes,
                                          s.storage_bytes);
}

flatbuffers::DetachedBuffer KvInfoReply(uint64_t request_id, const engine::KvSpaceStats& s) {
  FlatBufferBuilder b(256);
  const auto& c = s.config;
  auto body = wire::CreateKvSpaceInfoDirect(
      b, c.name.c_str(), c.layers, c.kv_heads, c.head_dim, c.dtype.c_str(), c.chunk_tokens,
      c.codec.c_str(), c.capacity_bytes, c.ttl_seconds, s.segments, s.bytes_stored, s.raw_bytes,
      s.hits, s.misses, s.evictions, s.expirations);
  return Finish(b, request_id, wire::Response::KvSpaceInfo, body.Union());
}

flatbuffers::DetachedBuffer SearchReply(uint64_t request_id, const engine::SearchResult& r) {
  FlatBufferBuilder b(64 + r.ids.size() * 12);
  auto distances = b.CreateVector(r.distances);
  auto ids = b.CreateVector(r.ids);
  auto body = wire::CreateSearchResult(b, uint32_t(r.n), r.k, distances, ids);
  return Finish(b, request_id, wire::Response::SearchResult, body.Union());
}

// A KvSegment reply whose attachment holds layers [first, first + count) of
// `read`; `part`: one frame of a streamed reply.
flatbuffers::DetachedBuffer KvSegmentReply(uint64_t request_id, const engine::KvSpaceConfig& c,
                                           const engine::KvRead& read, size_t first, size_t count,
                                           bool part) {
  FlatBufferBuilder b(256 + 4 * read.layers.size());
  auto dtype = b.CreateString(c.dtype);
  auto layers = b.CreateVector(read.layers);
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
  return Finish(b, request_id, wire::Response::KvSegment, seg.Finish().Union());
}

// A get_kv answered in the attachment: the layers are read (raw: one pread
// per layer) straight into it, each layer's keys then values, in the order
// a streaming reader uses them. Asked to stream, the reply comes in parts of
// whole layers, about kStreamPartBytes each; up to kStreamReadThreads parts
// are read at once (one thread copies page-cached bytes at about the
// network's pace, so one reader would set it), and each is sent through
// `part` as soon as it and the parts before it are in: the first layers are
// on the wire while later ones are read. Returns the last (or only) part,
// or the error that ends the reply (no part after a failed one is sent).
constexpr size_t kStreamPartBytes = size_t(4) << 20;
constexpr int kStreamReadThreads = 4;

Result<Reply> KvAttachmentReply(engine::Engine& e, const wire::GetKv& r, uint64_t id,
                                const std::function<void(Reply)>& part) {
  MNEMO_ASSIGN_OR_RETURN(auto space, e.GetKvSpace(Str(r.space())));
  MNEMO_ASSIGN_OR_RETURN(engine::KvRead read, space->Read(Bytes(r.chunk_hash()), Span(r.layers())));
  const size_t n = read.layers.size(), lb = read.layer_bytes;
  const size_t per_part = r.stream()
                              ? std::max<size_t>(1, kStreamPartBytes / std::max<size_t>(1, 2 * lb))
                              : std::max<size_t>(1, n);
  const size_t parts = std::max<size_t>(1, (n + per_part - 1) / per_part);
  auto first_of = [&](size_t p) { return p * per_part; };
  auto count_of = [&](size_t p) { return std::min(per_part, n - std::min(n, first_of(p))); };
  auto reply_of = [&](size_t p, Buffer att) {
    return Reply(KvSegmentReply(id, space->config(), read, first_of(p), count_of(p), r.stream()),
                 std::move(att));
  };

  std::vector<Buffer> bufs(parts);
  std::vector<Status> read_status(parts);
  std::vector<char> read_done(parts, 0);
  std::mutex mu;
  size_t sent = 0;  // parts sent; guarded by mu, as is read_done
  const int threads = int(std::min<size_t>(parts, kStreamReadThreads));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t p = 0; p < int64_t(parts); ++p) {
    bufs[p] = Buffer::Acquire(2 * lb * count_of(p));
    read_status[p] = space->DecodeInterleavedInto(read, first_of(p), count_of(p), bufs[p].data());
    std::lock_guard<std::mutex> lock(mu);
    read_done[p] = 1;
    // In order, and under the lock: the connection writes parts as queued.
    while (sent + 1 < parts && read_done[sent] && read_status[sent].ok()) {
      Reply next = reply_of(sent, std::move(bufs[sent]));
      next.more = true;
      part(std::move(next));
      ++sent;
    }
  }
  for (const Status& st : read_status) MNEMO_RETURN_IF_ERROR(st);
  return reply_of(parts - 1, std::move(bufs.back()));
}

Result<std::shared_ptr<engine::Collection>> Lookup(engine::Engine& e, const flatbuffers::String* name) {
  if (name == nullptr) return Status::InvalidArgument("no collection name given");
  return e.GetCollection(name->string_view());
}

// Synchronous operations: a reply or a Status. `frame.attachment`: the
// request's attachment. (A get_kv answered in an attachment goes to
// KvAttachmentReply.)
Result<flatbuffers::DetachedBuffer> Execute(engine::Engine& e, const wire::RequestFrame& f,
                                           const Grant* grant, const InFrame& frame) {
  const Buffer& in = frame.attachment;
  const uint64_t id = f.request_id();
  switch (f.request_type()) {
    case wire::Request::CreateCollection: {
      auto* r = f.request_as_CreateCollection();
      engine::CollectionConfig c{Str(r->name()), r->dim(), r->metric() ? r->metric()->str() : "l2",
                                 r->index() ? r->index()->str() : "Flat", r->capacity(),
                                 Str(r->evict()), r->train_size()};
      MNEMO_ASSIGN_OR_RETURN(auto created, e.CreateCollection(c));
      FlatBufferBuilder b(256);
      return Finish(b, id, wire::Response::CollectionInfo, Info(b, created->Stats()).Union());
    }
    case wire::Request::DropCollection: {
      auto* r = f.request_as_DropCollection();
      MNEMO_RETURN_IF_ERROR(e.DropCollection(Str(r->name())));
      return AckReply(id, 1);
    }
    case wire::Request::ListCollections: {
      FlatBufferBuilder b(1024);
      std::vector<Offset<wire::CollectionInfo>> infos;
      for (const auto& s : e.ListCollections()) {
        if (grant == nullptr || grant->Allows(s.name)) infos.push_back(Info(b, s));
      }
      auto body = wire::CreateCollectionListDirect(b, &infos);
      return Finish(b, id, wire::Response::CollectionList, body.Union());
    }
    case wire::Request::GetStats: {
      MNEMO_ASSIGN_OR_RETURN(auto c, Lookup(e, f.request_as_GetStats()->name()));
      FlatBufferBuilder b(256);
      return Finish(b, id, wire::Response::CollectionInfo, Info(b, c->Stats()).Union());
    }
    case wire::Request::Backup: {
      MNEMO_RETURN_IF_ERROR(e.Backup(Str(f.request_as_Backup()->dir())));
      return AckReply(id, 1);
    }
    case wire::Request::Train: {
      MNEMO_ASSIGN_OR_RETURN(auto c, Lookup(e, f.request_as_Train()->name()));
      MNEMO_RETURN_IF_ERROR(c->Train());
      return AckReply(id, 1);
    }
    case wire::Request::Upsert: {
      auto* r = f.request_as_Upsert();
      MNEMO_ASSIGN_OR_RETURN(auto c, Lookup(e, r->collection()));
      std::vector<std::string_view> payloads;
      if (r->payloads()) {
        payloads.reserve(r->payloads()->size());
        for (const auto* p : *r->payloads()) {
          auto* data = p->data();
          payloads.emplace_back(data ? reinterpret_cast<const char*>(data->data()) : "",
                                data ? data->size() : 0);
        }
      }
      engine::EntryBatch batch{Span(r->ids()), Span(r->vectors()), Span(r->groups()), payloads};
      MNEMO_RETURN_IF_ERROR(c->Upsert(batch));
      return AckReply(id, batch.ids.size());
    }
    case wire::Request::Get: {
      auto* r = f.request_as_Get();
      MNEMO_ASSIGN_OR_RETURN(auto c, Lookup(e, r->collection()));
      MNEMO_ASSIGN_OR_RETURN(engine::EntryList list, c->Get(Span(r->ids())));
      FlatBufferBuilder b(256 + list.vectors.size() * 4);
      std::vector<Offset<wire::Payload>> payloads;
      for (const auto& p : list.payloads) {
        payloads.push_back(wire::CreatePayload(
            b, b.CreateVector(reinterpret_cast<const uint8_t*>(p.data()), p.size())));
      }
      auto body = wire::CreateEntriesDirect(b, &list.ids, &list.vectors, &list.groups, &payloads);
      return Finish(b, id, wire::Response::Entries, body.Union());
    }
    case wire::Request::Delete: {
      auto* r = f.request_as_Delete();
      MNEMO_ASSIGN_OR_RETURN(auto c, Lookup(e, r->collection()));
      MNEMO_ASSIGN_OR_RETURN(uint64_t n, c->Delete(Span(r->ids())));
      return AckReply(id, n);
    }
    case wire::Request::CreateKvSpace: {
      auto* r = f.request_as_CreateKvSpace();
      engine::KvSpaceConfig c{Str(r->name()), r->layers(), r->kv_heads(), r->head_dim(),
                              r->dtype() ? r->dtype()->str() : "f16", r->chunk_tokens(),
                              r->codec() ? r->codec()->str() : "raw", r->capacity_bytes(),
                              r->ttl_s()};
      if (c.chunk_tokens == 0) c.chunk_tokens = 256;
      MNEMO_ASSIGN_OR_RETURN(auto space, e.CreateKvSpace(c));
      return KvInfoReply(id, space->Stats());
    }
    case wire::Request::DropKvSpace:
      MNEMO_RETURN_IF_ERROR(e.DropKvSpace(Str(f.request_as_DropKvSpace()->name())));
      return AckReply(id, 1);
    case wire::Request::GetKvStats: {
      MNEMO_ASSIGN_OR_RETURN(auto space, e.GetKvSpace(Str(f.request_as_GetKvStats()->name())));
      return KvInfoReply(id, space->Stats());
    }
    case wire::Request::PutKv: {
      auto* r = f.request_as_PutKv();
      MNEMO_ASSIGN_OR_RETURN(auto space, e.GetKvSpace(Str(r->space())));
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
        // A streamed attachment: each layer is appended as soon as it is in.
        std::function<bool(size_t)> arrived;
        if (frame.progress) arrived = [p = frame.progress.get()](size_t n) { return p->WaitFor(n); };
        MNEMO_RETURN_IF_ERROR(
            space->PutInterleaved(Bytes(r->chunk_hash()), in.span(), r->tokens(), arrived));
      }
      return AckReply(id, 1);
    }
    case wire::Request::GetKv: {
      auto* r = f.request_as_GetKv();
      MNEMO_ASSIGN_OR_RETURN(auto space, e.GetKvSpace(Str(r->space())));
      MNEMO_ASSIGN_OR_RETURN(engine::KvRead read, space->Read(Bytes(r->chunk_hash()), Span(r->layers())));
      // Decoded straight into the reply: room for both vectors up front, so
      // that the builder does not move them while they are filled.
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
      return Finish(b, id, wire::Response::KvSegment, body.Union());
    }
    case wire::Request::ReserveKv: {
      auto* r = f.request_as_ReserveKv();
      MNEMO_ASSIGN_OR_RETURN(auto space, e.GetKvSpace(Str(r->space())));
      MNEMO_ASSIGN_OR_RETURN(engine::KvReservation res, space->Reserve(r->tokens()));
      FlatBufferBuilder b(1024 + res.layer_header.size());
      std::vector<Offset<wire::KvLane>> lanes;
      for (const auto& lane : res.lanes) {
        lanes.push_back(wire::CreateKvLaneDirect(b, lane.path.c_str(), lane.device, lane.inode, lane.offset));
      }
      auto lanes_vec = b.CreateVector(lanes);
      auto header = b.CreateVector(reinterpret_cast<const uint8_t*>(res.layer_header.data()),
                                   res.layer_header.size());
      auto body = wire::CreateKvReservation(b, res.id, lanes_vec, res.layers, res.layer_bytes, header,
                                            engine::KvSpace::kReservationTtlMs);
      return Finish(b, id, wire::Response::KvReservation, body.Union());
    }
    case wire::Request::MatchPrefix: {
      auto* r = f.request_as_MatchPrefix();
      MNEMO_ASSIGN_OR_RETURN(auto space, e.GetKvSpace(Str(r->space())));
      MNEMO_ASSIGN_OR_RETURN(size_t n, space->MatchPrefix(Bytes(r->chunk_hashes())));
      return AckReply(id, n);
    }
    default:
      return Status::InvalidArgument("unknown operation " +
                                     std::to_string(int(f.request_type())));
  }
}

}  // namespace

namespace {
// The operation a frame asks for; NONE when it does not verify.
wire::Request TypeOf(const std::vector<uint8_t>& body) {
  flatbuffers::Verifier v(body.data(), body.size(), kVerifierMaxDepth, kVerifierMaxTables);
  if (!v.VerifyBuffer<wire::RequestFrame>(nullptr)) return wire::Request::NONE;
  return wire::GetRequestFrame(body.data())->request_type();
}
}  // namespace

bool RequestHandler::IsSearch(const InFrame& in) {
  if (!in.attachment.empty()) return false;
  // Large frames (many queries, or not searches at all) are not worth it.
  if (in.body.size() > kInlineSearchMaxBytes) return false;
  return TypeOf(in.body) == wire::Request::Search;
}

bool RequestHandler::CanStream(const InFrame& in) { return TypeOf(in.body) == wire::Request::PutKv; }

void RequestHandler::Handle(Frame frame, Done done) {
  const auto start = std::chrono::steady_clock::now();
  auto finish = [this, start, done](wire::Request type, Reply reply, bool error) {
    metrics_->RecordRequest(
        type, error, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    done(std::move(reply));
  };
  auto verified = VerifyRequest(
      std::string_view(reinterpret_cast<const char*>(frame->body.data()), frame->body.size()));
  if (!verified.ok()) {
    finish(wire::Request::NONE, ErrorResponse(0, verified.status()), true);
    return;
  }
  const wire::RequestFrame& f = **verified;
  const uint64_t id = f.request_id();
  const wire::Request type = f.request_type();
  // The verifier accepts a union whose value is absent; every operation
  // below needs its body. (Found by tests/fuzz/frame_fuzzer.)
  if (f.request() == nullptr) {
    finish(type, ErrorResponse(id, Status::InvalidArgument(
                                       std::string("request '") + RequestName(type) +
                                       "' has no body")), true);
    return;
  }

  if (!frame->attachment.empty() && type != wire::Request::PutKv) {
    finish(type, ErrorResponse(id, Status::InvalidArgument(
                                       std::string("request '") + RequestName(type) +
                                       "' takes no attachment")), true);
    return;
  }

  const Grant* grant = nullptr;
  if (keys_ != nullptr) {
    auto checked = keys_->Check(f);
    if (!checked.ok()) {
      finish(type, ErrorResponse(id, checked.status()), true);
      return;
    }
    grant = *checked;
  }

  if (type == wire::Request::Search) {
    auto* r = f.request_as_Search();
    auto c = Lookup(*engine_, r->collection());
    engine::SearchRequest req;
    req.queries = Span(r->queries());
    req.k = r->k();
    req.nprobe = r->nprobe();
    req.ef = r->ef();
    if (r->has_group()) req.group = r->group();
    Status st = c.ok() ? (*c)->ValidateSearch(req) : c.status();
    if (!st.ok()) {
      finish(type, ErrorResponse(id, st), true);
      return;
    }
    // `frame` owns the query floats until the batch has run.
    batcher_->Submit(*c, req, [frame, id, finish](Result<engine::SearchResult> result) {
      if (!result.ok()) {
        finish(wire::Request::Search, ErrorResponse(id, result.status()), true);
      } else {
        finish(wire::Request::Search, SearchReply(id, *result), false);
      }
    });
    return;
  }
  Result<Reply> reply = [&]() -> Result<Reply> {
    if (type == wire::Request::GetKv && f.request_as_GetKv()->attachment()) {
      return KvAttachmentReply(*engine_, *f.request_as_GetKv(), id, done);
    }
    MNEMO_ASSIGN_OR_RETURN(auto body, Execute(*engine_, f, grant, *frame));
    return Reply(std::move(body));
  }();
  if (!reply.ok()) {
    finish(type, ErrorResponse(id, reply.status()), true);
  } else {
    finish(type, std::move(reply).value(), false);
  }
}

}  // namespace mnemo::net

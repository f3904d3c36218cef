#include "engine/kv_space.h"

#include <algorithm>
#include <cstring>

namespace mnemo::engine {

using storage::Cf;

namespace {

constexpr uint32_t kMaxLayers = 1024, kMaxHeads = 1024, kMaxHeadDim = 4096;
constexpr uint32_t kMaxChunkTokens = 1 << 16;
constexpr size_t kHeadBytes = 28;  // u64 seq, i64 written_ms, u32 tokens, u64 bytes
constexpr uint64_t kSweepEveryPuts = 256;

void PutString(std::string* out, std::string_view s) {
  storage::PutFixed32(out, uint32_t(s.size()));
  out->append(s);
}

bool GetString(std::string_view* in, std::string* s) {
  if (in->size() < 4) return false;
  const uint32_t n = storage::DecodeFixed32(in->data());
  if (in->size() < 4 + size_t(n)) return false;
  s->assign(in->data() + 4, n);
  in->remove_prefix(4 + n);
  return true;
}

std::string EncodeHead(uint64_t seq, int64_t written_ms, uint32_t tokens, uint64_t bytes) {
  std::string h;
  storage::PutFixed64(&h, seq);
  storage::PutFixed64(&h, uint64_t(written_ms));
  storage::PutFixed32(&h, tokens);
  storage::PutFixed64(&h, bytes);
  return h;
}

}  // namespace

std::string KvSpaceRecord::Encode() const {
  std::string out;
  storage::PutFixed32(&out, id);
  for (uint32_t v : {config.layers, config.kv_heads, config.head_dim, config.chunk_tokens}) {
    storage::PutFixed32(&out, v);
  }
  storage::PutFixed64(&out, config.capacity_bytes);
  storage::PutFixed64(&out, config.ttl_s);
  PutString(&out, config.name);
  PutString(&out, config.dtype);
  PutString(&out, config.codec);
  return out;
}

Result<KvSpaceRecord> KvSpaceRecord::Decode(std::string_view in) {
  KvSpaceRecord r;
  if (in.size() < 36) return Status::Corruption("KV space record is too short");
  r.id = storage::DecodeFixed32(in.data());
  r.config.layers = storage::DecodeFixed32(in.data() + 4);
  r.config.kv_heads = storage::DecodeFixed32(in.data() + 8);
  r.config.head_dim = storage::DecodeFixed32(in.data() + 12);
  r.config.chunk_tokens = storage::DecodeFixed32(in.data() + 16);
  r.config.capacity_bytes = storage::DecodeFixed64(in.data() + 20);
  r.config.ttl_s = storage::DecodeFixed64(in.data() + 28);
  in.remove_prefix(36);
  if (!GetString(&in, &r.config.name) || !GetString(&in, &r.config.dtype) ||
      !GetString(&in, &r.config.codec)) {
    return Status::Corruption("KV space record is truncated");
  }
  return r;
}

Status KvSpace::Validate(const KvSpaceConfig& c) {
  auto range = [](const char* what, uint32_t v, uint32_t max) {
    return v >= 1 && v <= max ? Status::OK()
                              : Status::InvalidArgument(std::string(what) + " must be in 1.." +
                                                        std::to_string(max) + ", got " +
                                                        std::to_string(v));
  };
  MNEMO_RETURN_IF_ERROR(range("layers", c.layers, kMaxLayers));
  MNEMO_RETURN_IF_ERROR(range("kv_heads", c.kv_heads, kMaxHeads));
  MNEMO_RETURN_IF_ERROR(range("head_dim", c.head_dim, kMaxHeadDim));
  MNEMO_RETURN_IF_ERROR(range("chunk_tokens", c.chunk_tokens, kMaxChunkTokens));
  MNEMO_RETURN_IF_ERROR(kvcache::ParseDtype(c.dtype).status());
  MNEMO_RETURN_IF_ERROR(kvcache::CodecSpec::Parse(c.codec).status());
  return Status::OK();
}

KvSpace::Hash KvSpace::HashAt(const char* bytes) {
  Hash h;
  std::memcpy(h.data(), bytes, kChunkHashBytes);
  return h;
}

size_t KvSpace::HashOf::operator()(const Hash& h) const {
  size_t v;  // the client's hash is already uniform
  std::memcpy(&v, h.data(), sizeof(v));
  return v;
}

KvSpace::KvSpace(storage::Store* store, storage::ValueLog* values, KvSpaceRecord record,
                 NowMs now_ms)
    : store_(store),
      value_log_(values),
      record_(std::move(record)),
      dtype_(kvcache::ParseDtype(record_.config.dtype).value()),
      codec_(kvcache::CodecSpec::Parse(record_.config.codec).value()),
      now_ms_(std::move(now_ms)) {}

Status KvSpace::Load() {
  struct Found {
    Hash hash;
    Segment seg;
  };
  std::vector<Found> found;
  const std::string begin = storage::KvHeadPrefix(record_.id);
  Status bad = Status::OK();
  MNEMO_RETURN_IF_ERROR(store_->Scan(Cf::kKv, begin, storage::PrefixEnd(begin), [&](std::string_view k, std::string_view v) {
    if (k.size() != begin.size() + kChunkHashBytes || v.size() != kHeadBytes) {
      bad = Status::Corruption("bad KV segment head in space '" + record_.config.name + "'");
      return false;
    }
    Found f;
    f.hash = HashAt(k.data() + begin.size());
    f.seg.seq = storage::DecodeFixed64(v.data());
    f.seg.written_ms = int64_t(storage::DecodeFixed64(v.data() + 8));
    f.seg.tokens = storage::DecodeFixed32(v.data() + 16);
    f.seg.bytes = storage::DecodeFixed64(v.data() + 20);
    found.push_back(f);
    return true;
  }));
  MNEMO_RETURN_IF_ERROR(bad);
  // Then every layer's reference; a put writes a head and all its layers in
  // one batch, so a segment has all or none.
  std::unordered_map<Hash, size_t, HashOf> index;
  for (size_t i = 0; i < found.size(); ++i) {
    index.emplace(found[i].hash, i);
    found[i].seg.layers.resize(record_.config.layers);
  }
  const std::string lbegin = storage::KvLayerPrefix(record_.id);
  MNEMO_RETURN_IF_ERROR(store_->Scan(Cf::kKv, lbegin, storage::PrefixEnd(lbegin), [&](std::string_view k, std::string_view v) {
    auto ref = storage::ValueRef::Decode(v);
    if (k.size() != lbegin.size() + kChunkHashBytes + 2 || !ref.ok()) {
      bad = Status::Corruption("bad KV layer reference in space '" + record_.config.name + "'");
      return false;
    }
    const uint16_t layer = storage::KvLayerFromKey(k);
    auto it = index.find(HashAt(k.data() + lbegin.size()));
    if (it == index.end() || layer >= record_.config.layers) {
      bad = Status::Corruption("KV layer without its segment in space '" + record_.config.name + "'");
      return false;
    }
    found[it->second].seg.layers[layer] = *ref;
    return true;
  }));
  MNEMO_RETURN_IF_ERROR(bad);
  for (const auto& f : found) {
    for (const auto& ref : f.seg.layers) {
      if (ref.file == 0) {
        return Status::Corruption("a KV segment misses a layer in space '" + record_.config.name + "'");
      }
    }
  }
  // Most recent put first: the LRU order a restart can know.
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.seg.seq > b.seg.seq; });
  MutexLock lock(&mu_);
  for (auto& f : found) {
    for (const auto& ref : f.seg.layers) value_log_->AddLive(ref);
    lru_.push_back(f.hash);
    f.seg.lru = std::prev(lru_.end());
    bytes_ += f.seg.bytes;
    tokens_ += f.seg.tokens;
    next_seq_ = std::max(next_seq_, f.seg.seq + 1);
    segments_.emplace(f.hash, f.seg);
  }
  return Status::OK();
}

Status KvSpace::CheckFits(uint64_t segment_bytes) const {
  const uint64_t capacity = record_.config.capacity_bytes;
  if (capacity == 0 || segment_bytes <= capacity) return Status::OK();
  return Status::ResourceExhausted("a segment of " + std::to_string(segment_bytes) +
                                   " bytes does not fit the space's capacity of " +
                                   std::to_string(capacity));
}

Status KvSpace::CheckHash(std::string_view hash) const {
  if (hash.size() != kChunkHashBytes) {
    return Status::InvalidArgument("chunk hash must be 32 bytes, got " + std::to_string(hash.size()));
  }
  return Status::OK();
}

bool KvSpace::ExpiredLocked(const Segment& s, int64_t now) const {
  const uint64_t ttl = record_.config.ttl_s;
  return ttl != 0 && now - s.written_ms >= int64_t(ttl) * 1000;
}

void KvSpace::DeleteSegment(const Hash& h, storage::WriteBatch* batch) const {
  const std::string_view hv(reinterpret_cast<const char*>(h.data()), h.size());
  batch->Delete(Cf::kKv, storage::KvHeadKey(record_.id, hv));
  for (uint32_t l = 0; l < record_.config.layers; ++l) {
    batch->Delete(Cf::kKv, storage::KvLayerKey(record_.id, hv, uint16_t(l)));
  }
}

void KvSpace::ForgetLocked(const Hash& h, std::vector<storage::ValueRef>* released) {
  auto it = segments_.find(h);
  if (it == segments_.end()) return;
  released->insert(released->end(), it->second.layers.begin(), it->second.layers.end());
  bytes_ -= it->second.bytes;
  tokens_ -= it->second.tokens;
  lru_.erase(it->second.lru);
  segments_.erase(it);
}

void KvSpace::Release(const std::vector<storage::ValueRef>& refs) {
  for (const auto& ref : refs) value_log_->Release(ref);
}

Result<uint32_t> KvSpace::TokensOf(size_t bytes, uint32_t tokens) const {
  const auto& c = record_.config;
  const size_t per_token = size_t(c.layers) * c.kv_heads * c.head_dim * kvcache::DtypeBytes(dtype_);
  if (bytes == 0 || bytes % per_token != 0 || bytes / per_token > c.chunk_tokens ||
      (tokens != 0 && bytes != tokens * per_token)) {
    return Status::InvalidArgument(
        "keys of " + std::to_string(bytes) + " bytes are not [layers=" +
        std::to_string(c.layers) + ", kv_heads=" + std::to_string(c.kv_heads) +
        ", tokens<=" + std::to_string(c.chunk_tokens) + ", head_dim=" + std::to_string(c.head_dim) +
        "] of " + c.dtype + " (" + std::to_string(per_token) + " bytes per token)" +
        (tokens != 0 ? " with tokens=" + std::to_string(tokens) : std::string()));
  }
  return uint32_t(bytes / per_token);
}

Status KvSpace::Put(std::string_view hash, std::span<const uint8_t> keys,
                    std::span<const uint8_t> values, uint32_t tokens) {
  MNEMO_RETURN_IF_ERROR(CheckHash(hash));
  if (keys.size() != values.size()) {
    return Status::InvalidArgument("keys have " + std::to_string(keys.size()) +
                                   " bytes and values " + std::to_string(values.size()));
  }
  MNEMO_ASSIGN_OR_RETURN(const uint32_t n, TokensOf(keys.size(), tokens));
  const size_t lb = keys.size() / record_.config.layers;
  return PutLayers(hash, n, lb, [&](uint32_t l) {
    return std::pair{keys.subspan(l * lb, lb), values.subspan(l * lb, lb)};
  });
}

Status KvSpace::PutInterleaved(std::string_view hash, std::span<const uint8_t> layers,
                               uint32_t tokens, const std::function<bool(size_t)>& arrived) {
  MNEMO_RETURN_IF_ERROR(CheckHash(hash));
  if (tokens == 0) return Status::InvalidArgument("KV layers in an attachment need their token count");
  if (layers.size() % 2 != 0) {
    return Status::InvalidArgument("KV layers of " + std::to_string(layers.size()) +
                                   " bytes are not keys and values of equal size");
  }
  MNEMO_ASSIGN_OR_RETURN(const uint32_t n, TokensOf(layers.size() / 2, tokens));
  const size_t lb = layers.size() / 2 / record_.config.layers;
  return PutLayers(hash, n, lb, [&](uint32_t l) {
    using Parts = std::pair<std::span<const uint8_t>, std::span<const uint8_t>>;
    if (arrived && !arrived(2 * (l + 1) * lb)) return Parts{};  // PutLayers gives up
    return Parts{layers.subspan(2 * l * lb, lb), layers.subspan((2 * l + 1) * lb, lb)};
  });
}

namespace {
// A layer the put's source could not deliver (a streamed attachment whose
// connection ended).
Status LayerMissing(uint32_t l) {
  return Status::Unavailable("KV layer " + std::to_string(l) +
                         " did not arrive (the connection ended); nothing was stored");
}
}  // namespace

Status KvSpace::PutLayers(std::string_view hash, uint32_t tokens, size_t layer_bytes,
                          const LayerParts& layer) {
  const auto& c = record_.config;
  const kvcache::LayerShape shape{c.kv_heads, tokens, c.head_dim};
  // Raw layers go to the value log straight from the request; the others
  // are encoded first.
  const bool raw = codec_.id == kvcache::CodecId::kRaw;
  std::vector<std::string> encoded(c.layers);
  uint64_t total = 0;
  for (uint32_t l = 0; l < c.layers; ++l) {
    if (raw) {
      encoded[l] = kvcache::LayerHeader(codec_, dtype_, shape.tokens, uint32_t(layer_bytes));
      total += encoded[l].size() + 2 * layer_bytes;
    } else {
      auto [k, v] = layer(l);
      if (k.size() != layer_bytes || v.size() != layer_bytes) return LayerMissing(l);
      encoded[l] = kvcache::EncodeLayer(codec_, dtype_, shape, k, v);
      total += encoded[l].size();
    }
  }
  MNEMO_RETURN_IF_ERROR(CheckFits(total));

  // Puts take turns; the state lock is not held across the writes, so that
  // gets and prefix matches (a serving engine's critical path) never wait
  // for megabytes to reach the disk.
  MutexLock put_lock(&put_mu_);
  {
    MutexLock lock(&mu_);
    if (dropped_) return Status::NotFound("KV space '" + c.name + "' was dropped");
  }
  std::vector<storage::ValueRef> written;
  for (uint32_t l = 0; l < c.layers; ++l) {
    auto [k, v] = raw ? layer(l) : LayerParts::result_type{};
    if (raw && (k.size() != layer_bytes || v.size() != layer_bytes)) {
      Release(written);
      return LayerMissing(l);
    }
    const auto* head = reinterpret_cast<const uint8_t*>(encoded[l].data());
    const std::span<const uint8_t> parts[3] = {{head, encoded[l].size()}, k, v};
    auto ref = value_log_->Append(std::span(parts, raw ? 3 : 1));
    if (!ref.ok()) {
      Release(written);
      return ref.status();
    }
    written.push_back(*ref);
    encoded[l] = std::string();  // give the memory back early
  }

  return Commit(hash, shape.tokens, total, std::move(written));
}

Status KvSpace::Commit(std::string_view hash, uint32_t tokens, uint64_t total,
                      std::vector<storage::ValueRef> written) {
  const auto& c = record_.config;
  const Hash h = HashAt(hash.data());
  MutexLock lock(&mu_);
  if (dropped_) {
    lock.unlock();
    Release(written);
    return Status::NotFound("KV space '" + c.name + "' was dropped");
  }
  const int64_t now = now_ms_();
  // Victims first, applied to memory only once the write succeeded.
  std::vector<Hash> expired, evicted;
  uint64_t freed = 0;
  auto old = segments_.find(h);
  if (old != segments_.end()) freed += old->second.bytes;
  const bool pressed = c.capacity_bytes != 0 && bytes_ - freed + total > c.capacity_bytes;
  if (c.ttl_s != 0 && (++puts_ % kSweepEveryPuts == 0 || pressed)) {
    for (auto& [k, s] : segments_) {
      if (k != h && ExpiredLocked(s, now)) expired.push_back(k), freed += s.bytes;
    }
  }
  if (c.capacity_bytes != 0) {
    for (auto it = lru_.rbegin(); it != lru_.rend() && bytes_ - freed + total > c.capacity_bytes; ++it) {
      if (*it == h || std::find(expired.begin(), expired.end(), *it) != expired.end()) continue;
      evicted.push_back(*it);
      freed += segments_.at(*it).bytes;
    }
  }
  storage::WriteBatch batch(*store_);
  for (const Hash& k : expired) DeleteSegment(k, &batch);
  for (const Hash& k : evicted) DeleteSegment(k, &batch);
  const uint64_t seq = next_seq_;
  for (uint32_t l = 0; l < c.layers; ++l) {
    batch.Put(Cf::kKv, storage::KvLayerKey(record_.id, hash, uint16_t(l)), written[l].Encode());
  }
  batch.Put(Cf::kKv, storage::KvHeadKey(record_.id, hash), EncodeHead(seq, now, tokens, total));
  lock.unlock();
  if (Status st = store_->Write(&batch); !st.ok()) {
    Release(written);
    return st;
  }
  lock.lock();

  std::vector<storage::ValueRef> released;
  for (const Hash& k : expired) ForgetLocked(k, &released);
  for (const Hash& k : evicted) ForgetLocked(k, &released);
  expirations_ += expired.size();
  evictions_ += evicted.size();
  ForgetLocked(h, &released);
  next_seq_ = seq + 1;
  lru_.push_front(h);
  segments_.emplace(h, Segment{lru_.begin(), total, tokens, now, seq, std::move(written)});
  bytes_ += total;
  tokens_ += tokens;
  lock.unlock();
  Release(released);
  return Status::OK();
}

Result<KvReservation> KvSpace::Reserve(uint32_t tokens) {
  const auto& c = record_.config;
  if (codec_.id != kvcache::CodecId::kRaw) {
    return Status::InvalidArgument("KV space '" + c.name + "' encodes with " + c.codec +
                                   ": only raw spaces take same-host puts");
  }
  if (tokens == 0 || tokens > c.chunk_tokens) {
    return Status::InvalidArgument("tokens must be in 1.." + std::to_string(c.chunk_tokens) +
                                   ", got " + std::to_string(tokens));
  }
  KvReservation r;
  r.layers = c.layers;
  r.tokens = tokens;
  r.layer_bytes = size_t(c.kv_heads) * tokens * c.head_dim * kvcache::DtypeBytes(dtype_);
  r.layer_header = kvcache::LayerHeader(codec_, dtype_, tokens, uint32_t(r.layer_bytes));
  MNEMO_RETURN_IF_ERROR(CheckFits(uint64_t(c.layers) * r.stride()));
  MutexLock lock(&mu_);
  if (dropped_) return Status::NotFound("KV space '" + c.name + "' was dropped");
  const int64_t now = now_ms_();
  AbandonLapsedLocked(now);
  if (reservations_.size() >= kMaxReservations) {
    return Status::ResourceExhausted("KV space '" + c.name + "' has " +
                                     std::to_string(kMaxReservations) + " same-host puts in flight");
  }
  const uint32_t lanes = uint32_t(std::min<size_t>(c.layers, value_log_->reserve_lanes()));
  for (uint32_t j = 0; j < lanes; ++j) {
    const uint32_t layers_in_lane = (c.layers - j + lanes - 1) / lanes;
    auto lane = value_log_->Reserve(layers_in_lane * r.stride(), j);
    if (!lane.ok()) {
      Abandon(r);
      return lane.status();
    }
    r.lanes.push_back(*lane);
  }
  do r.id = reservation_ids_(); while (r.id == 0 || reservations_.contains(r.id));
  r.expires_ms = now + kReservationTtlMs;
  reservations_.emplace(r.id, r);
  return r;
}

void KvSpace::Abandon(const KvReservation& r) {
  for (const auto& lane : r.lanes) value_log_->Abandon(lane);
}

void KvSpace::AbandonLapsedLocked(int64_t now) {
  std::erase_if(reservations_, [&](const auto& entry) {
    if (entry.second.expires_ms > now) return false;
    Abandon(entry.second);
    return true;
  });
}

Status KvSpace::PutReserved(std::string_view hash, uint64_t reservation) {
  MNEMO_RETURN_IF_ERROR(CheckHash(hash));
  KvReservation r;
  {
    MutexLock lock(&mu_);
    AbandonLapsedLocked(now_ms_());
    auto it = reservations_.find(reservation);
    if (it == reservations_.end()) {
      return Status::NotFound("KV space '" + record_.config.name + "' has no reservation " +
                              std::to_string(reservation) + " (it lapsed after " +
                              std::to_string(kReservationTtlMs / 1000) + " s, or was used)");
    }
    r = std::move(it->second);
    reservations_.erase(it);
  }
  // Each layer is read back and checksummed, several at once from a
  // megabyte of them on (a chunk of 256 tokens has layers of 0.5-1 MiB).
  constexpr size_t kParallelBytes = size_t(1) << 20;
  constexpr uint32_t kMaxSealThreads = 8;
  const size_t lanes = r.lanes.size();
  std::vector<storage::ValueRef> written(r.layers);
  std::vector<Status> sealed(r.layers);
  const int threads = r.layers * r.stride() >= kParallelBytes ? int(std::min(r.layers, kMaxSealThreads)) : 1;
#pragma omp parallel for num_threads(threads) schedule(dynamic)
  for (int64_t l = 0; l < int64_t(r.layers); ++l) {
    auto ref = value_log_->Seal(r.lanes[l % lanes], (l / lanes) * r.stride(), r.stride());
    sealed[l] = ref.status();
    if (ref.ok()) written[l] = *ref;
  }
  // With sync_writes each lane's file is synced, the files at once.
  std::vector<Status> synced(lanes);
  if (value_log_->syncs_writes()) {
#pragma omp parallel for num_threads(int(std::min<size_t>(lanes, kMaxSealThreads)))
    for (int64_t j = 0; j < int64_t(lanes); ++j) synced[j] = value_log_->SyncReserved(r.lanes[j]);
  }
  Status st = Status::OK();
  for (const auto* statuses : {&sealed, &synced}) {
    for (const Status& s : *statuses) {
      if (st.ok() && !s.ok()) st = s;
    }
  }
  if (!st.ok()) {
    Abandon(r);
    return st;
  }
  MutexLock put_lock(&put_mu_);
  return Commit(hash, r.tokens, r.layers * r.stride(), std::move(written));
}

Result<KvSegment> KvSpace::Get(std::string_view hash, std::span<const uint32_t> layers) {
  MNEMO_ASSIGN_OR_RETURN(KvRead read, Read(hash, layers));
  KvSegment out;
  out.tokens = read.tokens;
  out.layers = read.layers;
  out.keys.resize(read.layer_bytes * read.layers.size());
  out.values.resize(out.keys.size());
  MNEMO_RETURN_IF_ERROR(DecodeInto(read, out.keys.data(), out.values.data()));
  return out;
}

Status KvSpace::DecodeInto(const KvRead& read, uint8_t* keys, uint8_t* values) const {
  for (size_t i = 0; i < read.stored.size(); ++i) {
    MNEMO_RETURN_IF_ERROR(
        DecodeLayerInto(read, i, keys + i * read.layer_bytes, values + i * read.layer_bytes));
  }
  return Status::OK();
}

namespace {

// A value the log no longer has was released under the reader: its segment
// was evicted (or replaced) meanwhile.
Status EvictedWhileRead(Status st) {
  return st.code() == StatusCode::kNotFound
             ? Status::NotFound("the KV segment was evicted while it was read")
             : st;
}

}  // namespace

Status KvSpace::ForLayers(const KvRead& read, size_t first, size_t count, size_t bytes,
                          const std::function<Status(size_t i)>& layer) const {
  // One thread copies page-cached bytes at a few GB/s, under a network's
  // pace: a megabyte or more is read by several.
  constexpr size_t kParallelBytes = size_t(1) << 20;
  constexpr size_t kMaxReadThreads = 4;
  if (first > read.stored.size() || count > read.stored.size() - first) {
    return Status::InvalidArgument("layers " + std::to_string(first) + "+" + std::to_string(count) +
                                   " of a read of " + std::to_string(read.stored.size()));
  }
  const int threads = bytes >= kParallelBytes ? int(std::min(count, kMaxReadThreads)) : 1;
  std::vector<Status> done(count);
#pragma omp parallel for num_threads(threads) schedule(dynamic)
  for (int64_t i = 0; i < int64_t(count); ++i) done[i] = layer(size_t(i));
  for (Status& st : done) MNEMO_RETURN_IF_ERROR(st);
  return Status::OK();
}

Status KvSpace::DecodeInterleavedInto(const KvRead& read, size_t first, size_t count,
                                      uint8_t* out) const {
  const size_t lb = read.layer_bytes;
  return ForLayers(read, first, count, lb, [&](size_t i) {
    return DecodeLayerInto(read, first + i, out + 2 * i * lb, out + (2 * i + 1) * lb);
  });
}

Status KvSpace::ReadStoredInto(const KvRead& read, size_t first, size_t count, uint8_t* out) const {
  std::vector<size_t> at(1, 0);  // where each layer starts in `out`
  for (size_t i = first; i < std::min(first + count, read.stored.size()); ++i) {
    at.push_back(at.back() + read.stored[i].length);
  }
  return ForLayers(read, first, count, at.back(), [&](size_t i) {
    return EvictedWhileRead(value_log_->Read(read.stored[first + i], out + at[i]));
  });
}

Status KvSpace::DecodeLayerInto(const KvRead& read, size_t i, uint8_t* keys, uint8_t* values) const {
  const auto& c = record_.config;
  const storage::ValueRef& ref = read.stored[i];
  if (codec_.id == kvcache::CodecId::kRaw) {
    // Straight into the caller's memory: the layer is header, keys, values.
    const std::string want = kvcache::LayerHeader(codec_, dtype_, read.tokens, uint32_t(read.layer_bytes));
    std::string head(want.size(), '\0');
    const std::span<uint8_t> into[3] = {{reinterpret_cast<uint8_t*>(head.data()), head.size()},
                                        {keys, read.layer_bytes},
                                        {values, read.layer_bytes}};
    if (ref.length != head.size() + 2 * read.layer_bytes) {
      return Status::Corruption("stored raw KV layer has " + std::to_string(ref.length) + " bytes");
    }
    MNEMO_RETURN_IF_ERROR(EvictedWhileRead(value_log_->Read(ref, std::span(into))));
    if (head != want) return Status::Corruption("stored raw KV layer has a bad header");
    return Status::OK();
  }
  std::string stored(ref.length, '\0');
  MNEMO_RETURN_IF_ERROR(EvictedWhileRead(value_log_->Read(ref, reinterpret_cast<uint8_t*>(stored.data()))));
  const kvcache::LayerShape shape{c.kv_heads, read.tokens, c.head_dim};
  return kvcache::DecodeLayerInto(stored, shape, keys, values);
}

Result<KvLocation> KvSpace::Locate(std::string_view hashes, std::span<const uint32_t> layers) {
  if (hashes.empty() || hashes.size() % kChunkHashBytes != 0) {
    return Status::InvalidArgument("chunk hashes must be 32 bytes each (at least one), got " +
                                   std::to_string(hashes.size()) + " bytes");
  }
  KvLocation out;
  out.lease_ms = kReaderLeaseMs;
  std::vector<uint32_t> numbers;  // value-log file of out.files[i]
  for (size_t at = 0; at < hashes.size(); at += kChunkHashBytes) {
    MNEMO_ASSIGN_OR_RETURN(KvRead read, Read(hashes.substr(at, kChunkHashBytes), layers));
    if (out.layers.empty()) out.layers = read.layers;
    out.tokens.push_back(read.tokens);
    for (const storage::ValueRef& ref : read.stored) {
      auto it = std::find(numbers.begin(), numbers.end(), ref.file);
      if (it == numbers.end()) it = numbers.insert(numbers.end(), ref.file);
      out.ranges.push_back({uint32_t(it - numbers.begin()), ref.offset, ref.length, ref.checksum});
    }
  }
  auto files = value_log_->LeaseToReaders(numbers, kReaderLeaseMs);
  if (files.status().code() == StatusCode::kNotFound) {
    return Status::NotFound("a KV segment was evicted while it was located");
  }
  MNEMO_ASSIGN_OR_RETURN(out.files, std::move(files));
  return out;
}

Result<KvRead> KvSpace::Read(std::string_view hash, std::span<const uint32_t> layers) {
  MNEMO_RETURN_IF_ERROR(CheckHash(hash));
  const auto& c = record_.config;
  KvRead out;
  if (layers.empty()) {
    for (uint32_t l = 0; l < c.layers; ++l) out.layers.push_back(l);
  } else {
    // Each layer once: a reply is then at most the segment, whatever the
    // request (a list of one layer repeated would make a small request
    // into a reply of any size).
    std::vector<bool> seen(c.layers);
    for (uint32_t l : layers) {
      if (l >= c.layers) {
        return Status::InvalidArgument("layer " + std::to_string(l) + " is outside 0.." +
                                       std::to_string(c.layers - 1));
      }
      if (seen[l]) {
        return Status::InvalidArgument("layer " + std::to_string(l) + " is asked for twice");
      }
      seen[l] = true;
      out.layers.push_back(l);
    }
  }
  const Hash h = HashAt(hash.data());
  {
    MutexLock lock(&mu_);
    if (dropped_) return Status::NotFound("KV space '" + c.name + "' was dropped");
    auto it = segments_.find(h);
    if (it != segments_.end() && ExpiredLocked(it->second, now_ms_())) {
      storage::WriteBatch batch(*store_);
      DeleteSegment(h, &batch);
      expirations_++;
      // A failed delete leaves a segment no one sees; its values stay live
      // until a restart finds it expired again.
      std::vector<storage::ValueRef> released;
      const bool deleted = store_->Write(&batch).ok();
      ForgetLocked(h, &released);
      if (deleted) Release(released);
      it = segments_.end();
    }
    if (it == segments_.end()) {
      misses_++;
      return Status::NotFound("no KV segment with this hash in '" + c.name + "'");
    }
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    hits_++;
    out.tokens = it->second.tokens;
    for (uint32_t l : out.layers) out.stored.push_back(it->second.layers[l]);
  }
  out.layer_bytes = size_t(c.kv_heads) * out.tokens * c.head_dim * kvcache::DtypeBytes(dtype_);
  return out;
}

Result<size_t> KvSpace::MatchPrefix(std::string_view hashes) {
  if (hashes.size() % kChunkHashBytes != 0) {
    return Status::InvalidArgument("chunk hashes must be 32 bytes each, got " +
                                   std::to_string(hashes.size()) + " bytes");
  }
  MutexLock lock(&mu_);
  if (dropped_) return Status::NotFound("KV space '" + record_.config.name + "' was dropped");
  const int64_t now = now_ms_();
  size_t n = 0;
  for (; n * kChunkHashBytes < hashes.size(); ++n) {
    auto it = segments_.find(HashAt(hashes.data() + n * kChunkHashBytes));
    if (it == segments_.end() || ExpiredLocked(it->second, now)) break;
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  return n;
}

KvSpaceStats KvSpace::Stats() const {
  MutexLock lock(&mu_);
  KvSpaceStats s;
  s.config = record_.config;
  s.segments = segments_.size();
  s.bytes_stored = bytes_;
  const size_t per_token = size_t(s.config.layers) * s.config.kv_heads * s.config.head_dim *
                           kvcache::DtypeBytes(dtype_) * 2;
  s.raw_bytes = per_token * tokens_;
  s.hits = hits_;
  s.misses = misses_;
  s.evictions = evictions_;
  s.expirations = expirations_;
  return s;
}

Status KvSpace::Drop() {
  MutexLock put_lock(&put_mu_);
  MutexLock lock(&mu_);
  std::string begin = storage::OwnerPrefix(record_.id);
  std::string end = storage::OwnerPrefix(record_.id + 1);
  storage::WriteBatch batch(*store_);
  batch.DeleteRange(Cf::kKv, begin, end);
  batch.Delete(Cf::kMeta, storage::KvSpaceMetaKey(record_.config.name));
  MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  dropped_ = true;
  for (auto& [h, seg] : segments_) Release(seg.layers);
  for (auto& [id, r] : reservations_) Abandon(r);
  reservations_.clear();
  segments_.clear();
  lru_.clear();
  bytes_ = 0;
  tokens_ = 0;
  return Status::OK();
}

}  // namespace mnemo::engine

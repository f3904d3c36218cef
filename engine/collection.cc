// The write and read paths of a collection. Recovery, training and
// snapshots are in collection_recovery.cc.
#include "engine/collection.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "storage/keys.h"

namespace mnemo::engine {

constexpr uint32_t kMaxEf = 1 << 16;          // HNSW efSearch at most
constexpr uint64_t kMaxResults = 1ull << 24;  // n * k per search (200 MB of reply)

using storage::Cf;

Collection::Collection(storage::Store* store, const EngineOptions* options,
                       CollectionRecord record)
    : store_(store), options_(options), record_(std::move(record)) {}

Collection::~Collection() = default;

Status Collection::CheckAlive() const {
  if (dropped_.load(std::memory_order_acquire)) {
    return Status::NotFound("collection '" + record_.name + "' was dropped");
  }
  return Status::OK();
}

Status Collection::ValidateVectors(std::span<const float> v, size_t n,
                                   std::string_view what) const {
  const size_t d = record_.spec.dim;
  if (v.size() != n * d) {
    if (n > 0 && v.size() % n == 0) {
      return Status::InvalidArgument("dimension " + std::to_string(v.size() / n) +
                                     " does not match collection '" + record_.name + "' (" +
                                     std::to_string(d) + ")");
    }
    return Status::InvalidArgument(std::string(what) + ": " + std::to_string(v.size()) +
                                   " floats for " + std::to_string(n) + " rows of dimension " +
                                   std::to_string(d));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return Status::InvalidArgument(std::string(what) + " " + std::to_string(i / d) +
                                     " has a NaN or infinite value at position " +
                                     std::to_string(i % d));
    }
  }
  return Status::OK();
}

Status Collection::ValidateIds(std::span<const uint64_t> ids, bool unique) const {
  if (ids.empty()) return Status::InvalidArgument("empty batch: no ids given");
  if (ids.size() > options_->max_batch) {
    return Status::InvalidArgument("batch of " + std::to_string(ids.size()) +
                                   " exceeds the limit of " + std::to_string(options_->max_batch));
  }
  for (uint64_t id : ids) {
    if (id > uint64_t(INT64_MAX)) {
      return Status::InvalidArgument("id " + std::to_string(id) + " is above 2^63 - 1");
    }
  }
  if (unique) {
    std::vector<uint64_t> sorted(ids.begin(), ids.end());
    std::sort(sorted.begin(), sorted.end());
    auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    if (dup != sorted.end()) {
      return Status::InvalidArgument("id " + std::to_string(*dup) +
                                     " appears more than once in the batch");
    }
  }
  return Status::OK();
}

Status Collection::Upsert(const EntryBatch& b) {
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  const size_t n = b.ids.size();
  MNEMO_RETURN_IF_ERROR(ValidateIds(b.ids, /*unique=*/true));
  MNEMO_RETURN_IF_ERROR(ValidateVectors(b.vectors, n, "vector"));
  if (!b.groups.empty() && b.groups.size() != n) {
    return Status::InvalidArgument(std::to_string(b.groups.size()) + " groups for " +
                                   std::to_string(n) + " ids");
  }
  if (!b.payloads.empty() && b.payloads.size() != n) {
    return Status::InvalidArgument(std::to_string(b.payloads.size()) + " payloads for " +
                                   std::to_string(n) + " ids");
  }
  for (size_t i = 0; i < b.payloads.size(); ++i) {
    if (b.payloads[i].size() > options_->max_payload_bytes) {
      return Status::InvalidArgument("payload of id " + std::to_string(b.ids[i]) + " has " +
                                     std::to_string(b.payloads[i].size()) +
                                     " bytes, above the limit of " +
                                     std::to_string(options_->max_payload_bytes));
    }
  }

  MutexLock write_lock(&write_mu_);
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  MNEMO_RETURN_IF_ERROR(out_of_step_);
  const uint32_t d = record_.spec.dim;
  // index_ is only replaced by writers, so it is stable under write_mu_, and
  // encoding is const: searches keep running meanwhile.
  const index::VectorIndex* index = WriterIndex();
  const bool with_codes = !WriterStaging() && index->stores_codes();
  const size_t code_size = with_codes ? index->code_size() : 0;
  std::vector<uint8_t> codes(n * code_size);
  if (with_codes) MNEMO_RETURN_IF_ERROR(index->Encode(n, b.vectors.data(), codes.data()));

  CollectionRecord next = record_;
  next.seq++;
  const uint64_t first_insert = next.next_insert;
  storage::WriteBatch batch(*store_);
  std::string value;
  for (size_t i = 0; i < n; ++i) {
    std::string key = storage::EntryKey(next.id, b.ids[i]);
    EncodeEntry(b.groups.empty() ? 0 : b.groups[i], next.next_insert++, &b.vectors[i * d], d,
                b.payloads.empty() ? std::string_view() : b.payloads[i], &value);
    batch.Put(Cf::kEntries, key, value);
    if (with_codes) {
      EncodeCode(next.epoch, &codes[i * code_size], code_size, &value);
      batch.Put(Cf::kCodes, key, value);
    }
  }
  batch.Put(Cf::kMeta, storage::CollectionMetaKey(next.name), next.Encode());
  MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  record_ = next;

  // Durable from here on: the index catches up with the store, or is rebuilt
  // from it (collection.h, "Durability").
  Status added = Fault("add");
  {
    WriterLock index_lock(&index_mu_);
    const int64_t first_slot = int64_t(slots_.size());
    if (added.ok()) {
      added = index_->Add(n, b.vectors.data(), with_codes ? codes.data() : nullptr, first_slot);
    }
    if (added.ok()) {
      for (size_t i = 0; i < n; ++i) {
        slots_.Kill(b.ids[i]);
        slots_.Append(b.ids[i], b.groups.empty() ? 0 : b.groups[i], first_insert + i);
      }
    } else {
      // FAISS may have added part of the batch: the index and the slot
      // table disagree, so no search may use them until the rebuild.
      out_of_step_ = added;
    }
  }
  if (!added.ok()) MNEMO_RETURN_IF_ERROR(RebuildLocked(added));
  MaintainLocked();
  return Status::OK();
}

Status Collection::Fault(std::string_view operation) const {
  return options_->index_fault ? options_->index_fault(operation) : Status::OK();
}

void Collection::MaintainLocked() {
  Status st;
  if (WriterStaging() && WriterSlots().live() >= record_.train_size) {
    st = Fault("train");
    if (st.ok()) st = TrainLocked(/*min_vectors=*/record_.train_size);
    if (!st.ok()) {
      spdlog::warn("collection '{}': training failed ({}); searches stay exact, and the next "
                   "write tries again", record_.name, st.ToString());
    }
  }
  st = Fault("compact");
  if (st.ok()) st = MaybeCompactLocked();
  if (!st.ok()) {
    spdlog::warn("collection '{}': compaction failed ({}); the index keeps its dead slots",
                 record_.name, st.ToString());
  }
}

Result<EntryList> Collection::Get(std::span<const uint64_t> ids) const {
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  MNEMO_RETURN_IF_ERROR(ValidateIds(ids, /*unique=*/false));
  std::vector<std::string> keys;
  keys.reserve(ids.size());
  for (uint64_t id : ids) keys.push_back(storage::EntryKey(record_.id, id));
  MNEMO_ASSIGN_OR_RETURN(auto values, store_->MultiGet(Cf::kEntries, keys));
  EntryList out;
  const uint32_t d = record_.spec.dim;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!values[i]) continue;
    MNEMO_ASSIGN_OR_RETURN(EntryView e, DecodeEntry(*values[i], d));
    out.ids.push_back(ids[i]);
    size_t at = out.vectors.size();
    out.vectors.resize(at + d);
    std::memcpy(&out.vectors[at], e.vector_bytes.data(), e.vector_bytes.size());
    out.groups.push_back(e.group);
    out.payloads.emplace_back(e.payload);
  }
  return out;
}

Result<uint64_t> Collection::Delete(std::span<const uint64_t> ids) {
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  MNEMO_RETURN_IF_ERROR(ValidateIds(ids, /*unique=*/false));
  MutexLock write_lock(&write_mu_);
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  MNEMO_RETURN_IF_ERROR(out_of_step_);
  // slots_ only changes under write_mu_, which we hold.
  std::unordered_set<uint64_t> present;
  for (uint64_t id : ids) {
    if (WriterSlots().Find(id)) present.insert(id);
  }
  if (present.empty()) return uint64_t(0);

  CollectionRecord next = record_;
  next.seq++;
  storage::WriteBatch batch(*store_);
  for (uint64_t id : present) {
    std::string key = storage::EntryKey(next.id, id);
    batch.Delete(Cf::kEntries, key);
    batch.Delete(Cf::kCodes, key);
  }
  batch.Put(Cf::kMeta, storage::CollectionMetaKey(next.name), next.Encode());
  MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  record_ = next;
  {
    WriterLock index_lock(&index_mu_);
    for (uint64_t id : present) slots_.Kill(id);
  }
  MaintainLocked();
  return uint64_t(present.size());
}

Status Collection::ValidateSearch(const SearchRequest& r) const {
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  const uint32_t d = record_.spec.dim;
  if (r.queries.empty()) return Status::InvalidArgument("no queries given");
  if (r.queries.size() % d != 0) {
    return Status::InvalidArgument("query of " + std::to_string(r.queries.size()) +
                                   " floats does not match collection '" + record_.name +
                                   "' (dimension " + std::to_string(d) + ")");
  }
  const size_t n = r.queries.size() / d;
  if (n > options_->max_queries) {
    return Status::InvalidArgument(std::to_string(n) + " queries exceed the limit of " +
                                   std::to_string(options_->max_queries));
  }
  if (r.k == 0 || r.k > options_->max_k) {
    return Status::OutOfRange("k must be in 1.." + std::to_string(options_->max_k) + ", got " +
                              std::to_string(r.k));
  }
  if (uint64_t(n) * r.k > kMaxResults) {
    return Status::OutOfRange(std::to_string(n) + " queries x k=" + std::to_string(r.k) +
                              " exceed " + std::to_string(kMaxResults) + " results per search");
  }
  // HNSW sizes its candidate heap by ef: an unbounded ef would let one
  // request allocate gigabytes (found by tests/fuzz/frame_fuzzer).
  if (r.ef > kMaxEf) {
    return Status::OutOfRange("ef must be at most " + std::to_string(kMaxEf) + ", got " +
                              std::to_string(r.ef));
  }
  return ValidateVectors(r.queries, n, "query");
}

Result<SearchResult> Collection::Search(const SearchRequest& r) const {
  MNEMO_RETURN_IF_ERROR(ValidateSearch(r));
  return SearchValidated(r);
}

Result<SearchResult> Collection::SearchValidated(const SearchRequest& r) const {
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  const size_t n = r.queries.size() / record_.spec.dim;
  SearchResult out;
  out.n = n;
  out.k = r.k;
  out.distances.resize(n * r.k);
  out.ids.resize(n * r.k);
  ReaderLock index_lock(&index_mu_);
  if (!out_of_step_.ok()) return out_of_step_;
  LiveFilter live(slots_);
  std::optional<GroupFilter> group;
  index::SearchParams params;
  params.k = r.k;
  params.nprobe = r.nprobe;
  params.ef = r.ef;
  params.threads = r.threads;
  if (r.group) {
    group.emplace(slots_, *r.group);
    params.filter = &*group;
  } else if (slots_.dead() > 0) {
    params.filter = &live;
  }
  MNEMO_RETURN_IF_ERROR(
      index_->Search(n, r.queries.data(), params, out.distances.data(), out.ids.data()));
  // FAISS 1.7.3 answers k=1 with slot 0 when nothing qualifies (an empty
  // index, or every slot filtered out); only slots that exist and pass the
  // filter become ids, the rest are "none" (-1).
  for (int64_t& slot : out.ids) {
    const bool valid = slot >= 0 && size_t(slot) < slots_.size() &&
                       (params.filter == nullptr || params.filter->Contains(slot));
    slot = valid ? int64_t(slots_.id(slot)) : -1;
  }
  return out;
}

Status Collection::Train() {
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  MutexLock write_lock(&write_mu_);
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  MNEMO_RETURN_IF_ERROR(out_of_step_);
  if (!WriterStaging()) {
    return Status::FailedPrecondition("collection '" + record_.name + "' is already trained");
  }
  return TrainLocked(/*min_vectors=*/1);
}

CollectionStats Collection::Stats() const {
  CollectionStats s;
  s.name = record_.name;
  s.dim = record_.spec.dim;
  s.metric = std::string(index::MetricName(record_.spec.metric));
  s.index = record_.spec.factory;
  s.train_size = record_.train_size;
  {
    ReaderLock index_lock(&index_mu_);
    s.count = slots_.live();
    s.deleted_slots = slots_.dead();
    s.trained = !staging_;
    s.index_memory_bytes = index_ ? index_->MemoryBytes() : 0;
    s.ef_construction = index_ ? index_->ef_construction() : 0;
  }
  s.epoch = epoch_.load();
  s.storage_bytes = store_->ApproximateBytes(Cf::kEntries, RangeBegin(), RangeEnd()) +
                    store_->ApproximateBytes(Cf::kCodes, RangeBegin(), RangeEnd());
  s.trainings = trainings_.load();
  s.codes_encoded_on_load = codes_encoded_on_load_.load();
  s.loaded_from_snapshot = loaded_from_snapshot_.load();
  return s;
}

std::string Collection::RangeBegin() const { return storage::OwnerPrefix(record_.id); }
std::string Collection::RangeEnd() const { return storage::OwnerPrefix(record_.id + 1); }

}  // namespace mnemo::engine

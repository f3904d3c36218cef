// Building a collection's in-memory index from the store: at open, after
// training, when compacting, and after an index update that failed. Plus graph snapshots and drop.
//
// The store is the source of truth. Quantized indexes are rebuilt from the
// stored codes of the current epoch (no training, no encoding); only entries
// whose code is missing or from an older epoch are encoded, and their codes
// are written back. Flat indexes re-add the raw vectors. HNSW graphs load
// from a snapshot when it is as new as the collection, else are rebuilt.
#include <cstring>

#include <spdlog/spdlog.h>

#include "engine/collection.h"
#include "engine/engine.h"
#include "storage/keys.h"

namespace mnemo::engine {

using storage::Cf;

namespace {
constexpr size_t kLoadChunk = 16384;
constexpr size_t kSnapshotChunkBytes = 8 << 20;
}  // namespace

struct Collection::Loaded {
  std::unique_ptr<index::VectorIndex> index;
  bool staging = false;
  SlotTable slots;
  uint64_t encoded = 0;
  bool from_snapshot = false;
};

Status Collection::Load() {
  MutexLock write_lock(&write_mu_);
  MNEMO_ASSIGN_OR_RETURN(auto trained,
                         store_->Get(Cf::kIndex, storage::IndexKey(record_.id, kTrainedTag)));
  if (trained) {
    if (trained->size() < 4 || storage::DecodeFixed32(trained->data()) != record_.epoch) {
      return Status::Corruption("trained index of collection '" + record_.name +
                                "' does not match its epoch");
    }
    trained_blob_ = trained->substr(4);
  }
  epoch_ = record_.epoch;
  Loaded loaded;
  MNEMO_RETURN_IF_ERROR(LoadInto(&loaded, /*allow_snapshot=*/true));
  codes_encoded_on_load_ += loaded.encoded;
  loaded_from_snapshot_ = loaded.from_snapshot;
  if (loaded.from_snapshot) snapshot_seq_ = record_.seq;
  InstallLocked(&loaded);
  return Status::OK();
}

Result<std::unique_ptr<index::VectorIndex>> Collection::NewEmptyIndexLocked() const {
  if (!trained_blob_.empty()) return index::VectorIndex::Deserialize(record_.spec, trained_blob_);
  return index::VectorIndex::Create(record_.spec);
}

void Collection::InstallLocked(Loaded* loaded) {
  WriterLock index_lock(&index_mu_);
  index_ = std::move(loaded->index);
  staging_ = loaded->staging;
  slots_ = std::move(loaded->slots);
  out_of_step_ = Status::OK();
}

Status Collection::LoadInto(Loaded* out, bool allow_snapshot) {
  MNEMO_ASSIGN_OR_RETURN(out->index, NewEmptyIndexLocked());
  if (!out->index->is_trained()) {
    // Gather exact-searchable vectors until there are enough to train.
    index::IndexSpec flat = record_.spec;
    flat.factory = "Flat";
    MNEMO_ASSIGN_OR_RETURN(out->index, index::VectorIndex::Create(flat));
    out->staging = true;
  }
  index::VectorIndex& idx = *out->index;
  if (allow_snapshot && !out->staging && idx.kind() == index::VectorIndex::Kind::kHnsw) {
    MNEMO_ASSIGN_OR_RETURN(bool loaded, LoadSnapshot(out));
    if (loaded) return Status::OK();
  }

  const uint32_t d = record_.spec.dim;
  const bool use_codes = !out->staging && idx.stores_codes();
  const size_t cs = use_codes ? idx.code_size() : 0;
  auto entries = store_->NewIterator(Cf::kEntries, RangeBegin(), RangeEnd());
  auto codes = use_codes ? store_->NewIterator(Cf::kCodes, RangeBegin(), RangeEnd()) : nullptr;

  std::vector<uint64_t> ids, groups, inserts;
  const bool need_vectors = !use_codes || idx.codes_need_vectors();
  std::vector<float> vectors;         // raw vectors, when adding needs them
  std::vector<uint8_t> chunk_codes;   // codes (quantized)
  std::vector<size_t> missing;        // rows of the chunk without a valid code
  std::vector<float> missing_vectors;

  auto flush = [&]() -> Status {
    const size_t n = ids.size();
    if (n == 0) return Status::OK();
    const int64_t first = int64_t(out->slots.size());
    if (use_codes) {
      if (!missing.empty()) {
        std::vector<uint8_t> fresh(missing.size() * cs);
        MNEMO_RETURN_IF_ERROR(idx.Encode(missing.size(), missing_vectors.data(), fresh.data()));
        storage::WriteBatch batch(*store_);
        std::string value;
        for (size_t m = 0; m < missing.size(); ++m) {
          std::memcpy(&chunk_codes[missing[m] * cs], &fresh[m * cs], cs);
          EncodeCode(record_.epoch, &fresh[m * cs], cs, &value);
          batch.Put(Cf::kCodes, storage::EntryKey(record_.id, ids[missing[m]]), value);
        }
        MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
        out->encoded += missing.size();
      }
      MNEMO_RETURN_IF_ERROR(idx.AddCodes(n, chunk_codes.data(),
                                         need_vectors ? vectors.data() : nullptr, first));
    } else {
      MNEMO_RETURN_IF_ERROR(idx.Add(n, vectors.data(), nullptr, first));
    }
    for (size_t i = 0; i < n; ++i) out->slots.Append(ids[i], groups[i], inserts[i]);
    ids.clear(); groups.clear(); inserts.clear(); vectors.clear();
    chunk_codes.clear(); missing.clear(); missing_vectors.clear();
    return Status::OK();
  };

  for (; entries->Valid(); entries->Next()) {
    MNEMO_ASSIGN_OR_RETURN(EntryView e, DecodeEntry(entries->value(), d));
    const std::string_view key = entries->key();
    ids.push_back(storage::EntryIdFromKey(key));
    groups.push_back(e.group);
    inserts.push_back(e.insert);
    const char* raw = e.vector_bytes.data();
    if (need_vectors) {
      vectors.resize(vectors.size() + d);
      std::memcpy(&vectors[vectors.size() - d], raw, e.vector_bytes.size());
    }
    if (use_codes) {
      // Both iterators walk the same key order: a merge join.
      while (codes->Valid() && codes->key() < key) codes->Next();
      chunk_codes.resize(chunk_codes.size() + cs);
      const bool have = codes->Valid() && codes->key() == key &&
                        codes->value().size() == kCodeHeader + cs &&
                        storage::DecodeFixed32(codes->value().data()) == record_.epoch;
      if (have) {
        std::memcpy(&chunk_codes[chunk_codes.size() - cs], codes->value().data() + kCodeHeader, cs);
      } else {
        missing.push_back(ids.size() - 1);
        missing_vectors.resize(missing_vectors.size() + d);
        std::memcpy(&missing_vectors[missing_vectors.size() - d], raw, e.vector_bytes.size());
      }
    }
    if (ids.size() == kLoadChunk) MNEMO_RETURN_IF_ERROR(flush());
  }
  MNEMO_RETURN_IF_ERROR(entries->status());
  if (codes) MNEMO_RETURN_IF_ERROR(codes->status());
  return flush();
}

Status Collection::RebuildLocked(const Status& cause) {
  Loaded loaded;
  Status st = Fault("rebuild");
  if (st.ok()) st = LoadInto(&loaded, /*allow_snapshot=*/false);
  if (!st.ok()) {
    WriterLock index_lock(&index_mu_);
    out_of_step_ = Status::Internal(
        "the index of collection '" + record_.name + "' is out of step with its stored entries (" +
        cause.ToString() + "; rebuilding it failed: " + st.ToString() +
        "); the entries are stored: restart mnemod to rebuild the index");
    return out_of_step_;
  }
  InstallLocked(&loaded);  // clears out_of_step_
  spdlog::warn("collection '{}': index rebuilt from the store after {}", record_.name,
               cause.ToString());
  return Status::OK();
}

Status Collection::TrainLocked(size_t min_vectors) {
  const uint32_t d = record_.spec.dim;
  std::vector<float> sample;
  sample.reserve(WriterSlots().live() * d);
  MNEMO_RETURN_IF_ERROR(store_->Scan(
      Cf::kEntries, RangeBegin(), RangeEnd(), [&](std::string_view, std::string_view v) {
        auto e = DecodeEntry(v, d);
        if (!e.ok()) return false;
        size_t at = sample.size();
        sample.resize(at + d);
        std::memcpy(&sample[at], e->vector_bytes.data(), e->vector_bytes.size());
        return true;
      }));
  const size_t n = sample.size() / d;
  if (n < std::max<size_t>(min_vectors, 1)) {
    return Status::FailedPrecondition("collection '" + record_.name + "' has " +
                                      std::to_string(n) + " entries; training needs " +
                                      std::to_string(min_vectors));
  }
  MNEMO_ASSIGN_OR_RETURN(auto fresh, index::VectorIndex::Create(record_.spec));
  MNEMO_RETURN_IF_ERROR(fresh->Train(n, sample.data()));
  sample = {};
  MNEMO_ASSIGN_OR_RETURN(std::string blob, fresh->Serialize());

  // The trained state goes first: codes of an epoch are only valid with it.
  CollectionRecord next = record_;
  next.epoch++;
  next.seq++;
  storage::WriteBatch batch(*store_);
  std::string value;
  storage::PutFixed32(&value, next.epoch);
  value += blob;
  batch.Put(Cf::kIndex, storage::IndexKey(next.id, kTrainedTag), value);
  batch.Put(Cf::kMeta, storage::CollectionMetaKey(next.name), next.Encode());
  MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  record_ = next;
  epoch_ = next.epoch;
  trained_blob_ = std::move(blob);
  trainings_++;

  // Encodes every entry once, writes the codes, builds the index.
  Loaded loaded;
  MNEMO_RETURN_IF_ERROR(LoadInto(&loaded, /*allow_snapshot=*/false));
  InstallLocked(&loaded);
  return Status::OK();
}

Status Collection::MaybeCompactLocked() {
  const size_t dead = WriterSlots().dead();
  if (dead < options_->compact_min_dead || dead < WriterSlots().live()) return Status::OK();
  Loaded loaded;
  MNEMO_RETURN_IF_ERROR(LoadInto(&loaded, /*allow_snapshot=*/false));
  InstallLocked(&loaded);
  return Status::OK();
}

// Snapshot layout: u64 index_bytes, index bytes, slot table bytes; split into
// chunks under "snapshot/<i>", described by "snapshot" = u64 seq, u32 chunks.
Result<bool> Collection::LoadSnapshot(Loaded* out) {
  MNEMO_ASSIGN_OR_RETURN(auto head,
                         store_->Get(Cf::kIndex, storage::IndexKey(record_.id, kSnapshotTag)));
  if (!head || head->size() != 12) return false;
  if (storage::DecodeFixed64(head->data()) != record_.seq) return false;  // stale
  const uint32_t chunks = storage::DecodeFixed32(head->data() + 8);
  std::vector<std::string> keys;
  for (uint32_t i = 0; i < chunks; ++i) {
    keys.push_back(storage::IndexKey(record_.id, SnapshotChunkTag(i)));
  }
  MNEMO_ASSIGN_OR_RETURN(auto parts, store_->MultiGet(Cf::kIndex, keys));
  std::string bytes;
  for (auto& p : parts) {
    if (!p) return false;
    bytes += *p;
  }
  if (bytes.size() < 8) return false;
  const uint64_t index_len = storage::DecodeFixed64(bytes.data());
  if (index_len > bytes.size() - 8) return false;
  auto index = index::VectorIndex::Deserialize(record_.spec,
                                               std::string_view(bytes).substr(8, index_len));
  auto slots = SlotTable::Deserialize(std::string_view(bytes).substr(8 + index_len));
  if (!index.ok() || !slots.ok() || int64_t(slots->size()) != (*index)->size()) return false;
  out->index = std::move(index).value();
  out->slots = std::move(slots).value();
  out->from_snapshot = true;
  return true;
}

Status Collection::SaveSnapshot() {
  MutexLock write_lock(&write_mu_);
  if (dropped_ || WriterStaging() || WriterIndex() == nullptr ||
      WriterIndex()->kind() != index::VectorIndex::Kind::kHnsw || snapshot_seq_ == record_.seq) {
    return Status::OK();
  }
  std::string bytes(8, '\0');
  {
    ReaderLock index_lock(&index_mu_);
    MNEMO_ASSIGN_OR_RETURN(std::string index_bytes, index_->Serialize());
    const uint64_t len = index_bytes.size();
    std::memcpy(bytes.data(), &len, 8);
    bytes += index_bytes;
    bytes += slots_.Serialize();
  }
  const std::string head_key = storage::IndexKey(record_.id, kSnapshotTag);
  {  // Invalidate the old snapshot before overwriting its chunks.
    storage::WriteBatch batch(*store_);
    batch.Delete(Cf::kIndex, head_key);
    batch.DeleteRange(Cf::kIndex, storage::IndexKey(record_.id, "snapshot/"),
                      storage::IndexKey(record_.id, "snapshot0"));  // '0' follows '/'
    MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  }
  uint32_t chunks = 0;
  for (size_t at = 0; at < bytes.size(); at += kSnapshotChunkBytes, ++chunks) {
    storage::WriteBatch batch(*store_);
    batch.Put(Cf::kIndex, storage::IndexKey(record_.id, SnapshotChunkTag(chunks)),
              std::string_view(bytes).substr(at, kSnapshotChunkBytes));
    MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  }
  storage::WriteBatch batch(*store_);
  std::string head;
  storage::PutFixed64(&head, record_.seq);
  storage::PutFixed32(&head, chunks);
  batch.Put(Cf::kIndex, head_key, head);
  MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  snapshot_seq_ = record_.seq;
  return Status::OK();
}

Status Collection::Drop() {
  MutexLock write_lock(&write_mu_);
  MNEMO_RETURN_IF_ERROR(CheckAlive());
  storage::WriteBatch batch(*store_);
  batch.Delete(Cf::kMeta, storage::CollectionMetaKey(record_.name));
  for (Cf cf : {Cf::kEntries, Cf::kCodes, Cf::kIndex}) {
    batch.DeleteRange(cf, RangeBegin(), RangeEnd());
  }
  MNEMO_RETURN_IF_ERROR(store_->Write(&batch));
  dropped_.store(true, std::memory_order_release);
  WriterLock index_lock(&index_mu_);
  index_.reset();
  slots_ = SlotTable();
  return Status::OK();
}

}  // namespace mnemo::engine

// Collection: a named set of entries with one dimension, metric and index.
//
// Thread-safety: all methods are safe to call concurrently. Searches and gets
// run in parallel with each other; writes (Upsert, Delete, Train) are
// serialized with each other and exclude searches only while the in-memory
// index is updated, after the write is durable.
//
// Durability: a write returns OK only once it is in RocksDB's write-ahead log
// (synced with EngineOptions::sync_writes); a search that starts after that
// sees it. On any error nothing of the write is stored or applied.
//
// Entries without a group are in group 0. Ids are client-chosen, at most
// 2^63 - 1 (searches return them as int64 with -1 for "no result").
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/rw_lock.h"
#include "common/status.h"
#include "engine/records.h"
#include "engine/slot_table.h"
#include "index/vector_index.h"
#include "storage/store.h"

namespace mnemo::engine {

struct EngineOptions;

// A batch of entries to insert or replace. Views: the caller owns the memory.
struct EntryBatch {
  std::span<const uint64_t> ids;                // n
  std::span<const float> vectors;               // n * dim, row-major
  std::span<const uint64_t> groups;             // empty or n
  std::span<const std::string_view> payloads;   // empty or n
};

// Entries read back by Get: only the ids that exist, in request order.
struct EntryList {
  std::vector<uint64_t> ids;          // m
  std::vector<float> vectors;         // m * dim
  std::vector<uint64_t> groups;       // m
  std::vector<std::string> payloads;  // m
};

struct SearchRequest {
  std::span<const float> queries;  // n * dim
  uint32_t k = 10;
  uint32_t nprobe = 0;  // IVF lists to probe; 0 = index default (1)
  uint32_t ef = 0;      // HNSW efSearch; 0 = index default (16)
  std::optional<uint64_t> group;  // only entries of this group
  // OpenMP threads FAISS may use for this call; 0: its default (all cores,
  // one for a few queries on IVF and HNSW). A server that runs several
  // searches at once gives each fewer.
  uint32_t threads = 0;
};

// n rows of k: distances are squared L2 for l2, inner products for ip and
// cosine; ids are -1 where fewer than k entries qualified.
struct SearchResult {
  size_t n = 0;
  uint32_t k = 0;
  std::vector<float> distances;
  std::vector<int64_t> ids;
};

struct CollectionStats {
  std::string name;
  uint32_t dim = 0;
  std::string metric;
  std::string index;
  uint64_t count = 0;          // live entries
  uint64_t deleted_slots = 0;  // replaced/deleted, awaiting compaction
  bool trained = false;        // false while an index gathers training data
  uint64_t train_size = 0;
  uint32_t epoch = 0;
  uint64_t index_memory_bytes = 0;
  uint64_t storage_bytes = 0;
  // What happened in this process: trainings run, codes computed while
  // loading (0 when recovery re-used stored codes), graph snapshot used.
  uint64_t trainings = 0;
  uint64_t codes_encoded_on_load = 0;
  bool loaded_from_snapshot = false;
};

class Collection {
 public:
  // Use Engine::CreateCollection / GetCollection; public for make_shared.
  Collection(storage::Store* store, const EngineOptions* options, CollectionRecord record);
  ~Collection();
  Collection(const Collection&) = delete;
  Collection& operator=(const Collection&) = delete;

  const std::string& name() const { return record_.name; }
  uint32_t dim() const { return record_.spec.dim; }
  const index::IndexSpec& spec() const { return record_.spec; }
  // See index::VectorIndex::BatchingSavesWork: false when a batch of
  // queries costs what they cost one by one, so a server need not gather them.
  bool batching_saves_work() const { return index::VectorIndex::BatchingSavesWork(record_.spec); }

  Status Upsert(const EntryBatch& batch);
  // Entries that exist among `ids`.
  Result<EntryList> Get(std::span<const uint64_t> ids) const;
  // Removes the entries with these ids; returns how many existed.
  Result<uint64_t> Delete(std::span<const uint64_t> ids);
  Result<SearchResult> Search(const SearchRequest& request) const;
  // The checks Search makes before searching: an OK here means Search fails
  // only if the collection is dropped meanwhile or the index breaks.
  Status ValidateSearch(const SearchRequest& request) const;
  // Trains a not-yet-trained index on the entries stored so far, instead of
  // waiting for train_size entries. FailedPrecondition if already trained.
  Status Train();
  CollectionStats Stats() const;

  // Engine-internal.
  // Builds the in-memory index from the store (recovery).
  Status Load();
  // Writes a graph snapshot if the index is a graph and changed since the
  // last one, so that the next Load need not rebuild it.
  Status SaveSnapshot();
  // Deletes everything the collection stored, atomically, after waiting for
  // the write in progress; later calls fail with NotFound.
  Status Drop();

 private:
  struct Loaded;
  Status CheckAlive() const;
  Status ValidateVectors(std::span<const float> v, size_t n, std::string_view what) const;
  Status ValidateIds(std::span<const uint64_t> ids, bool unique) const;
  // REQUIRES: write_mu_ held.
  Status TrainLocked(size_t min_vectors);
  Status MaybeCompactLocked();
  Result<std::unique_ptr<index::VectorIndex>> NewEmptyIndexLocked() const;
  Status LoadInto(Loaded* out, bool allow_snapshot);
  Result<bool> LoadSnapshot(Loaded* out);
  void InstallLocked(Loaded* loaded);
  std::string RangeBegin() const;
  std::string RangeEnd() const;

  // Constant after construction.
  storage::Store* const store_;
  const EngineOptions* const options_;

  // Serializes writers; guards record_'s counters and trained_blob_.
  std::mutex write_mu_;
  CollectionRecord record_;
  std::string trained_blob_;  // FAISS bytes of the trained empty index

  // Guards index_ and slots_: shared for searches, exclusive to mutate.
  mutable RwLock index_mu_;
  std::unique_ptr<index::VectorIndex> index_;  // staging Flat until trained
  bool staging_ = false;  // index_ is a Flat stand-in awaiting training
  SlotTable slots_;

  std::atomic<bool> dropped_{false};
  std::atomic<uint32_t> epoch_{0};  // record_.epoch, readable without write_mu_
  std::atomic<uint64_t> trainings_{0};
  std::atomic<uint64_t> codes_encoded_on_load_{0};
  std::atomic<bool> loaded_from_snapshot_{false};
  uint64_t snapshot_seq_ = 0;  // guarded by write_mu_
};

}  // namespace mnemo::engine

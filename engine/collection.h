// Collection: a named set of entries with one dimension, metric and index.
//
// Thread-safety: all methods are safe to call concurrently. Searches and gets
// run in parallel with each other; writes (Upsert, Delete, Train) are
// serialized with each other and exclude searches only while the in-memory
// index is updated, after the write is durable.
//
// Durability: a write (Upsert, Delete) returns OK only once it is in
// RocksDB's write-ahead log (synced with EngineOptions::sync_writes) and in
// the in-memory index: a search that starts after that sees it. An error
// returned before the write reached the log (bad input, a failed store
// write) means nothing of it is stored or applied. Once it is in the log it
// is kept: the index catches up with the store, and if updating the index
// fails (FAISS throws, memory runs out) the index is rebuilt from the store
// and the write still returns OK. Only if that rebuild fails too does the
// write return Internal, with its entries stored (Get finds them, a restart
// indexes them); the collection then answers searches and writes with that
// Internal error until it is reopened. Training and compaction that a write
// sets off never fail it: a failed training leaves the exact staging index
// (the next write tries again), a failed compaction the dead slots.
//
// Entries without a group are in group 0. Ids are client-chosen, at most
// 2^63 - 1 (searches return them as int64 with -1 for "no result").
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/rw_lock.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "engine/records.h"
#include "engine/slot_table.h"
#include "engine/types.h"
#include "index/vector_index.h"
#include "storage/store.h"

namespace mnemo::engine {

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

  // Inserts or replaces the entries with these ids. OK: durable and visible
  // (see "Durability"). Errors that change nothing: InvalidArgument (empty
  // batch, over EngineOptions::max_batch, duplicate ids, ids above 2^63 - 1,
  // wrong dimension, NaN or infinity, groups or payloads not one per id,
  // payload over max_payload_bytes), NotFound (dropped), FailedPrecondition
  // (the store stopped taking writes), Internal (the collection is out of
  // step). An Internal after the write reached the log: see "Durability".
  Status Upsert(const EntryBatch& batch);
  // The entries that exist among `ids`, in the order asked. Changes nothing.
  // InvalidArgument for an empty list, one over max_batch or an id above
  // 2^63 - 1; NotFound once dropped; IOError/Corruption from the store.
  Result<EntryList> Get(std::span<const uint64_t> ids) const;
  // Removes the entries with these ids; returns how many existed. OK,
  // errors and durability as for Upsert.
  Result<uint64_t> Delete(std::span<const uint64_t> ids);
  // The k nearest entries of each query (engine/types.h, SearchResult).
  // Changes nothing. The errors of ValidateSearch; NotFound once dropped;
  // Internal when the index fails (FAISS, or the collection out of step).
  Result<SearchResult> Search(const SearchRequest& request) const;
  // The checks Search makes before searching: InvalidArgument (no queries,
  // wrong dimension, over max_queries, NaN or infinity), OutOfRange (k
  // outside 1..max_k, ef too large, too many results), NotFound (dropped).
  // An OK here means Search fails only if the collection is dropped
  // meanwhile or the index breaks.
  Status ValidateSearch(const SearchRequest& request) const;
  // Trains a not-yet-trained index on the entries stored so far, instead of
  // waiting for train_size entries. FailedPrecondition if already trained,
  // if there are too few entries or the data cannot train the index
  // (nothing changes then).
  Status Train();
  // A snapshot of the collection's figures; never fails.
  CollectionStats Stats() const;

 private:
  friend class Engine;         // Load, SaveSnapshot, Drop
  friend class SearchBatcher;  // SearchValidated
  // Builds the in-memory index from the store (recovery).
  Status Load();
  // Writes a graph snapshot if the index is a graph and changed since the
  // last one, so that the next Load need not rebuild it.
  Status SaveSnapshot();
  // Deletes everything the collection stored, atomically, after waiting for
  // the write in progress; later calls fail with NotFound.
  Status Drop();
  // Search for a request that passed ValidateSearch (the batcher's merged
  // batches): the queries are not scanned again.
  Result<SearchResult> SearchValidated(const SearchRequest& request) const;

  struct Loaded;
  Status CheckAlive() const;
  // EngineOptions::index_fault's verdict on `operation` (OK without one).
  Status Fault(std::string_view operation) const;
  // After a failed index update of a durable write (`cause`): rebuilds the
  // index from the store, or marks the collection out of step and returns why.
  Status RebuildLocked(const Status& cause) REQUIRES(write_mu_);
  // Trains or compacts when due; failures are logged, never returned (see
  // "Durability").
  void MaintainLocked() REQUIRES(write_mu_);
  // A writer's reads of index_mu_'s members: only writers, who hold
  // write_mu_, change them, so a writer reads them without index_mu_ (and
  // searches go on meanwhile). The analysis cannot say "either lock".
  const index::VectorIndex* WriterIndex() const REQUIRES(write_mu_) NO_THREAD_SAFETY_ANALYSIS {
    return index_.get();
  }
  bool WriterStaging() const REQUIRES(write_mu_) NO_THREAD_SAFETY_ANALYSIS { return staging_; }
  const SlotTable& WriterSlots() const REQUIRES(write_mu_) NO_THREAD_SAFETY_ANALYSIS { return slots_; }
  Status ValidateVectors(std::span<const float> v, size_t n, std::string_view what) const;
  Status ValidateIds(std::span<const uint64_t> ids, bool unique) const;
  Status TrainLocked(size_t min_vectors) REQUIRES(write_mu_);
  Status MaybeCompactLocked() REQUIRES(write_mu_);
  Result<std::unique_ptr<index::VectorIndex>> NewEmptyIndexLocked() const REQUIRES(write_mu_);
  // Builds the index that the store holds into `out`, without touching the
  // live one.
  Status LoadInto(Loaded* out, bool allow_snapshot) REQUIRES(write_mu_);
  Result<bool> LoadSnapshot(Loaded* out) REQUIRES(write_mu_);
  // Makes `loaded` the live index (takes index_mu_).
  void InstallLocked(Loaded* loaded) REQUIRES(write_mu_);
  std::string RangeBegin() const;
  std::string RangeEnd() const;

  // Constant after construction.
  storage::Store* const store_;
  const EngineOptions* const options_;

  // Serializes writers; guards record_'s counters and trained_blob_.
  // record_'s name, id and spec never change: those are read without it.
  Mutex write_mu_ ACQUIRED_BEFORE(index_mu_);
  CollectionRecord record_;
  std::string trained_blob_ GUARDED_BY(write_mu_);  // FAISS bytes of the trained empty index

  // Guards index_ and slots_: shared for searches, exclusive to mutate. Only
  // writers (holding write_mu_) mutate them, so a writer may also read them
  // holding write_mu_ alone (WriterIndex and its kin).
  mutable RwLock index_mu_;
  std::unique_ptr<index::VectorIndex> index_ GUARDED_BY(index_mu_);  // staging Flat until trained
  bool staging_ GUARDED_BY(index_mu_) = false;  // index_ is a Flat stand-in awaiting training
  SlotTable slots_ GUARDED_BY(index_mu_);
  // Not OK while index_ and slots_ disagree with the store after a failed
  // update and rebuild. Written with write_mu_ and index_mu_ both held, so
  // either suffices to read it.
  Status out_of_step_;

  std::atomic<bool> dropped_{false};
  std::atomic<uint32_t> epoch_{0};  // record_.epoch, readable without write_mu_
  std::atomic<uint64_t> trainings_{0};
  std::atomic<uint64_t> codes_encoded_on_load_{0};
  std::atomic<bool> loaded_from_snapshot_{false};
  uint64_t snapshot_seq_ GUARDED_BY(write_mu_) = 0;
};

}  // namespace mnemo::engine

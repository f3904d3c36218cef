// Engine: mnemo's embedded memory store: collections over one RocksDB store.
// The daemon and the tests use this C++ API; everything a client can do goes
// through it.
//
// Thread-safe. Collections returned by GetCollection stay valid after a drop
// (their calls then fail with NotFound) and after Close (undefined: do not).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/rw_lock.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "engine/collection.h"
#include "engine/kv_space.h"
#include "engine/types.h"
#include "storage/store.h"
#include "storage/value_log.h"

namespace mnemo::engine {

// The value log of KV layers (storage/value_log.h), inside data_dir.
inline constexpr const char* kValueLogDir = "kv-values";

class Engine {
 public:
  // Opens or creates the store in options.data_dir and loads every
  // collection's index and KV space from it (no retraining; see
  // engine/collection.h). InvalidArgument without a data_dir; the store's
  // IOError/Corruption, prefixed with the collection or space that failed to
  // load; nothing is left open on an error.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& options);
  ~Engine();  // Close()s
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // A new, empty collection, durable once OK. InvalidArgument for a bad
  // name (letters, digits, '_', '-', '.'; 1-128 bytes), dimension, metric,
  // eviction or factory string; AlreadyExists; FailedPrecondition once
  // closed or when the store stopped taking writes. On an error nothing is
  // created.
  Result<std::shared_ptr<Collection>> CreateCollection(const CollectionConfig& config);
  // Deletes the collection and everything it stored, atomically; its
  // Collection objects then answer NotFound. NotFound for an unknown name.
  Status DropCollection(std::string_view name);
  // NotFound for an unknown name.
  Result<std::shared_ptr<Collection>> GetCollection(std::string_view name) const;
  // Every collection's figures, by name.
  std::vector<CollectionStats> ListCollections() const;

  // KV spaces (engine/kv_space.h), with the same name rules and errors
  // (InvalidArgument also names the offending shape, dtype or codec field).
  Result<std::shared_ptr<KvSpace>> CreateKvSpace(const KvSpaceConfig& config);
  Status DropKvSpace(std::string_view name);
  Result<std::shared_ptr<KvSpace>> GetKvSpace(std::string_view name) const;
  std::vector<KvSpaceStats> ListKvSpaces() const;

  // Saves graph snapshots and flushes; idempotent. Later creates and
  // backups fail with FailedPrecondition; Collections must not be used.
  // An error names the first snapshot or flush that failed; what was
  // acknowledged is in the write-ahead log regardless.
  Status Close();

  // Writes a consistent copy of the store, every collection in it, to `dir`
  // (absolute; must not exist; its parent must), while writes go on: it holds
  // every write acknowledged before the call. HNSW graphs are snapshotted
  // first, so that opening the copy need not rebuild them. InvalidArgument
  // for a bad dir, IOError when the copy fails (a partial dir is removed).
  Status Backup(const std::string& dir);

  storage::Store* store() { return store_.get(); }
  storage::ValueLog* value_log() { return value_log_.get(); }
  const EngineOptions& options() const { return options_; }

 private:
  Engine(EngineOptions options, std::unique_ptr<storage::Store> store,
         std::unique_ptr<storage::ValueLog> values);
  Status LoadCollections() EXCLUDES(mu_);
  Status LoadKvSpaces() EXCLUDES(mu_);

  const EngineOptions options_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<storage::ValueLog> value_log_;  // KV layers; spaces point into it

  mutable RwLock mu_;
  std::map<std::string, std::shared_ptr<Collection>, std::less<>> collections_ GUARDED_BY(mu_);
  uint32_t next_collection_id_ GUARDED_BY(mu_) = 1;
  std::map<std::string, std::shared_ptr<KvSpace>, std::less<>> kv_spaces_ GUARDED_BY(mu_);
  uint32_t next_kv_space_id_ GUARDED_BY(mu_) = 1;
  bool closed_ GUARDED_BY(mu_) = false;
};

}  // namespace mnemo::engine

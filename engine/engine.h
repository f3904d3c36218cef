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
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/collection.h"
#include "engine/kv_space.h"
#include "storage/store.h"
#include "storage/value_log.h"

namespace mnemo::engine {

// The value log of KV layers (storage/value_log.h), inside data_dir.
inline constexpr const char* kValueLogDir = "kv-values";

struct EngineOptions {
  std::string data_dir;
  // Sync the write-ahead log before acknowledging each write.
  bool sync_writes = false;
  // Limits on requests.
  uint32_t max_k = 4096;
  size_t max_batch = 1 << 20;           // entries per upsert / ids per get
  size_t max_payload_bytes = 1 << 20;   // per entry
  size_t max_queries = 1 << 16;         // per search
  // Compact (rebuild without dead slots) once dead slots exceed both this
  // many and the live count.
  size_t compact_min_dead = 4096;
  // Fault-injection seam, passed to RocksDB; not owned.
  rocksdb::Env* env = nullptr;
  // When set, Backup writes only to directories inside this one.
  std::string backup_root;
  // Wall clock in milliseconds for KV time-to-live; a seam for tests.
  KvSpace::NowMs now_ms;
};

struct CollectionConfig {
  std::string name;
  uint32_t dim = 0;
  std::string metric = "l2";
  std::string index = "Flat";  // FAISS factory string
  uint64_t capacity = 0;       // 0: unbounded
  std::string evict;           // "", "fifo", "lru"
  // Entries gathered before an index that needs training is trained (0:
  // FAISS's advice, 39 points per centroid). Until then searches are exact.
  uint64_t train_size = 0;
};

class Engine {
 public:
  // Opens or creates the store in options.data_dir and loads every
  // collection's index from it.
  static Result<std::unique_ptr<Engine>> Open(const EngineOptions& options);
  ~Engine();  // Close()s
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  Result<std::shared_ptr<Collection>> CreateCollection(const CollectionConfig& config);
  Status DropCollection(std::string_view name);
  Result<std::shared_ptr<Collection>> GetCollection(std::string_view name) const;
  std::vector<CollectionStats> ListCollections() const;

  // KV spaces (engine/kv_space.h); names follow the collection rules.
  Result<std::shared_ptr<KvSpace>> CreateKvSpace(const KvSpaceConfig& config);
  Status DropKvSpace(std::string_view name);
  Result<std::shared_ptr<KvSpace>> GetKvSpace(std::string_view name) const;
  std::vector<KvSpaceStats> ListKvSpaces() const;

  // Saves graph snapshots and flushes; idempotent. Later calls fail.
  Status Close();

  // Writes a consistent copy of the store, every collection in it, to `dir`
  // (absolute; must not exist; its parent must), while writes go on: it holds
  // every write acknowledged before the call. HNSW graphs are snapshotted
  // first, so that opening the copy need not rebuild them. InvalidArgument
  // for a bad dir, IOError when the copy fails (a partial dir is removed).
  Status Backup(const std::string& dir);

  storage::Store* store() { return store_.get(); }
  storage::ValueLog* value_log() { return values_.get(); }
  const EngineOptions& options() const { return options_; }

 private:
  Engine(EngineOptions options, std::unique_ptr<storage::Store> store,
         std::unique_ptr<storage::ValueLog> values);
  Status LoadCollections();
  Status LoadKvSpaces();

  const EngineOptions options_;
  std::unique_ptr<storage::Store> store_;
  std::unique_ptr<storage::ValueLog> values_;  // KV layers; spaces point into it

  mutable std::shared_mutex mu_;  // guards the members below
  std::map<std::string, std::shared_ptr<Collection>, std::less<>> collections_;
  uint32_t next_collection_id_ = 1;
  std::map<std::string, std::shared_ptr<KvSpace>, std::less<>> kv_spaces_;
  uint32_t next_kv_space_id_ = 1;
  bool closed_ = false;
};

}  // namespace mnemo::engine

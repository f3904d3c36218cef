// The engine's public types: what a caller configures, asks and gets back.
//
// This header depends on nothing but the standard library and
// common/status.h, so that code which only speaks to an engine from afar (the
// C++ client, the `mnemo` command-line tool) can use the same structs as the
// engine without linking it (RocksDB, FAISS, BLAS). The classes that do the
// work are in engine/engine.h, engine/collection.h and engine/kv_space.h.
//
// Views (std::span, std::string_view) in requests are the caller's memory and
// must stay valid for the call; results own what they hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace rocksdb {
class Env;
}

namespace mnemo::engine {

// ---------------------------------------------------------------- the engine

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
  std::function<int64_t()> now_ms;
  // Fault-injection seam for the in-memory index: called before a write
  // that is already durable changes a collection's index (operation "add",
  // "train" or "compact"); a non-OK Status makes that change fail as a
  // FAISS error would. Unset in production.
  std::function<Status(std::string_view operation)> index_fault;
};

// ---------------------------------------------------------------- collections

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
  // HNSW's efConstruction (0: index::kDefaultEfConstruction).
  uint32_t ef_construction = 0;
};

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
  uint32_t ef_construction = 0;  // HNSW only: the one in use; else 0
  uint64_t index_memory_bytes = 0;
  uint64_t storage_bytes = 0;
  // What happened in this process: trainings run, codes computed while
  // loading (0 when recovery re-used stored codes), graph snapshot used.
  uint64_t trainings = 0;
  uint64_t codes_encoded_on_load = 0;
  bool loaded_from_snapshot = false;
};

// ---------------------------------------------------------------- KV spaces

inline constexpr size_t kChunkHashBytes = 32;

struct KvSpaceConfig {
  std::string name;
  uint32_t layers = 0, kv_heads = 0, head_dim = 0;
  std::string dtype = "f16";
  uint32_t chunk_tokens = 256;
  std::string codec = "raw";
  uint64_t capacity_bytes = 0;  // 0: unbounded
  uint64_t ttl_s = 0;           // seconds a segment lives after its put; 0: forever
};

struct KvSpaceStats {
  KvSpaceConfig config;
  uint64_t segments = 0;
  uint64_t bytes_stored = 0;  // encoded layers
  uint64_t raw_bytes = 0;     // what they hold in the space's dtype
  uint64_t hits = 0, misses = 0;  // gets
  uint64_t evictions = 0, expirations = 0;
};

// The layers asked for, each [kv_heads, tokens, head_dim] in the space's
// dtype, concatenated in the order of `layers`.
struct KvSegment {
  uint32_t tokens = 0;
  std::vector<uint32_t> layers;
  std::vector<uint8_t> keys, values;
};

}  // namespace mnemo::engine

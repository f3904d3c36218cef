// The values mnemo stores, and their byte layouts (little-endian, versioned
// by a leading format byte so that later layouts can be read alongside).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "index/index_spec.h"
#include "storage/keys.h"

namespace mnemo::engine {

enum class EvictPolicy : uint8_t { kNone = 0, kFifo = 1, kLru = 2 };

// meta "c/<name>": a collection's definition and write counters.
//   u8 format=1, u32 id, u32 dim, u8 metric, u8 evict, u64 capacity,
//   u64 train_size, u32 epoch, u64 seq, u64 next_insert, u64 created_unix,
//   u16 len + factory, u16 len + name; format 2 adds u32 ef_construction
//   (format 1 records read as 0: the default).
struct CollectionRecord {
  storage::CollectionId id = 0;
  std::string name;
  index::IndexSpec spec;
  uint64_t capacity = 0;  // 0: unbounded
  EvictPolicy evict = EvictPolicy::kNone;
  uint64_t train_size = 0;  // vectors gathered before an index is trained
  uint32_t epoch = 0;       // bumped at each training; 0 = never trained
  uint64_t seq = 0;         // bumped by every write batch
  uint64_t next_insert = 0; // insertion counter, for FIFO order
  uint64_t created_unix = 0;

  std::string Encode() const;
  static Result<CollectionRecord> Decode(std::string_view bytes);
};

// entries be32(c) be64(id):
//   u8 format=1, u64 group, u64 insert, u32 payload_len, f32[dim], payload
struct EntryView {
  uint64_t group = 0;
  uint64_t insert = 0;
  const float* vector = nullptr;  // unaligned-safe copy is the reader's job
  std::string_view vector_bytes;
  std::string_view payload;
};
void EncodeEntry(uint64_t group, uint64_t insert, const float* vector, uint32_t dim,
                 std::string_view payload, std::string* out);
Result<EntryView> DecodeEntry(std::string_view bytes, uint32_t dim);

// codes be32(c) be64(id): u32 epoch, code bytes. A code is valid only for the
// trained state of the same epoch.
void EncodeCode(uint32_t epoch, const uint8_t* code, size_t code_size, std::string* out);
inline constexpr size_t kCodeHeader = 4;

// index be32(c) "trained": u32 epoch, FAISS index bytes of the trained, empty
// index. index be32(c) "snapshot": u64 seq, u32 chunks, then "snapshot/"
// be32(i) holds chunk i of a full index + slot table (HNSW only).
inline constexpr std::string_view kTrainedTag = "trained";
inline constexpr std::string_view kSnapshotTag = "snapshot";
std::string SnapshotChunkTag(uint32_t chunk);

}  // namespace mnemo::engine

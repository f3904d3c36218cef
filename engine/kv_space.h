// KvSpace: a named store of KV segments for one model shape (SPEC "KV
// space"): the attention keys and values of one chunk of tokens for every
// layer, addressed by the client's 32-byte chained prefix hash, stored one
// encoded layer per RocksDB value (kvcache/codec.h) so that a reader can fetch a
// subset of layers, or layer by layer.
//
// Capacity and time to live: a space may hold at most capacity_bytes of
// encoded layers; a put that would exceed it first evicts the least recently
// used segments (gets and prefix matches count as use), in the same atomic
// write. A segment older than ttl_s (since its put) is gone: gets and
// matches do not see it and it is deleted when found. Recency lives in
// memory; after a restart the order is that of the puts.
//
// Thread-safe. Errors: InvalidArgument for shapes, sizes and hashes that do
// not fit the space (nothing is written); NotFound for a segment that is not
// stored (or a dropped space); ResourceExhausted for a segment larger than
// the whole capacity.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <random>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "engine/types.h"
#include "kvcache/codec.h"
#include "storage/keys.h"
#include "storage/store.h"
#include "storage/value_log.h"

namespace mnemo::engine {

// What the meta column family keeps per space.
struct KvSpaceRecord {
  storage::KvSpaceId id = 0;
  KvSpaceConfig config;
  std::string Encode() const;
  static Result<KvSpaceRecord> Decode(std::string_view bytes);
};

// Where a segment's layers are, found but not yet read: the daemon reads and
// decodes them straight into its reply.
struct KvRead {
  uint32_t tokens = 0;
  std::vector<uint32_t> layers;
  std::vector<storage::ValueRef> stored;  // one per layer, in the order of `layers`
  size_t layer_bytes = 0;                 // decoded bytes of keys (or values) per layer
};

// Where several segments' stored layers lie in the value log's files, for a
// reader on this machine that reads them itself (KvSpace::Locate).
struct KvLocation {
  std::vector<storage::ValueLog::FileIdentity> files;  // the files named below
  std::vector<uint32_t> layers;                        // of every segment, in this order
  std::vector<uint32_t> tokens;                        // per segment
  struct Range {
    uint32_t file = 0;  // index into `files`
    uint64_t offset = 0, length = 0;
    uint64_t checksum = 0;  // XXH3-64 of the stored layer
  };
  std::vector<Range> ranges;  // segments x layers, segment-major
  int64_t lease_ms = 0;       // the files stay as they are for this long
};

// A same-host put's place in the value log (KvSpace::Reserve).
struct KvReservation {
  uint64_t id = 0;  // random: another connection cannot guess it
  // Layer l lies in lanes[l % lanes.size()], at (l / lanes.size()) * stride
  // from its start: a writer fills the lanes (files) in parallel.
  std::vector<storage::ValueLog::Reservation> lanes;
  uint32_t layers = 0, tokens = 0;
  size_t layer_bytes = 0;    // of one layer's keys (and of its values)
  std::string layer_header;  // written before each layer's keys
  int64_t expires_ms = 0;
  uint64_t stride() const { return layer_header.size() + 2 * layer_bytes; }
};

class KvSpace {
 public:
  using NowMs = std::function<int64_t()>;  // wall clock; a seam for TTL tests
  // Validates the config; InvalidArgument names the offending field.
  static Status Validate(const KvSpaceConfig& config);

  // `values` holds the encoded layers; not owned, must outlive the space.
  KvSpace(storage::Store* store, storage::ValueLog* values, KvSpaceRecord record, NowMs now_ms);

  // keys and values: [layers, kv_heads, tokens, head_dim] in the space's
  // dtype, 1 <= tokens <= chunk_tokens. Replaces a segment of the same hash.
  // `tokens`, when not 0, is what the caller meant: it must match the sizes.
  Status Put(std::string_view hash, std::span<const uint8_t> keys,
             std::span<const uint8_t> values, uint32_t tokens = 0);
  // The same, with the layers in one buffer as a frame attachment carries
  // them: keys of layer 0, values of layer 0, keys of layer 1, ...; `tokens`
  // is required. With `arrived`, the layers are still arriving: the put
  // calls arrived(n) before it reads past the first n bytes, and fails,
  // storing nothing, when that returns false.
  Status PutInterleaved(std::string_view hash, std::span<const uint8_t> layers, uint32_t tokens,
                        const std::function<bool(size_t)>& arrived = nullptr);
  // Same-host puts (raw spaces only): Reserve sets aside the value-log
  // bytes of a segment of `tokens` tokens for a writer on this machine,
  // which fills them through the files' paths: each layer as layer_header,
  // keys, values, in its lane. PutReserved then stores them under `hash`
  // as Put would, reading them back for their checksums (InvalidArgument if
  // they were not all written; the reservation is then used up). A
  // reservation lapses unused after kReservationTtlMs. Errors:
  // InvalidArgument for a space that is not raw or tokens out of range (the
  // writer should put over the network instead); ResourceExhausted beyond
  // kMaxReservations in flight, or for a segment over the capacity;
  // NotFound for a reservation that lapsed, was used, or is not this space's.
  static constexpr int64_t kReservationTtlMs = 60'000;
  static constexpr size_t kMaxReservations = 64;
  Result<KvReservation> Reserve(uint32_t tokens);
  Status PutReserved(std::string_view hash, uint64_t reservation);

  // All layers when `layers` is empty.
  Result<KvSegment> Get(std::string_view hash, std::span<const uint32_t> layers);
  // Get in two steps: Read, then DecodeInto memory the caller owns, each of
  // keys and values layers.size() * layer_bytes. DecodeInto fails with
  // NotFound if the segment was evicted meanwhile and its file deleted.
  Result<KvRead> Read(std::string_view hash, std::span<const uint32_t> layers);
  Status DecodeInto(const KvRead& read, uint8_t* keys, uint8_t* values) const;
  // One layer of a Read (index i of read.layers).
  Status DecodeLayerInto(const KvRead& read, size_t i, uint8_t* keys, uint8_t* values) const;
  // Every layer of a Read into `out` (2 * layers.size() * layer_bytes), each
  // layer's keys then its values: the wire attachment's layout. Layers of a
  // megabyte or more are read by several threads at once (one thread copies
  // page-cached bytes at a few GB/s, under a network's pace).
  Status DecodeInterleavedInto(const KvRead& read, uint8_t* out) const {
    return DecodeInterleavedInto(read, 0, read.layers.size(), out);
  }
  // The same for layers [first, first + count) of the Read (a part of a
  // streamed reply); `out` holds 2 * count * layer_bytes.
  Status DecodeInterleavedInto(const KvRead& read, size_t first, size_t count, uint8_t* out) const;
  // Layers [first, first + count) of a Read as stored (kvcache/codec.h),
  // back to back, into `out` (the sum of their refs' lengths), checked
  // against their checksums: a reader that decodes them itself.
  Status ReadStoredInto(const KvRead& read, size_t first, size_t count, uint8_t* out) const;
  // Same-host gets: where the stored layers of the segments `hashes` (32
  // bytes each) lie, with the files leased to readers for kReaderLeaseMs
  // (storage/value_log.h). Counts as a get of each segment. NotFound when a
  // segment is not stored (or was evicted meanwhile); IOError when the
  // files cannot be named (the reader should get over the network).
  static constexpr int64_t kReaderLeaseMs = 30'000;
  Result<KvLocation> Locate(std::string_view hashes, std::span<const uint32_t> layers);
  // How many leading hashes are stored (`hashes`: 32 bytes each).
  Result<size_t> MatchPrefix(std::string_view hashes);
  KvSpaceStats Stats() const;

  const KvSpaceConfig& config() const { return record_.config; }

 private:
  friend class Engine;  // Load, Drop
  // Reads the segment heads and layer references into memory (and reports
  // them to the value log as live).
  Status Load();
  // Deletes every segment and the space's record.
  Status Drop();

  using Hash = std::array<uint8_t, kChunkHashBytes>;
  // The kChunkHashBytes at `bytes` (a checked chunk hash) as a map key.
  static Hash HashAt(const char* bytes);
  struct HashOf {
    size_t operator()(const Hash& h) const;
  };
  struct Segment {
    std::list<Hash>::iterator lru;
    uint64_t bytes = 0;
    uint32_t tokens = 0;
    int64_t written_ms = 0;
    uint64_t seq = 0;
    std::vector<storage::ValueRef> layers;  // where each layer's encoding is
  };

  // Runs layer(i) for i in [0, count) (layers first + i of `read`), on
  // several threads when the layers hold `bytes` of a megabyte or more;
  // InvalidArgument when the range is not the read's.
  Status ForLayers(const KvRead& read, size_t first, size_t count, size_t bytes,
                   const std::function<Status(size_t i)>& layer) const;
  Status CheckHash(std::string_view hash) const;
  // ResourceExhausted for a segment larger than the whole capacity.
  Status CheckFits(uint64_t segment_bytes) const;
  // Tokens of a segment whose keys are `bytes` (all layers); InvalidArgument
  // when that is no valid shape, or not `tokens` (unless 0).
  Result<uint32_t> TokensOf(size_t bytes, uint32_t tokens) const;
  using LayerParts = std::function<std::pair<std::span<const uint8_t>, std::span<const uint8_t>>(uint32_t)>;
  Status PutLayers(std::string_view hash, uint32_t tokens, size_t layer_bytes, const LayerParts& layer);
  // Stores a segment whose layers are in the value log (`written`, one per
  // layer, `total` bytes), evicting as needed; releases them on failure.
  Status Commit(std::string_view hash, uint32_t tokens, uint64_t total,
                std::vector<storage::ValueRef> written) REQUIRES(put_mu_) EXCLUDES(mu_);
  void AbandonLapsedLocked(int64_t now) REQUIRES(mu_);
  void Abandon(const KvReservation& r);
  bool ExpiredLocked(const Segment& s, int64_t now) const REQUIRES(mu_);
  // Deletes a segment's keys in `batch`.
  void DeleteSegment(const Hash& h, storage::WriteBatch* batch) const;
  // Drops a segment from memory (nothing if it is not there) and appends its
  // layer references to `released`, for the value log once the delete is
  // committed.
  void ForgetLocked(const Hash& h, std::vector<storage::ValueRef>* released) REQUIRES(mu_);
  void Release(const std::vector<storage::ValueRef>& refs);

  storage::Store* const store_;
  storage::ValueLog* const value_log_;
  const KvSpaceRecord record_;
  const kvcache::Dtype dtype_;
  const kvcache::CodecSpec codec_;
  const NowMs now_ms_;

  Mutex put_mu_ ACQUIRED_BEFORE(mu_);  // one put (or drop) at a time
  mutable Mutex mu_;
  std::list<Hash> lru_ GUARDED_BY(mu_);  // most recently used first
  std::unordered_map<Hash, Segment, HashOf> segments_ GUARDED_BY(mu_);
  uint64_t bytes_ GUARDED_BY(mu_) = 0;   // encoded layers of all segments
  uint64_t tokens_ GUARDED_BY(mu_) = 0;  // tokens of all segments (for raw_bytes)
  uint64_t next_seq_ GUARDED_BY(mu_) = 1;
  uint64_t puts_ GUARDED_BY(mu_) = 0;
  bool dropped_ GUARDED_BY(mu_) = false;
  std::unordered_map<uint64_t, KvReservation> reservations_ GUARDED_BY(mu_);
  std::mt19937_64 reservation_ids_ GUARDED_BY(mu_){std::random_device{}()};
  uint64_t hits_ GUARDED_BY(mu_) = 0, misses_ GUARDED_BY(mu_) = 0;
  uint64_t evictions_ GUARDED_BY(mu_) = 0, expirations_ GUARDED_BY(mu_) = 0;
};

}  // namespace mnemo::engine

// Key encoding for every column family, in one place.
//
// Integers are big-endian so that RocksDB's bytewise order equals numeric
// order: all keys of one collection form one contiguous range
// [OwnerPrefix(c), OwnerPrefix(c + 1)), which is what makes drop a
// single DeleteRange and recovery a single scan.
//
//   meta:    "c/" name                 -> CollectionRecord (engine/records.h)
//            "next_collection_id"      -> fixed64 little-endian
//   entries: be32(collection) be64(id) -> EntryRecord
//   codes:   be32(collection) be64(id) -> CodeRecord (index codes, derived)
//   index:   be32(collection) tag      -> trained quantizer / graph snapshot
//   meta:    "k/" name                 -> KvSpaceRecord (engine/kv_space.h)
//            "next_kv_space_id"        -> fixed32 little-endian
//   kv:      be32(space) 0x00 hash[32]          -> KV segment head
//            be32(space) 0x01 hash[32] be16(layer) -> ValueRef of one encoded layer
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mnemo::storage {

using CollectionId = uint32_t;

std::string CollectionMetaKey(std::string_view name);
inline constexpr std::string_view kCollectionMetaPrefix = "c/";
inline constexpr std::string_view kNextCollectionIdKey = "next_collection_id";

// be32(owner): the first bytes of every key of one collection or KV space
// (their ids share one range of numbers per column family: entries, codes
// and index keys belong to collections, kv keys to KV spaces).
std::string OwnerPrefix(uint32_t owner);
// be32(collection) be64(id).
std::string EntryKey(CollectionId collection, uint64_t id);
// The id of an EntryKey; `key` must be 12 bytes.
uint64_t EntryIdFromKey(std::string_view key);
// be32(collection) tag, for the index column family.
std::string IndexKey(CollectionId collection, std::string_view tag);

using KvSpaceId = uint32_t;
inline constexpr std::string_view kKvSpaceMetaPrefix = "k/";
inline constexpr std::string_view kNextKvSpaceIdKey = "next_kv_space_id";
std::string KvSpaceMetaKey(std::string_view name);
// be32(space) 0x00 hash: a segment's head; KvHeadPrefix(s) begins them all.
std::string KvHeadKey(KvSpaceId space, std::string_view hash);
std::string KvHeadPrefix(KvSpaceId space);
// be32(space) 0x01 hash be16(layer): one layer of a segment; its value is
// the layer's ValueRef (storage/value_log.h). KvLayerPrefix(s) begins them.
std::string KvLayerKey(KvSpaceId space, std::string_view hash, uint16_t layer);
std::string KvLayerPrefix(KvSpaceId space);
// The layer of a KvLayerKey.
uint16_t KvLayerFromKey(std::string_view key);

// The end of the range of keys that begin with `prefix` (for Store::Scan);
// `prefix` is one of the above, which never end in 0xFF.
std::string PrefixEnd(std::string_view prefix);

// Fixed-width little-endian helpers for values.
void PutFixed32(std::string* dst, uint32_t v);
void PutFixed64(std::string* dst, uint64_t v);
uint32_t DecodeFixed32(const char* p);
uint64_t DecodeFixed64(const char* p);

}  // namespace mnemo::storage

#include "storage/keys.h"

#include <cstring>

namespace mnemo::storage {
namespace {

void PutBigEndian32(std::string* dst, uint32_t v) {
  char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  dst->append(b, 4);
}

void PutBigEndian64(std::string* dst, uint64_t v) {
  PutBigEndian32(dst, uint32_t(v >> 32));
  PutBigEndian32(dst, uint32_t(v));
}

}  // namespace

std::string CollectionMetaKey(std::string_view name) {
  std::string key(kCollectionMetaPrefix);
  key.append(name);
  return key;
}

std::string OwnerPrefix(uint32_t owner) {
  std::string key;
  PutBigEndian32(&key, owner);
  return key;
}

std::string EntryKey(CollectionId collection, uint64_t id) {
  std::string key;
  key.reserve(12);
  PutBigEndian32(&key, collection);
  PutBigEndian64(&key, id);
  return key;
}

uint64_t EntryIdFromKey(std::string_view key) {
  uint64_t id = 0;
  for (size_t i = 4; i < 12; ++i) id = (id << 8) | uint8_t(key[i]);
  return id;
}

std::string IndexKey(CollectionId collection, std::string_view tag) {
  std::string key = OwnerPrefix(collection);
  key.append(tag);
  return key;
}

void PutFixed32(std::string* dst, uint32_t v) { dst->append(reinterpret_cast<const char*>(&v), 4); }
void PutFixed64(std::string* dst, uint64_t v) { dst->append(reinterpret_cast<const char*>(&v), 8); }
uint32_t DecodeFixed32(const char* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t DecodeFixed64(const char* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

std::string KvSpaceMetaKey(std::string_view name) {
  return std::string(kKvSpaceMetaPrefix) + std::string(name);
}

std::string KvHeadPrefix(KvSpaceId space) {
  std::string k = OwnerPrefix(space);
  k.push_back('\0');
  return k;
}

std::string KvHeadKey(KvSpaceId space, std::string_view hash) {
  return KvHeadPrefix(space) + std::string(hash);
}

std::string KvLayerPrefix(KvSpaceId space) {
  std::string k = OwnerPrefix(space);
  k.push_back('\1');
  return k;
}

uint16_t KvLayerFromKey(std::string_view key) {
  return uint16_t(uint8_t(key[key.size() - 2]) << 8 | uint8_t(key.back()));
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  end.back()++;
  return end;
}

std::string KvLayerKey(KvSpaceId space, std::string_view hash, uint16_t layer) {
  std::string k = KvLayerPrefix(space);
  k += hash;
  k.push_back(char(layer >> 8));
  k.push_back(char(layer & 0xFF));
  return k;
}

}  // namespace mnemo::storage

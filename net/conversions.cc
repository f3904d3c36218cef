#include "net/conversions.h"

#include <vector>

namespace mnemo::net {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

Offset<wire::CreateCollection> ToWire(FlatBufferBuilder& b, const engine::CollectionConfig& c) {
  return wire::CreateCreateCollectionDirect(b, c.name.c_str(), c.dim, c.metric.c_str(),
                                            c.index.c_str(), c.capacity, c.evict.c_str(),
                                            c.train_size, c.ef_construction);
}

engine::CollectionConfig FromWire(const wire::CreateCollection& r) {
  engine::CollectionConfig c;
  c.name = Str(r.name());
  c.dim = r.dim();
  if (r.metric()) c.metric = r.metric()->str();
  if (r.index()) c.index = r.index()->str();
  c.capacity = r.capacity();
  c.evict = Str(r.evict());
  c.train_size = r.train_size();
  c.ef_construction = r.ef_construction();
  return c;
}

Offset<wire::CollectionInfo> ToWire(FlatBufferBuilder& b, const engine::CollectionStats& s) {
  return wire::CreateCollectionInfoDirect(b, s.name.c_str(), s.dim, s.metric.c_str(),
                                          s.index.c_str(), s.count, s.deleted_slots, s.trained,
                                          s.train_size, s.epoch, s.index_memory_bytes,
                                          s.storage_bytes, s.ef_construction);
}

engine::CollectionStats FromWire(const wire::CollectionInfo& i) {
  engine::CollectionStats s;
  s.name = Str(i.name());
  s.dim = i.dim();
  s.metric = Str(i.metric());
  s.index = Str(i.index());
  s.count = i.count();
  s.deleted_slots = i.deleted_slots();
  s.trained = i.trained();
  s.train_size = i.train_size();
  s.epoch = i.epoch();
  s.index_memory_bytes = i.index_memory_bytes();
  s.storage_bytes = i.storage_bytes();
  s.ef_construction = i.ef_construction();
  return s;
}

Offset<wire::CreateKvSpace> ToWire(FlatBufferBuilder& b, const engine::KvSpaceConfig& c) {
  return wire::CreateCreateKvSpaceDirect(b, c.name.c_str(), c.layers, c.kv_heads, c.head_dim,
                                         c.dtype.c_str(), c.chunk_tokens, c.codec.c_str(),
                                         c.capacity_bytes, c.ttl_s);
}

engine::KvSpaceConfig FromWire(const wire::CreateKvSpace& r) {
  engine::KvSpaceConfig c;
  c.name = Str(r.name());
  c.layers = r.layers();
  c.kv_heads = r.kv_heads();
  c.head_dim = r.head_dim();
  if (r.dtype()) c.dtype = r.dtype()->str();
  if (r.chunk_tokens() != 0) c.chunk_tokens = r.chunk_tokens();
  if (r.codec()) c.codec = r.codec()->str();
  c.capacity_bytes = r.capacity_bytes();
  c.ttl_s = r.ttl_s();
  return c;
}

Offset<wire::KvSpaceInfo> ToWire(FlatBufferBuilder& b, const engine::KvSpaceStats& s) {
  const auto& c = s.config;
  return wire::CreateKvSpaceInfoDirect(
      b, c.name.c_str(), c.layers, c.kv_heads, c.head_dim, c.dtype.c_str(), c.chunk_tokens,
      c.codec.c_str(), c.capacity_bytes, c.ttl_s, s.segments, s.bytes_stored, s.raw_bytes,
      s.hits, s.misses, s.evictions, s.expirations);
}

engine::KvSpaceStats FromWire(const wire::KvSpaceInfo& i) {
  engine::KvSpaceStats s;
  s.config = {Str(i.name()), i.layers(), i.kv_heads(), i.head_dim(), Str(i.dtype()),
              i.chunk_tokens(), Str(i.codec()), i.capacity_bytes(), i.ttl_s()};
  s.segments = i.segments();
  s.bytes_stored = i.bytes_stored();
  s.raw_bytes = i.raw_bytes();
  s.hits = i.hits();
  s.misses = i.misses();
  s.evictions = i.evictions();
  s.expirations = i.expirations();
  return s;
}

Offset<wire::SearchResult> ToWire(FlatBufferBuilder& b, const engine::SearchResult& r,
                                  Offset<wire::Entries> entries) {
  auto distances = b.CreateVector(r.distances);
  auto ids = b.CreateVector(r.ids);
  return wire::CreateSearchResult(b, uint32_t(r.n), r.k, distances, ids, entries);
}

engine::SearchResult FromWire(const wire::SearchResult& s) {
  engine::SearchResult out;
  out.n = s.n();
  out.k = s.k();
  if (s.distances()) out.distances.assign(s.distances()->begin(), s.distances()->end());
  if (s.ids()) out.ids.assign(s.ids()->begin(), s.ids()->end());
  return out;
}

Offset<wire::Entries> ToWire(FlatBufferBuilder& b, const engine::EntryList& e) {
  std::vector<Offset<wire::Payload>> payloads;
  payloads.reserve(e.payloads.size());
  for (const auto& p : e.payloads) payloads.push_back(wire::CreatePayload(b, ByteVector(b, p)));
  return wire::CreateEntriesDirect(b, &e.ids, &e.vectors, &e.groups, &payloads);
}

engine::EntryList FromWire(const wire::Entries& e) {
  engine::EntryList out;
  if (e.ids()) out.ids.assign(e.ids()->begin(), e.ids()->end());
  if (e.vectors()) out.vectors.assign(e.vectors()->begin(), e.vectors()->end());
  if (e.groups()) out.groups.assign(e.groups()->begin(), e.groups()->end());
  if (e.payloads()) {
    for (const auto* p : *e.payloads()) {
      out.payloads.emplace_back(p->data() ? std::string(p->data()->begin(), p->data()->end())
                                          : std::string());
    }
  }
  return out;
}

}  // namespace mnemo::net

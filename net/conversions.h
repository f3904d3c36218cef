// Conversions between the engine's public types (engine/types.h) and their
// wire tables (net/mnemo.fbs), written once for both ends: the client builds
// requests and reads replies with them, the server reads requests and builds
// replies. Absent fields read as the engine's defaults.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include <flatbuffers/flatbuffers.h>

#include "engine/types.h"
#include "net/mnemo_generated.h"

namespace mnemo::net {

// Views of FlatBuffers fields, empty when the field is absent.
inline std::string Str(const flatbuffers::String* s) { return s ? s->str() : std::string(); }
template <typename T>
std::span<const T> Span(const flatbuffers::Vector<T>* v) {
  if (v == nullptr) return {};
  return {v->data(), v->size()};
}
inline std::string_view Bytes(const flatbuffers::Vector<uint8_t>* v) {
  if (v == nullptr) return {};
  return {reinterpret_cast<const char*>(v->data()), v->size()};
}
inline flatbuffers::Offset<flatbuffers::Vector<uint8_t>> ByteVector(
    flatbuffers::FlatBufferBuilder& b, std::string_view bytes) {
  return b.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

flatbuffers::Offset<wire::CreateCollection> ToWire(flatbuffers::FlatBufferBuilder& b,
                                                   const engine::CollectionConfig& c);
engine::CollectionConfig FromWire(const wire::CreateCollection& r);

flatbuffers::Offset<wire::CollectionInfo> ToWire(flatbuffers::FlatBufferBuilder& b,
                                                 const engine::CollectionStats& s);
engine::CollectionStats FromWire(const wire::CollectionInfo& i);

flatbuffers::Offset<wire::CreateKvSpace> ToWire(flatbuffers::FlatBufferBuilder& b,
                                                const engine::KvSpaceConfig& c);
engine::KvSpaceConfig FromWire(const wire::CreateKvSpace& r);

flatbuffers::Offset<wire::KvSpaceInfo> ToWire(flatbuffers::FlatBufferBuilder& b,
                                              const engine::KvSpaceStats& s);
engine::KvSpaceStats FromWire(const wire::KvSpaceInfo& i);

// entries: the hits' entries of a search with entries, built before (0: none).
flatbuffers::Offset<wire::SearchResult> ToWire(flatbuffers::FlatBufferBuilder& b,
                                               const engine::SearchResult& r,
                                               flatbuffers::Offset<wire::Entries> entries = 0);
engine::SearchResult FromWire(const wire::SearchResult& r);

flatbuffers::Offset<wire::Entries> ToWire(flatbuffers::FlatBufferBuilder& b,
                                          const engine::EntryList& e);
engine::EntryList FromWire(const wire::Entries& e);

}  // namespace mnemo::net

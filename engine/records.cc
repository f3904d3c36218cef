#include "engine/records.h"

#include <cstring>

namespace mnemo::engine {
namespace {

using storage::DecodeFixed32;
using storage::DecodeFixed64;
using storage::PutFixed32;
using storage::PutFixed64;

void PutString16(std::string* out, std::string_view s) {
  uint16_t n = uint16_t(s.size());
  out->append(reinterpret_cast<const char*>(&n), 2);
  out->append(s);
}

// Reads fields front to back; any overrun marks the whole decode as failed.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  bool ok() const { return ok_; }
  size_t left() const { return b_.size() - pos_; }
  const char* Take(size_t n) {
    if (!ok_ || left() < n) { ok_ = false; return nullptr; }
    const char* p = b_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint8_t U8() { auto* p = Take(1); return p ? uint8_t(*p) : 0; }
  uint32_t U32() { auto* p = Take(4); return p ? DecodeFixed32(p) : 0; }
  uint64_t U64() { auto* p = Take(8); return p ? DecodeFixed64(p) : 0; }
  std::string_view Str16() {
    auto* p = Take(2);
    if (!p) return {};
    uint16_t n; std::memcpy(&n, p, 2);
    auto* s = Take(n);
    return s ? std::string_view(s, n) : std::string_view();
  }

 private:
  std::string_view b_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

std::string CollectionRecord::Encode() const {
  std::string out;
  out.push_back(char(2));
  PutFixed32(&out, id);
  PutFixed32(&out, spec.dim);
  out.push_back(char(spec.metric));
  out.push_back(char(evict));
  PutFixed64(&out, capacity);
  PutFixed64(&out, train_size);
  PutFixed32(&out, epoch);
  PutFixed64(&out, seq);
  PutFixed64(&out, next_insert);
  PutFixed64(&out, created_unix);
  PutString16(&out, spec.factory);
  PutString16(&out, name);
  PutFixed32(&out, spec.ef_construction);
  return out;
}

Result<CollectionRecord> CollectionRecord::Decode(std::string_view bytes) {
  Reader r(bytes);
  const uint8_t format = r.U8();
  if (format != 1 && format != 2) return Status::Corruption("unknown collection record format");
  CollectionRecord c;
  c.id = r.U32();
  c.spec.dim = r.U32();
  c.spec.metric = index::Metric(r.U8());
  c.evict = EvictPolicy(r.U8());
  c.capacity = r.U64();
  c.train_size = r.U64();
  c.epoch = r.U32();
  c.seq = r.U64();
  c.next_insert = r.U64();
  c.created_unix = r.U64();
  c.spec.factory = std::string(r.Str16());
  c.name = std::string(r.Str16());
  if (format >= 2) c.spec.ef_construction = r.U32();
  if (!r.ok()) return Status::Corruption("truncated collection record");
  return c;
}

void EncodeEntry(uint64_t group, uint64_t insert, const float* vector, uint32_t dim,
                 std::string_view payload, std::string* out) {
  out->clear();
  out->reserve(21 + dim * sizeof(float) + payload.size());
  out->push_back(char(1));
  PutFixed64(out, group);
  PutFixed64(out, insert);
  PutFixed32(out, uint32_t(payload.size()));
  out->append(reinterpret_cast<const char*>(vector), dim * sizeof(float));
  out->append(payload);
}

Result<EntryView> DecodeEntry(std::string_view bytes, uint32_t dim) {
  Reader r(bytes);
  if (r.U8() != 1) return Status::Corruption("unknown entry format");
  EntryView e;
  e.group = r.U64();
  e.insert = r.U64();
  uint32_t payload_len = r.U32();
  const char* v = r.Take(size_t(dim) * sizeof(float));
  const char* p = r.Take(payload_len);
  if (!r.ok() || r.left() != 0) return Status::Corruption("malformed entry record");
  e.vector_bytes = std::string_view(v, size_t(dim) * sizeof(float));
  e.vector = reinterpret_cast<const float*>(v);
  e.payload = std::string_view(p, payload_len);
  return e;
}

void EncodeCode(uint32_t epoch, const uint8_t* code, size_t code_size, std::string* out) {
  out->clear();
  PutFixed32(out, epoch);
  out->append(reinterpret_cast<const char*>(code), code_size);
}

std::string SnapshotChunkTag(uint32_t chunk) {
  std::string tag = "snapshot/";
  char b[4] = {char(chunk >> 24), char(chunk >> 16), char(chunk >> 8), char(chunk)};
  tag.append(b, 4);
  return tag;
}

}  // namespace mnemo::engine

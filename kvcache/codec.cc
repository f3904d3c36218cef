#include "kvcache/codec.h"

#include <zstd.h>

#include <Imath/half.h>
#include <algorithm>
#include <cmath>
#include <cstring>

namespace mnemo::kvcache {
namespace {

constexpr size_t kHeaderBytes = 12;
constexpr uint32_t kDefaultInt4Group = 32;
constexpr int kZstdLevel = 3;

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }
uint32_t GetU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void PutFloats(std::string* out, const std::vector<float>& v) {
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// x[h][t][d] as float32.
std::vector<float> Floats(Dtype d, std::span<const uint8_t> in) {
  std::vector<float> x(in.size() / DtypeBytes(d));
  ToFloat(d, in, x.data());
  return x;
}

// --- int8 per channel ---------------------------------------------------

std::vector<float> ChannelScales(const std::vector<float>& x, const LayerShape& s) {
  std::vector<float> scale(size_t(s.kv_heads) * s.head_dim, 0.f);
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < s.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        float& m = scale[size_t(h) * s.head_dim + d];
        m = std::max(m, std::fabs(x[(size_t(h) * s.tokens + t) * s.head_dim + d]));
      }
  for (float& m : scale) m /= 127.f;
  return scale;
}

std::vector<int8_t> QuantizeInt8(const std::vector<float>& x, const std::vector<float>& scale,
                                 const LayerShape& s) {
  std::vector<int8_t> q(x.size());
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < s.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        const size_t i = (size_t(h) * s.tokens + t) * s.head_dim + d;
        const float sc = scale[size_t(h) * s.head_dim + d];
        q[i] = sc > 0 ? int8_t(std::lround(std::clamp(x[i] / sc, -127.f, 127.f))) : 0;
      }
  return q;
}

void DequantizeInt8(const float* scale, const int8_t* q, const LayerShape& s, float* x) {
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < s.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        const size_t i = (size_t(h) * s.tokens + t) * s.head_dim + d;
        x[i] = float(q[i]) * scale[size_t(h) * s.head_dim + d];
      }
}

std::string EncodeInt8(const std::vector<float>& x, const LayerShape& s) {
  auto scale = ChannelScales(x, s);
  auto q = QuantizeInt8(x, scale, s);
  std::string part;
  PutFloats(&part, scale);
  part.append(reinterpret_cast<const char*>(q.data()), q.size());
  return part;
}

// --- int4, KIVI-style ----------------------------------------------------

// The group of element (h, t, d): keys group tokens of a channel, values
// group channels of a token.
struct Int4Groups {
  const LayerShape& s;
  uint32_t g;
  bool per_channel;  // keys
  size_t count() const {
    return per_channel ? size_t(s.kv_heads) * ((s.tokens + g - 1) / g) * s.head_dim
                       : size_t(s.kv_heads) * s.tokens * ((s.head_dim + g - 1) / g);
  }
  size_t of(uint32_t h, uint32_t t, uint32_t d) const {
    return per_channel ? (size_t(h) * ((s.tokens + g - 1) / g) + t / g) * s.head_dim + d
                       : (size_t(h) * s.tokens + t) * ((s.head_dim + g - 1) / g) + d / g;
  }
};

template <typename Fn>
void ForEach(const LayerShape& s, Fn&& fn) {
  size_t i = 0;
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < s.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) fn(h, t, d, i++);
}

std::string EncodeInt4(const std::vector<float>& x, const LayerShape& s, uint32_t g, bool keys) {
  Int4Groups groups{s, g, keys};
  std::vector<float> lo(groups.count(), INFINITY), hi(groups.count(), -INFINITY);
  ForEach(s, [&](uint32_t h, uint32_t t, uint32_t d, size_t i) {
    size_t k = groups.of(h, t, d);
    lo[k] = std::min(lo[k], x[i]);
    hi[k] = std::max(hi[k], x[i]);
  });
  std::vector<float> scale(groups.count());
  for (size_t k = 0; k < scale.size(); ++k) scale[k] = (hi[k] - lo[k]) / 15.f;
  std::string part;
  PutFloats(&part, scale);
  PutFloats(&part, lo);
  const size_t at = part.size();
  part.resize(at + (x.size() + 1) / 2, '\0');
  ForEach(s, [&](uint32_t h, uint32_t t, uint32_t d, size_t i) {
    size_t k = groups.of(h, t, d);
    int q = scale[k] > 0 ? int(std::lround((x[i] - lo[k]) / scale[k])) : 0;
    q = std::clamp(q, 0, 15);
    part[at + i / 2] = char(uint8_t(part[at + i / 2]) | uint8_t(q << (i % 2 ? 4 : 0)));
  });
  return part;
}

Status DecodeInt4(std::string_view part, const LayerShape& s, uint32_t g, bool keys, float* x) {
  Int4Groups groups{s, g, keys};
  const size_t n = groups.count();
  if (part.size() != n * 8 + (s.elements() + 1) / 2) return Status::Corruption("int4 part size");
  const float* scale = reinterpret_cast<const float*>(part.data());
  const float* lo = scale + n;
  const uint8_t* q = reinterpret_cast<const uint8_t*>(part.data()) + n * 8;
  std::vector<float> sc(scale, scale + n), mn(lo, lo + n);  // aligned copies
  ForEach(s, [&](uint32_t h, uint32_t t, uint32_t d, size_t i) {
    size_t k = groups.of(h, t, d);
    int v = (q[i / 2] >> (i % 2 ? 4 : 0)) & 15;
    x[i] = mn[k] + float(v) * sc[k];
  });
  return Status::OK();
}

// --- entropy: int8 + token deltas + zstd -----------------------------------

std::string EncodeEntropy(const std::vector<float>& x, const LayerShape& s) {
  auto scale = ChannelScales(x, s);
  auto q = QuantizeInt8(x, scale, s);
  std::string plain;
  PutFloats(&plain, scale);
  const size_t at = plain.size();
  plain.resize(at + q.size());
  const size_t row = s.head_dim;
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < s.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        const size_t i = (size_t(h) * s.tokens + t) * row + d;
        const uint8_t prev = t == 0 ? 0 : uint8_t(q[i - row]);
        plain[at + i] = char(uint8_t(uint8_t(q[i]) - prev));
      }
  std::string part(ZSTD_compressBound(plain.size()), '\0');
  size_t n = ZSTD_compress(part.data(), part.size(), plain.data(), plain.size(), kZstdLevel);
  part.resize(ZSTD_isError(n) ? 0 : n);
  return part;
}

Status DecodeEntropy(std::string_view part, const LayerShape& s, float* x) {
  const size_t channels = size_t(s.kv_heads) * s.head_dim;
  std::string plain(channels * 4 + s.elements(), '\0');
  size_t n = ZSTD_decompress(plain.data(), plain.size(), part.data(), part.size());
  if (ZSTD_isError(n) || n != plain.size()) return Status::Corruption("entropy part does not inflate");
  std::vector<float> scale(channels);
  std::memcpy(scale.data(), plain.data(), channels * 4);
  std::vector<int8_t> q(s.elements());
  const size_t row = s.head_dim;
  for (size_t i = 0; i < q.size(); ++i) {
    const size_t t = (i / row) % s.tokens;
    const uint8_t prev = t == 0 ? 0 : uint8_t(q[i - row]);
    q[i] = int8_t(uint8_t(uint8_t(plain[channels * 4 + i]) + prev));
  }
  DequantizeInt8(scale.data(), q.data(), s, x);
  return Status::OK();
}

std::string EncodePart(const CodecSpec& c, Dtype dtype, const LayerShape& s,
                       std::span<const uint8_t> in, bool keys) {
  if (c.id == CodecId::kRaw) return std::string(reinterpret_cast<const char*>(in.data()), in.size());
  auto x = Floats(dtype, in);
  switch (c.id) {
    case CodecId::kInt8: return EncodeInt8(x, s);
    case CodecId::kInt4: return EncodeInt4(x, s, c.group, keys);
    default: return EncodeEntropy(x, s);
  }
}

// Decodes one part into `out` (s.elements() values of dtype).
Status DecodePart(CodecId id, uint32_t group, Dtype dtype, const LayerShape& s,
                  std::string_view part, bool keys, uint8_t* out) {
  const size_t bytes = s.elements() * DtypeBytes(dtype);
  if (id == CodecId::kRaw) {
    if (part.size() != bytes) return Status::Corruption("raw part size");
    std::memcpy(out, part.data(), bytes);
    return Status::OK();
  }
  std::vector<float> x(s.elements());
  if (id == CodecId::kInt8) {
    const size_t channels = size_t(s.kv_heads) * s.head_dim;
    if (part.size() != channels * 4 + s.elements()) return Status::Corruption("int8 part size");
    std::vector<float> scale(channels);
    std::memcpy(scale.data(), part.data(), channels * 4);
    DequantizeInt8(scale.data(), reinterpret_cast<const int8_t*>(part.data() + channels * 4), s,
                   x.data());
  } else if (id == CodecId::kInt4) {
    MNEMO_RETURN_IF_ERROR(DecodeInt4(part, s, group, keys, x.data()));
  } else if (id == CodecId::kEntropy) {
    MNEMO_RETURN_IF_ERROR(DecodeEntropy(part, s, x.data()));
  } else {
    return Status::Corruption("unknown codec id " + std::to_string(int(id)));
  }
  FromFloat(dtype, x.data(), x.size(), out);
  return Status::OK();
}

}  // namespace

Result<Dtype> ParseDtype(const std::string& name) {
  if (name == "f16" || name == "float16") return Dtype::kF16;
  if (name == "bf16" || name == "bfloat16") return Dtype::kBf16;
  if (name == "f32" || name == "float32") return Dtype::kF32;
  return Status::InvalidArgument("unknown dtype '" + name + "' (expected f16, bf16 or f32)");
}

const char* DtypeName(Dtype d) {
  return d == Dtype::kF16 ? "f16" : d == Dtype::kBf16 ? "bf16" : "f32";
}

size_t DtypeBytes(Dtype d) { return d == Dtype::kF32 ? 4 : 2; }

Result<CodecSpec> CodecSpec::Parse(const std::string& name) {
  CodecSpec c;
  if (name == "raw") return c;
  if (name == "int8") return c.id = CodecId::kInt8, c;
  if (name == "entropy") return c.id = CodecId::kEntropy, c;
  if (name.rfind("int4", 0) == 0) {
    c.id = CodecId::kInt4;
    c.group = kDefaultInt4Group;
    if (name.size() > 4) {
      if (name[4] != ':') return Status::InvalidArgument("unknown codec '" + name + "'");
      try {
        size_t used = 0;
        c.group = uint32_t(std::stoul(name.substr(5), &used));
        if (used != name.size() - 5) throw std::invalid_argument("trailing");
      } catch (const std::exception&) {
        return Status::InvalidArgument("bad int4 group in '" + name + "'");
      }
      if (c.group < 2 || c.group > 1024) {
        return Status::InvalidArgument("int4 group size must be in 2..1024, got " +
                                       std::to_string(c.group));
      }
    }
    return c;
  }
  return Status::InvalidArgument("unknown codec '" + name +
                                 "' (expected raw, int8, int4, int4:G or entropy)");
}

std::string CodecSpec::Name() const {
  switch (id) {
    case CodecId::kRaw: return "raw";
    case CodecId::kInt8: return "int8";
    case CodecId::kInt4: return group == kDefaultInt4Group ? "int4" : "int4:" + std::to_string(group);
    default: return "entropy";
  }
}

std::string LayerHeader(const CodecSpec& codec, Dtype dtype, uint32_t tokens,
                        uint32_t keys_part_bytes) {
  std::string out;
  out.push_back(char(codec.id));
  out.push_back(char(dtype));
  const uint16_t group = uint16_t(codec.group);
  out.append(reinterpret_cast<const char*>(&group), 2);
  PutU32(&out, tokens);
  PutU32(&out, keys_part_bytes);
  return out;
}

std::string EncodeLayer(const CodecSpec& codec, Dtype dtype, const LayerShape& shape,
                        std::span<const uint8_t> keys, std::span<const uint8_t> values) {
  std::string k = EncodePart(codec, dtype, shape, keys, true);
  std::string v = EncodePart(codec, dtype, shape, values, false);
  std::string out = LayerHeader(codec, dtype, shape.tokens, uint32_t(k.size()));
  out.reserve(kHeaderBytes + k.size() + v.size());
  out += k;
  out += v;
  return out;
}

uint32_t StoredTokens(std::string_view stored) {
  return stored.size() < kHeaderBytes ? 0 : GetU32(stored.data() + 4);
}

Status DecodeLayerInto(std::string_view stored, const LayerShape& shape, uint8_t* keys,
                       uint8_t* values) {
  if (stored.size() < kHeaderBytes) return Status::Corruption("stored KV layer is too short");
  const auto id = CodecId(uint8_t(stored[0]));
  const auto dtype = Dtype(uint8_t(stored[1]));
  uint16_t group;
  std::memcpy(&group, stored.data() + 2, 2);
  const size_t kbytes = GetU32(stored.data() + 8);
  if (uint8_t(dtype) > 2 || (id == CodecId::kInt4 && group < 2) ||
      stored.size() < kHeaderBytes + kbytes || GetU32(stored.data() + 4) != shape.tokens) {
    return Status::Corruption("stored KV layer has a bad header");
  }
  MNEMO_RETURN_IF_ERROR(
      DecodePart(id, group, dtype, shape, stored.substr(kHeaderBytes, kbytes), true, keys));
  return DecodePart(id, group, dtype, shape, stored.substr(kHeaderBytes + kbytes), false, values);
}

Status DecodeLayer(std::string_view stored, const LayerShape& shape, std::vector<uint8_t>* keys,
                   std::vector<uint8_t>* values) {
  if (stored.size() < kHeaderBytes || uint8_t(stored[1]) > 2) {
    return Status::Corruption("stored KV layer has a bad header");
  }
  LayerShape s = shape;
  s.tokens = StoredTokens(stored);
  const size_t bytes = s.elements() * DtypeBytes(Dtype(uint8_t(stored[1])));
  const size_t k0 = keys->size(), v0 = values->size();
  keys->resize(k0 + bytes);
  values->resize(v0 + bytes);
  Status st = DecodeLayerInto(stored, s, keys->data() + k0, values->data() + v0);
  if (!st.ok()) {
    keys->resize(k0);
    values->resize(v0);
  }
  return st;
}

void ToFloat(Dtype d, std::span<const uint8_t> in, float* out) {
  const size_t n = in.size() / DtypeBytes(d);
  if (d == Dtype::kF32) {
    std::memcpy(out, in.data(), n * 4);
  } else if (d == Dtype::kF16) {
    for (size_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, in.data() + 2 * i, 2);
      out[i] = float(Imath::half(Imath::half::FromBits, bits));
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint16_t bits;
      std::memcpy(&bits, in.data() + 2 * i, 2);
      const uint32_t f = uint32_t(bits) << 16;
      std::memcpy(&out[i], &f, 4);
    }
  }
}

void FromFloat(Dtype d, const float* in, size_t n, uint8_t* out) {
  if (d == Dtype::kF32) {
    std::memcpy(out, in, n * 4);
  } else if (d == Dtype::kF16) {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t bits = Imath::half(in[i]).bits();
      std::memcpy(out + 2 * i, &bits, 2);
    }
  } else {
    for (size_t i = 0; i < n; ++i) {
      uint32_t f;
      std::memcpy(&f, &in[i], 4);
      // Round to nearest even on the 16 bits dropped (NaN stays NaN).
      const uint32_t rounded = std::isnan(in[i]) ? (f | 0x400000) : f + 0x7FFF + ((f >> 16) & 1);
      const uint16_t bits = uint16_t(rounded >> 16);
      std::memcpy(out + 2 * i, &bits, 2);
    }
  }
}

}  // namespace mnemo::kvcache

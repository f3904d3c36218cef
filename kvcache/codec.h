// KV codecs: how one layer of a KV segment is stored, and the one place that
// documents the bytes (the GPU reader decodes the same bytes).
//
// A layer's input is two tensors, keys and values, each [kv_heads, tokens,
// head_dim] row-major in the space's dtype (f16, bf16 or f32, little-endian).
// A codec turns each tensor into one "part"; a stored layer is
//
//   u8 codec id | u8 dtype id | u16 group (int4; else 0) | u32 tokens
//   | u32 bytes of the keys part | keys part | values part
//
// with H = kv_heads, T = tokens, D = head_dim, all integers little-endian,
// scales and minima float32. Parts per codec (x is the tensor as float32):
//
//  raw (id 0): the input bytes unchanged. Bit-exact.
//  int8 (id 1), per channel: s[h][d] = max_t |x[h][t][d]| / 127;
//     q = round(x / s) as int8.  Part: f32 s[H*D], then int8 q[H][T][D].
//     Bound: |x - x'| <= s[h][d] / 2 for every element of channel (h, d).
//  int4 (id 2), KIVI-style, asymmetric, 4 bits, group size G (default 32):
//     keys per channel: groups of G tokens of one (h, d);
//     values per token: groups of G channels of one (h, t).
//     For a group: m = min, s = (max - min) / 15, q = round((x - m) / s).
//     Part: f32 s[groups], f32 m[groups], then the q of every element in
//     [H][T][D] order, two per byte, the even element in the low nibble.
//     Keys' groups are ordered [h][t / G][d], values' [h][t][d / G].
//     Bound: |x - x'| <= s / 2 of the element's group.
//  entropy (id 3), CacheGen-style: int8 per channel as above, then along
//     tokens each q replaced by its difference from the previous token's
//     (mod 256; token 0 kept), then zstd (level 3) over
//     f32 s[H*D] ++ int8 delta[H][T][D].  Part: the zstd frame.
//     Bound: as int8. Smooth tensors give small deltas that zstd packs.
//
// Decoding writes the space's dtype, rounding to nearest (f16, bf16), so the
// bounds above gain that rounding.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace mnemo::kvcache {

enum class Dtype : uint8_t { kF16 = 0, kBf16 = 1, kF32 = 2 };
enum class CodecId : uint8_t { kRaw = 0, kInt8 = 1, kInt4 = 2, kEntropy = 3 };

Result<Dtype> ParseDtype(const std::string& name);  // "f16", "bf16", "f32"
const char* DtypeName(Dtype d);
size_t DtypeBytes(Dtype d);

struct CodecSpec {
  CodecId id = CodecId::kRaw;
  uint32_t group = 0;  // int4's group size
  // "raw", "int8", "int4" (group 32), "int4:G" (G in 2..1024, even), "entropy".
  static Result<CodecSpec> Parse(const std::string& name);
  std::string Name() const;
};

struct LayerShape {
  uint32_t kv_heads = 0, tokens = 0, head_dim = 0;
  size_t elements() const { return size_t(kv_heads) * tokens * head_dim; }
};

// Encodes one layer; keys and values hold shape.elements() values of dtype.
std::string EncodeLayer(const CodecSpec& codec, Dtype dtype, const LayerShape& shape,
                        std::span<const uint8_t> keys, std::span<const uint8_t> values);

// The 12 bytes that begin a stored layer. With the raw codec a stored layer
// is LayerHeader + keys + values, so it can be written without encoding.
std::string LayerHeader(const CodecSpec& codec, Dtype dtype, uint32_t tokens,
                        uint32_t keys_part_bytes);

// Decodes a stored layer into dtype bytes; appends to *keys and *values.
// Corruption when the bytes are not a layer of this shape.
Status DecodeLayer(std::string_view stored, const LayerShape& shape, std::vector<uint8_t>* keys,
                   std::vector<uint8_t>* values);
// The same into caller memory: keys and values each hold
// shape.elements() * DtypeBytes of the stored dtype; `shape.tokens` must be
// the layer's (StoredTokens).
Status DecodeLayerInto(std::string_view stored, const LayerShape& shape, uint8_t* keys,
                       uint8_t* values);

// Tokens recorded in a stored layer (0 if it is too short to tell).
uint32_t StoredTokens(std::string_view stored);

// dtype <-> float32, rounding to nearest even.
void ToFloat(Dtype d, std::span<const uint8_t> in, float* out);
void FromFloat(Dtype d, const float* in, size_t n, uint8_t* out);

}  // namespace mnemo::kvcache

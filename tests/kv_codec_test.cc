// Every KV codec round-trips random and structured tensors within its stated
// bound (kvcache/codec.h); raw is bit-exact.
#include "kvcache/codec.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

namespace mnemo::kvcache {
namespace {

constexpr LayerShape kShape{4, 256, 64};  // kv_heads, tokens, head_dim

enum class Kind { kRandom, kSmooth, kOutlierChannels };

// [kv_heads][tokens][head_dim] float32.
std::vector<float> Make(Kind kind, const LayerShape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(s.elements());
  for (uint32_t h = 0; h < s.kv_heads; ++h)
    for (uint32_t t = 0; t < s.tokens; ++t)
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        float& v = x[(size_t(h) * s.tokens + t) * s.head_dim + d];
        if (kind == Kind::kRandom) {
          v = n(rng);
        } else {
          // Smooth along tokens, as neighbouring tokens' KV are (CacheGen).
          v = std::sin(0.02f * t + 0.7f * d + h) + 0.02f * n(rng);
          if (kind == Kind::kOutlierChannels && d % 16 == 3) v *= 40;  // few huge channels
        }
      }
  return x;
}

std::vector<uint8_t> Bytes(const std::vector<float>& x) {
  std::vector<uint8_t> b(x.size() * 4);
  std::memcpy(b.data(), x.data(), b.size());
  return b;
}

std::vector<float> FloatsOf(const std::vector<uint8_t>& b) {
  std::vector<float> x(b.size() / 4);
  std::memcpy(x.data(), b.data(), b.size());
  return x;
}

// The bound of kvcache/codec.h for element i of x.
std::vector<float> Bound(const std::string& codec, const std::vector<float>& x,
                         const LayerShape& s, bool keys) {
  std::vector<float> bound(x.size());
  auto at = [&](uint32_t h, uint32_t t, uint32_t d) { return (size_t(h) * s.tokens + t) * s.head_dim + d; };
  if (codec == "int8" || codec == "entropy") {
    for (uint32_t h = 0; h < s.kv_heads; ++h)
      for (uint32_t d = 0; d < s.head_dim; ++d) {
        float m = 0;
        for (uint32_t t = 0; t < s.tokens; ++t) m = std::max(m, std::fabs(x[at(h, t, d)]));
        for (uint32_t t = 0; t < s.tokens; ++t) bound[at(h, t, d)] = m / 127 / 2;
      }
  } else {  // int4 with group 32
    const uint32_t g = 32;
    for (uint32_t h = 0; h < s.kv_heads; ++h)
      for (uint32_t t = 0; t < s.tokens; ++t)
        for (uint32_t d = 0; d < s.head_dim; ++d) {
          float lo = INFINITY, hi = -INFINITY;
          for (uint32_t j = 0; j < g; ++j) {
            uint32_t tt = keys ? t / g * g + j : t, dd = keys ? d : d / g * g + j;
            if (tt >= s.tokens || dd >= s.head_dim) continue;
            lo = std::min(lo, x[at(h, tt, dd)]);
            hi = std::max(hi, x[at(h, tt, dd)]);
          }
          bound[at(h, t, d)] = (hi - lo) / 15 / 2;
        }
  }
  return bound;
}

struct Case {
  std::string codec;
  Kind kind;
};

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  static const char* const kKinds[] = {"Random", "Smooth", "OutlierChannels"};
  return info.param.codec + kKinds[int(info.param.kind)];
}

class CodecBoundTest : public ::testing::TestWithParam<Case> {};

TEST_P(CodecBoundTest, RoundTripStaysWithinTheStatedBound) {
  const auto [name, kind] = GetParam();
  auto codec = CodecSpec::Parse(name);
  ASSERT_TRUE(codec.ok());
  auto k = Make(kind, kShape, 1), v = Make(kind, kShape, 2);
  std::string stored = EncodeLayer(*codec, Dtype::kF32, kShape, Bytes(k), Bytes(v));
  EXPECT_EQ(StoredTokens(stored), kShape.tokens);
  std::vector<uint8_t> kb, vb;
  ASSERT_TRUE(DecodeLayer(stored, kShape, &kb, &vb).ok());
  auto k2 = FloatsOf(kb), v2 = FloatsOf(vb);
  ASSERT_EQ(k2.size(), k.size());
  ASSERT_EQ(v2.size(), v.size());
  auto kbound = Bound(name, k, kShape, true), vbound = Bound(name, v, kShape, false);
  size_t over = 0;
  double err = 0;
  for (size_t i = 0; i < k.size(); ++i) {
    // 1e-6 relative: float32 arithmetic in the codec itself.
    over += std::fabs(k[i] - k2[i]) > kbound[i] * (1 + 1e-5f) + 1e-6f * std::fabs(k[i]);
    over += std::fabs(v[i] - v2[i]) > vbound[i] * (1 + 1e-5f) + 1e-6f * std::fabs(v[i]);
    err = std::max<double>(err, std::fabs(k[i] - k2[i]));
  }
  EXPECT_EQ(over, 0u) << "elements outside the bound; max key error " << err;
  EXPECT_LT(stored.size(), Bytes(k).size() * 2 / 3) << "a lossy codec must compress";
}

INSTANTIATE_TEST_SUITE_P(
    AllCodecs, CodecBoundTest,
    ::testing::Values(Case{"int8", Kind::kRandom}, Case{"int8", Kind::kSmooth},
                      Case{"int8", Kind::kOutlierChannels}, Case{"int4", Kind::kRandom},
                      Case{"int4", Kind::kSmooth}, Case{"int4", Kind::kOutlierChannels},
                      Case{"entropy", Kind::kRandom}, Case{"entropy", Kind::kSmooth},
                      Case{"entropy", Kind::kOutlierChannels}),
    CaseName);

TEST(CodecTest, RawIsBitExactInEveryDtype) {
  std::mt19937_64 rng(5);
  for (Dtype d : {Dtype::kF16, Dtype::kBf16, Dtype::kF32}) {
    std::vector<uint8_t> k(kShape.elements() * DtypeBytes(d)), v(k.size());
    for (auto& b : k) b = uint8_t(rng());  // any bits, NaN patterns included
    for (auto& b : v) b = uint8_t(rng());
    std::string stored = EncodeLayer(CodecSpec{}, d, kShape, k, v);
    std::vector<uint8_t> k2, v2;
    ASSERT_TRUE(DecodeLayer(stored, kShape, &k2, &v2).ok());
    EXPECT_EQ(k2, k);
    EXPECT_EQ(v2, v);
  }
}

TEST(CodecTest, EntropyPacksSmoothTensorsTighterThanInt8) {
  auto k = Make(Kind::kSmooth, kShape, 3);
  auto int8 = EncodeLayer(*CodecSpec::Parse("int8"), Dtype::kF32, kShape, Bytes(k), Bytes(k));
  auto ent = EncodeLayer(*CodecSpec::Parse("entropy"), Dtype::kF32, kShape, Bytes(k), Bytes(k));
  EXPECT_LT(ent.size(), int8.size() * 3 / 4);
}

TEST(CodecTest, F16AndBf16DecodeWithinBoundPlusRounding) {
  auto x = Make(Kind::kSmooth, kShape, 4);
  for (Dtype d : {Dtype::kF16, Dtype::kBf16}) {
    std::vector<uint8_t> in(x.size() * 2);
    FromFloat(d, x.data(), x.size(), in.data());
    std::vector<float> exact(x.size());
    ToFloat(d, in, exact.data());
    std::string stored = EncodeLayer(*CodecSpec::Parse("int8"), d, kShape, in, in);
    std::vector<uint8_t> k2, v2;
    ASSERT_TRUE(DecodeLayer(stored, kShape, &k2, &v2).ok());
    std::vector<float> got(x.size());
    ToFloat(d, k2, got.data());
    auto bound = Bound("int8", exact, kShape, true);
    const float ulp = d == Dtype::kF16 ? 1.f / 1024 : 1.f / 128;  // relative half-ulp x2
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_LE(std::fabs(got[i] - exact[i]), bound[i] + ulp * std::fabs(exact[i]) + 1e-6f) << i;
    }
  }
}

TEST(CodecTest, BadNamesAndCorruptBytesAreRefused) {
  EXPECT_FALSE(CodecSpec::Parse("int3").ok());
  EXPECT_FALSE(CodecSpec::Parse("int4:1").ok());
  EXPECT_FALSE(CodecSpec::Parse("int4:x").ok());
  EXPECT_EQ(CodecSpec::Parse("int4:64")->group, 64u);
  EXPECT_FALSE(ParseDtype("f64").ok());
  auto x = Make(Kind::kRandom, kShape, 6);
  std::string stored = EncodeLayer(*CodecSpec::Parse("entropy"), Dtype::kF32, kShape, Bytes(x), Bytes(x));
  std::vector<uint8_t> k, v;
  EXPECT_EQ(DecodeLayer(stored.substr(0, stored.size() / 2), kShape, &k, &v).code(),
            StatusCode::kCorruption);
  EXPECT_EQ(DecodeLayer("abc", kShape, &k, &v).code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace mnemo::kvcache

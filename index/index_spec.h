// What an index is: dimension, metric and a FAISS factory string.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace mnemo::index {

// kCosine is inner product over L2-normalized vectors: the index normalizes
// what it stores and every query.
enum class Metric : uint8_t { kL2 = 0, kInnerProduct = 1, kCosine = 2 };

Result<Metric> ParseMetric(std::string_view name);  // "l2", "ip", "cosine"
std::string_view MetricName(Metric metric);
// Whether a larger score is a closer neighbour (ip, cosine) or a smaller (l2).
bool HigherIsCloser(Metric metric);

struct IndexSpec {
  uint32_t dim = 0;
  Metric metric = Metric::kL2;
  // A FAISS factory string: "Flat", "IVF1024,PQ16", "IVF256,Flat", "HNSW32",
  // "PQ16", "SQ8", ... An "IDMap," prefix is accepted and ignored: mnemo
  // always keeps the client's ids.
  std::string factory = "Flat";
};

// The largest dimension a collection may have.
inline constexpr uint32_t kMaxDim = 65536;

}  // namespace mnemo::index

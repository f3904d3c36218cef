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
  // HNSW: candidates kept while linking a new vector (FAISS's
  // efConstruction). 0: kDefaultEfConstruction. Ignored by other indexes.
  uint32_t ef_construction = 0;
};

// FAISS's own default is 40. Measured by bench/hnsw_batch_build (README.md,
// "Indexes"): with 40, an HNSW32 graph added in 10k-row batches, as an
// import adds it, reaches recall@10 0.936 at efSearch 64 on clustered
// 100k x 128 data where one add reaches 0.978; with 64 the batches reach
// 0.983 and build no slower. pgvector's default is 64 too.
inline constexpr uint32_t kDefaultEfConstruction = 64;
// Larger values only slow every insert down (hostile or mistaken requests).
inline constexpr uint32_t kMaxEfConstruction = 2048;

// The largest dimension a collection may have.
inline constexpr uint32_t kMaxDim = 65536;

}  // namespace mnemo::index

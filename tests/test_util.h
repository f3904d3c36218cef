// Helpers shared by the C++ test suites: temporary directories, generated
// clustered data, brute-force ground truth and recall.
#pragma once

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace mnemo::testing {

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// n points of dimension d around `clusters` Gaussian centres; deterministic
// for a seed. Queries are drawn the same way (fresh noise).
struct Dataset {
  uint32_t dim = 0;
  std::vector<float> base;     // n * dim
  std::vector<float> queries;  // q * dim
  size_t n() const { return base.size() / dim; }
  size_t q() const { return queries.size() / dim; }
};
Dataset MakeClustered(size_t n, size_t q, uint32_t dim, size_t clusters, uint64_t seed);

// Exact k nearest neighbours (positions in base) by FAISS IndexFlat.
std::vector<int64_t> BruteForce(const Dataset& d, uint32_t k, bool inner_product = false);

// Mean fraction of the true k neighbours found, per query.
double RecallAtK(const std::vector<int64_t>& found, const std::vector<int64_t>& truth,
                 size_t q, uint32_t k);

// Ids 0..n-1, as the engine takes them.
std::vector<uint64_t> Iota(size_t n, uint64_t start = 0);

engine::EngineOptions OptionsFor(const std::string& dir);

// `length` bytes at `offset` of the file at `path`, read as another process
// on this machine would (open by path, pread); empty when that fails.
std::string ReadFileRange(const std::string& path, uint64_t offset, uint64_t length);

// A GoogleTest name for a string parameter ("IVF16,PQ4" -> "IVF16_PQ4").
struct FactoryName {
  template <typename Info>
  std::string operator()(const Info& info) const {
    std::string s = info.param;
    for (char& ch : s) {
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    }
    return s;
  }
};

}  // namespace mnemo::testing

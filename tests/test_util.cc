#include "tests/test_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <unordered_set>

#include <faiss/IndexFlat.h>
#include <faiss/utils/distances.h>

namespace mnemo::testing {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base ? base : "/tmp") + "/mnemo-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Dataset MakeClustered(size_t n, size_t q, uint32_t dim, size_t clusters, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> centres(clusters * dim);
  for (auto& c : centres) c = normal(rng) * 2.f;
  std::uniform_int_distribution<size_t> pick(0, clusters - 1);
  auto fill = [&](std::vector<float>* out, size_t rows) {
    out->resize(rows * dim);
    for (size_t i = 0; i < rows; ++i) {
      const float* c = &centres[pick(rng) * dim];
      for (uint32_t j = 0; j < dim; ++j) (*out)[i * dim + j] = c[j] + normal(rng);
    }
  };
  Dataset d;
  d.dim = dim;
  fill(&d.base, n);
  fill(&d.queries, q);
  return d;
}

std::vector<int64_t> BruteForce(const Dataset& d, uint32_t k, bool inner_product) {
  std::unique_ptr<faiss::Index> flat;
  if (inner_product) flat = std::make_unique<faiss::IndexFlatIP>(d.dim);
  else flat = std::make_unique<faiss::IndexFlatL2>(d.dim);
  flat->add(faiss::Index::idx_t(d.n()), d.base.data());
  std::vector<float> dist(d.q() * k);
  std::vector<faiss::Index::idx_t> labels(d.q() * k);
  flat->search(faiss::Index::idx_t(d.q()), d.queries.data(), k, dist.data(), labels.data());
  if (!inner_product) {
    // FAISS ranks a batch by BLAS's |q|^2 + |y|^2 - 2 q.y, which can swap
    // near-equal neighbours; the truth is ranked by the exact distance.
    for (size_t i = 0; i < d.q(); ++i) {
      auto first = labels.begin() + i * k;
      auto exact = [&](faiss::Index::idx_t l) {
        return faiss::fvec_L2sqr(&d.queries[i * d.dim], &d.base[size_t(l) * d.dim], d.dim);
      };
      std::stable_sort(first, first + k, [&](auto a, auto b) { return exact(a) < exact(b); });
    }
  }
  return std::vector<int64_t>(labels.begin(), labels.end());
}

double RecallAtK(const std::vector<int64_t>& found, const std::vector<int64_t>& truth,
                 size_t q, uint32_t k) {
  double hits = 0;
  for (size_t i = 0; i < q; ++i) {
    std::unordered_set<int64_t> t(truth.begin() + i * k, truth.begin() + (i + 1) * k);
    for (size_t j = 0; j < k; ++j) hits += t.count(found[i * k + j]);
  }
  return hits / double(q * k);
}

std::vector<uint64_t> Iota(size_t n, uint64_t start) {
  std::vector<uint64_t> ids(n);
  std::iota(ids.begin(), ids.end(), start);
  return ids;
}

std::string ReadFileRange(const std::string& path, uint64_t offset, uint64_t length) {
  std::string out(length, '\0');
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  const bool whole = ::pread(fd, out.data(), length, off_t(offset)) == ssize_t(length);
  ::close(fd);
  return whole ? out : std::string();
}

engine::EngineOptions OptionsFor(const std::string& dir) {
  engine::EngineOptions o;
  o.data_dir = dir;
  return o;
}

}  // namespace mnemo::testing

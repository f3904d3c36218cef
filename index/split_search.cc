#include "index/split_search.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <mutex>
#include <numeric>
#include <vector>

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/utils/distances.h>
#include <omp.h>

namespace mnemo::index::split {
namespace {

using faiss_idx = faiss::Index::idx_t;

// Admits row i of a range that starts at `first` when `sel` admits first + i.
struct ShiftedSelector final : faiss::IDSelector {
  ShiftedSelector(const faiss::IDSelector* s, int64_t f) : sel(s), first(f) {}
  bool is_member(faiss_idx id) const override { return sel->is_member(first + id); }
  const faiss::IDSelector* sel;
  int64_t first;
};

// Runs body(0..tasks-1) on up to `threads` OpenMP threads; the first
// exception any task threw is rethrown here, after the region.
template <typename Body>
void ParallelFor(size_t tasks, int threads, Body&& body) {
  std::exception_ptr error;
  std::mutex mu;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t t = 0; t < int64_t(tasks); ++t) {
    try {
      body(size_t(t));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace

void MergeBest(faiss::MetricType metric, size_t n, size_t m, const float* cand_d,
               const int64_t* cand_l, size_t k, float* distances, int64_t* labels) {
  const bool larger_is_better = metric == faiss::METRIC_INNER_PRODUCT;
  const float missing =
      larger_is_better ? -std::numeric_limits<float>::max() : std::numeric_limits<float>::max();
  std::vector<size_t> order(m);
  for (size_t q = 0; q < n; ++q) {
    const float* d = cand_d + q * m;
    const int64_t* l = cand_l + q * m;
    auto better = [&](size_t a, size_t b) {
      if ((l[a] < 0) != (l[b] < 0)) return l[b] < 0;
      if (d[a] != d[b]) return larger_is_better ? d[a] > d[b] : d[a] < d[b];
      return l[a] < l[b];
    };
    std::iota(order.begin(), order.end(), size_t{0});
    const size_t found = std::min(k, m);
    std::partial_sort(order.begin(), order.begin() + found, order.end(), better);
    for (size_t j = 0; j < k; ++j) {
      const bool have = j < found && l[order[j]] >= 0;
      distances[q * k + j] = have ? d[order[j]] : missing;
      labels[q * k + j] = have ? l[order[j]] : -1;
    }
  }
}

int ThreadsFor(size_t bytes, int max_threads) {
  const size_t worth = bytes / kMinBytesPerThread;
  return int(std::clamp<size_t>(worth, 1, size_t(std::max(max_threads, 1))));
}

void FlatSearch(faiss::MetricType metric, const float* y, size_t ny, size_t d, size_t n,
                const float* x, size_t k, const faiss::IDSelector* sel, int max_threads,
                float* distances, int64_t* labels, const float* y_norms) {
  const int threads = ThreadsFor(n * ny * d * sizeof(float), max_threads);
  const size_t parts = size_t(threads);
  // Candidates: for each query, k per range, the ranges side by side.
  std::vector<float> cand_d(n * parts * k);
  std::vector<int64_t> cand_l(n * parts * k);
  ParallelFor(parts, threads, [&](size_t part) {
    const size_t first = ny * part / parts, rows = ny * (part + 1) / parts - first;
    std::vector<float> dist(n * k);
    std::vector<int64_t> lab(n * k);
    ShiftedSelector shifted(sel, int64_t(first));
    const faiss::IDSelector* s = sel != nullptr ? &shifted : nullptr;
    const float* block = y + first * d;
    if (metric == faiss::METRIC_INNER_PRODUCT) {
      faiss::knn_inner_product(x, block, d, n, rows, k, dist.data(), lab.data(), s);
    } else {
      faiss::knn_L2sqr(x, block, d, n, rows, k, dist.data(), lab.data(),
                       y_norms != nullptr ? y_norms + first : nullptr, s);
    }
    for (size_t q = 0; q < n; ++q) {
      for (size_t j = 0; j < k; ++j) {
        const size_t at = (q * parts + part) * k + j;
        cand_d[at] = dist[q * k + j];
        cand_l[at] = lab[q * k + j] < 0 ? -1 : lab[q * k + j] + int64_t(first);
      }
    }
  });
  MergeBest(metric, n, parts * k, cand_d.data(), cand_l.data(), k, distances, labels);
}

void IvfSearch(const faiss::IndexIVF& ivf, size_t n, const float* x, size_t k, size_t nprobe,
               const faiss::IDSelector* sel, int max_threads, float* distances, int64_t* labels,
               const float* centroid_norms) {
  const size_t d = size_t(ivf.d);
  nprobe = std::clamp<size_t>(nprobe, 1, ivf.nlist);
  // The coarse quantizer: which lists each query probes.
  std::vector<float> coarse_d(n * nprobe);
  std::vector<int64_t> lists(n * nprobe);
  auto* centroids = dynamic_cast<const faiss::IndexFlat*>(ivf.quantizer);
  if (centroids != nullptr && (centroids->metric_type == faiss::METRIC_L2 ||
                               centroids->metric_type == faiss::METRIC_INNER_PRODUCT)) {
    FlatSearch(centroids->metric_type, centroids->get_xb(), size_t(centroids->ntotal), d, n, x,
               nprobe, nullptr, max_threads, coarse_d.data(), lists.data(),
               centroids->metric_type == faiss::METRIC_L2 ? centroid_norms : nullptr);
  } else {
    ivf.quantizer->search(faiss_idx(n), x, faiss_idx(nprobe), coarse_d.data(),
                          reinterpret_cast<faiss_idx*>(lists.data()));
  }
  // Then each probed list on its own: task t is query t / nprobe's list t % nprobe.
  const size_t tasks = n * nprobe;
  const size_t listed = size_t(ivf.ntotal) / std::max<size_t>(ivf.nlist, 1);
  const int threads =
      std::min(ThreadsFor(tasks * listed * ivf.code_size, max_threads), int(tasks));
  std::vector<float> cand_d(tasks * k);
  std::vector<int64_t> cand_l(tasks * k);
  ParallelFor(tasks, threads, [&](size_t t) {
    faiss::SearchParametersIVF params;
    params.nprobe = 1;
    params.sel = const_cast<faiss::IDSelector*>(sel);
    ivf.search_preassigned(1, x + (t / nprobe) * d, faiss_idx(k),
                           reinterpret_cast<const faiss_idx*>(&lists[t]), &coarse_d[t],
                           &cand_d[t * k], reinterpret_cast<faiss_idx*>(&cand_l[t * k]),
                           /*store_pairs=*/false, &params);
  });
  MergeBest(ivf.metric_type, n, nprobe * k, cand_d.data(), cand_l.data(), k, distances, labels);
}

}  // namespace mnemo::index::split

#include "index/hnsw_search.h"

#include <memory>

#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissAssert.h>
#include <faiss/utils/Heap.h>

namespace mnemo::index {
namespace {

// HNSW keeps the smallest distances; an inner-product index's largest
// similarities are the smallest negated ones.
class NegatedDistance final : public faiss::DistanceComputer {
 public:
  explicit NegatedDistance(faiss::DistanceComputer* inner) : inner_(inner) {}
  void set_query(const float* x) override { inner_->set_query(x); }
  float operator()(idx_t i) override { return -(*inner_)(i); }
  float symmetric_dis(idx_t i, idx_t j) override { return -inner_->symmetric_dis(i, j); }

 private:
  std::unique_ptr<faiss::DistanceComputer> inner_;
};

// This thread's visited table, at least `size` entries.
faiss::VisitedTable& ThreadVisitedTable(size_t size) {
  thread_local std::unique_ptr<faiss::VisitedTable> table;
  if (!table || table->visited.size() < size) table = std::make_unique<faiss::VisitedTable>(int(size));
  return *table;
}

}  // namespace

void HnswSearchHere(const faiss::IndexHNSW& index, size_t n, const float* x, size_t k,
                    const faiss::SearchParametersHNSW& params, float* distances,
                    faiss::Index::idx_t* labels) {
  FAISS_THROW_IF_NOT_MSG(index.storage != nullptr, "HNSW index without storage");
  const bool similarity = index.metric_type == faiss::METRIC_INNER_PRODUCT;
  std::unique_ptr<faiss::DistanceComputer> dis(index.storage->get_distance_computer());
  if (similarity) dis = std::make_unique<NegatedDistance>(dis.release());
  faiss::VisitedTable& visited = ThreadVisitedTable(size_t(index.ntotal));
  for (size_t i = 0; i < n; ++i) {
    float* d = distances + i * k;
    faiss::Index::idx_t* l = labels + i * k;
    dis->set_query(x + i * size_t(index.d));
    faiss::maxheap_heapify(k, d, l);
    const int before = visited.visno;
    index.hnsw.search(*dis, int(k), l, d, visited, &params);
    if (visited.visno == before) visited.advance();  // FAISS 1.7.3 advances it itself
    faiss::maxheap_reorder(k, d, l);
  }
  if (similarity) {
    for (size_t i = 0; i < n * k; ++i) distances[i] = -distances[i];
  }
}

}  // namespace mnemo::index

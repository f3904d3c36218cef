#include "index/random_reads.h"

#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>

namespace mnemo::index {

std::vector<ArraySpan> RandomlyReadArrays(const faiss::Index& index) {
  std::vector<ArraySpan> out;
  auto add_codes = [&](const faiss::Index* rows) {
    if (auto* flat = dynamic_cast<const faiss::IndexFlatCodes*>(rows)) {
      out.push_back({flat->codes.data(), flat->codes.capacity()});
    }
  };
  add_codes(&index);
  if (auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(&index)) {
    add_codes(hnsw->storage);
    const auto& neighbors = hnsw->hnsw.neighbors;
    out.push_back({neighbors.data(), neighbors.capacity() * sizeof(neighbors[0])});
  }
  return out;
}

}  // namespace mnemo::index

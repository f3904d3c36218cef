// The arrays of a FAISS index that its searches read at random, for the
// caller to put on huge pages (common/huge_pages.h): a flat index's codes
// (Flat, SQ, PQ) and an HNSW's storage codes and neighbour lists. IVF's
// lists are many small arrays, each scanned in order, and are not listed.
//
// The spans cover each array's capacity (where it grows in place) and stay
// valid until the index next changes.
#pragma once

#include <cstddef>
#include <vector>

namespace faiss {
struct Index;
}

namespace mnemo::index {

struct ArraySpan {
  const void* data;
  size_t bytes;
};

std::vector<ArraySpan> RandomlyReadArrays(const faiss::Index& index);

}  // namespace mnemo::index

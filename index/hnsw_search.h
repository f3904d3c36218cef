// HnswSearchHere: HNSW queries searched one after another on the calling
// thread, with no OpenMP team and no per-call visited table.
//
// FAISS's IndexHNSW::search opens an OpenMP region even for one query and
// gives each of its threads a fresh visited table: an allocation and a
// memset of one byte per vector in the index (100 KB for 100k vectors) per
// call. A batch of thousands pays that once per thread; a server that
// searches queries as they arrive, one or two per call, paid it per query
// (1-2% of an HNSW32 search of 100k x 128 floats). Here each thread keeps
// one table for all its searches (FAISS's own table, advanced between
// searches; it is cleared only every 250 searches), sized to the largest
// index the thread has searched.
//
// The search itself is FAISS's HNSW::search with the index's own storage
// distances (negated for inner product, as IndexHNSW does), so results are
// FAISS's bit for bit.
//
// Thread-safety: reads the index only; the caller keeps it from changing
// (VectorIndex's reader lock) and sets hnsw.efSearch, which FAISS 1.7.3
// reads from the index itself. FAISS errors are thrown.
#pragma once

#include <cstddef>

#include <faiss/IndexHNSW.h>

namespace mnemo::index {

// The k nearest to each of n queries x (n * index.d floats) in `index`;
// distances and labels are n * k, missing results label -1. `params` may
// carry an IDSelector (sel).
void HnswSearchHere(const faiss::IndexHNSW& index, size_t n, const float* x, size_t k,
                    const faiss::SearchParametersHNSW& params, float* distances,
                    faiss::Index::idx_t* labels);

}  // namespace mnemo::index

// SplitSearch: a search of a few queries spread over OpenMP threads.
//
// FAISS parallelises a search over its queries, so a lone query runs on one
// core however many are idle: a flat scan of 100k x 128 floats takes
// milliseconds on one core, an IVF1024 search with 16 probes a large part
// of one. A server
// with nothing else to do splits such a query instead: a flat scan by ranges
// of rows, an IVF search by probed lists (after its coarse quantizer, itself
// a flat scan, split by ranges of centroids). Every candidate FAISS would
// look at is looked at, with the same distance code, so the results equal an
// unsplit search's, up to the order of equal distances.
//
// Each function picks how many of `max_threads` threads the work is worth
// (ThreadsFor): a team's start costs microseconds, so small scans stay whole.
// Missing results are label -1, as in FAISS.
//
// Thread-safety: reads the data only; may run beside other searches. FAISS
// errors are thrown (VectorIndex's Guard turns them into a Status); nothing
// throws out of an OpenMP region.
#pragma once

#include <cstddef>
#include <cstdint>

#include <faiss/MetricType.h>

namespace faiss {
struct IDSelector;
struct IndexIVF;
}  // namespace faiss

namespace mnemo::index::split {

// Threads worth starting for `bytes` of vectors or codes to scan: one per
// kMinBytesPerThread, at least 1, at most max_threads.
inline constexpr size_t kMinBytesPerThread = size_t{64} << 10;
int ThreadsFor(size_t bytes, int max_threads);

// The k nearest of ny float rows `y` (row-major, dim d) to each of n queries
// x, by L2 or inner product; `sel` (may be null) admits rows by their number.
// distances and labels are n * k. y_norms: the rows' squared norms for L2,
// or null (FAISS then computes those it needs).
void FlatSearch(faiss::MetricType metric, const float* y, size_t ny, size_t d, size_t n,
                const float* x, size_t k, const faiss::IDSelector* sel, int max_threads,
                float* distances, int64_t* labels, const float* y_norms = nullptr);

// The best k of `m` candidates per query (n rows of m, label -1: none):
// found ones before missing ones, then by distance, then by label. Missing
// results are label -1 with FAISS's padding distance.
void MergeBest(faiss::MetricType metric, size_t n, size_t m, const float* cand_d,
               const int64_t* cand_l, size_t k, float* distances, int64_t* labels);

// IVF search of n queries probing nprobe lists each; `sel` (may be null)
// admits the stored ids; centroid_norms: an L2 quantizer's squared norms, or null.
void IvfSearch(const faiss::IndexIVF& ivf, size_t n, const float* x, size_t k, size_t nprobe,
               const faiss::IDSelector* sel, int max_threads, float* distances, int64_t* labels,
               const float* centroid_norms = nullptr);

}  // namespace mnemo::index::split

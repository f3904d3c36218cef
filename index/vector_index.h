// VectorIndex: one FAISS index built from a factory string, labelled by slots.
//
// A slot is a dense int64 label the engine assigns; the engine maps slots to
// client ids, groups and liveness (engine/slot_table.h). Deleted slots stay in
// the index and are hidden from searches by a SlotFilter until compaction.
//
// Codes: for quantized indexes (IVF*, PQ, SQ) Encode() returns the FAISS
// standalone code of each vector (for IVF: list number + residual code). The
// engine stores these codes, and AddCodes() puts them back into an index with
// the same trained state without re-encoding, which is what makes recovery
// cheap. Flat indexes store the raw vectors themselves and HNSW indexes keep a
// graph that is snapshotted whole; for both, stores_codes() is false.
//
// Thread-safety: const methods may run concurrently with each other; a
// non-const method needs exclusive access (the engine holds a
// reader/writer lock). Errors from FAISS come back as Status, never thrown:
// InvalidArgument for a factory string or serialized bytes FAISS refuses,
// FailedPrecondition for training data it cannot use, ResourceExhausted when
// memory runs out, Internal for anything it throws while adding, encoding,
// searching or serializing (the inputs were checked before).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/rw_lock.h"
#include "common/status.h"
#include "index/index_spec.h"

namespace faiss {
struct Index;
struct IndexFlat;
}

namespace mnemo::index {

// Decides which slots a search may return.
class SlotFilter {
 public:
  virtual ~SlotFilter() = default;
  virtual bool Contains(int64_t slot) const = 0;
};

struct SearchParams {
  uint32_t k = 10;
  // IVF: lists probed (0: the index's default, FAISS's nprobe = 1).
  uint32_t nprobe = 0;
  // HNSW: efSearch (0: FAISS's default, 16).
  uint32_t ef = 0;
  // Not owned; nullptr admits every slot.
  const SlotFilter* filter = nullptr;
  // OpenMP threads for this call (0: see SearchThreads in the .cc).
  uint32_t threads = 0;
};

class VectorIndex {
 public:
  enum class Kind { kFlat, kFlatCodes, kIvf, kHnsw };

  // An empty index from spec.factory; InvalidArgument when FAISS rejects the
  // string or mnemo does not support the index type it builds.
  static Result<std::unique_ptr<VectorIndex>> Create(const IndexSpec& spec);
  // An index from Serialize() bytes of an index built with the same spec.
  static Result<std::unique_ptr<VectorIndex>> Deserialize(const IndexSpec& spec,
                                                          std::string_view bytes);
  ~VectorIndex();

  // True when one call for many queries costs less than a call for each:
  // an exhaustive scan of floats (Flat), which FAISS runs as one matrix
  // product from 20 queries a call. HNSW's graph, IVF's lists and scalar
  // quantizer scans are searched query by query (IVF's coarse quantizer
  // takes a matrix product too, from 20 queries, which single-query
  // clients rarely gather).
  static bool BatchingSavesWork(const IndexSpec& spec);

  Kind kind() const { return kind_; }
  const IndexSpec& spec() const { return spec_; }
  bool is_trained() const;
  // HNSW: the efConstruction new vectors are linked with; 0 for the others.
  uint32_t ef_construction() const;
  // Vectors needed to train well (FAISS warns below 39 points per centroid).
  size_t min_training_vectors() const;
  // Vectors in the index, deleted slots included.
  int64_t size() const;

  Status Train(size_t n, const float* x);

  bool stores_codes() const { return kind_ == Kind::kFlatCodes || kind_ == Kind::kIvf; }
  // Bytes per stored code; meaningful when stores_codes().
  size_t code_size() const;
  // Encodes n vectors into n * code_size() bytes. Requires is_trained().
  Status Encode(size_t n, const float* x, uint8_t* codes) const;
  // IVF-Flat's code is the list number followed by the vector itself, so
  // only the list number is stored, and AddCodes takes the vectors to rebuild
  // the rest by copying (the costly part of encoding, the assignment, is
  // kept). True when AddCodes needs `vectors`.
  bool codes_need_vectors() const { return split_codes_; }

  // Adds n vectors labelled first_slot .. first_slot + n - 1; first_slot must
  // equal size() (slots are positions for Flat and HNSW). When codes is not
  // null they are Encode()'s output for x and are used instead of encoding.
  Status Add(size_t n, const float* x, const uint8_t* codes, int64_t first_slot);
  // Adds codes made by Encode() with this trained state; `vectors` (the raw
  // n * dim floats) only when codes_need_vectors(), else may be null.
  Status AddCodes(size_t n, const uint8_t* codes, const float* vectors, int64_t first_slot);

  // distances and slots are n * params.k; missing results are slot -1.
  Status Search(size_t n, const float* queries, const SearchParams& params,
                float* distances, int64_t* slots) const;

  // The whole index (trained state and contents) as bytes.
  Result<std::string> Serialize() const;
  // Approximate bytes of memory the index holds.
  size_t MemoryBytes() const;

 private:
  VectorIndex(IndexSpec spec, std::unique_ptr<faiss::Index> index, Kind kind);
  // x itself, or a normalized copy in *buf for the cosine metric.
  const float* Prepare(size_t n, const float* x, std::unique_ptr<float[]>* buf) const;

  Status SearchHnsw(size_t n, const float* q, const SearchParams& p, float* distances,
                    int64_t* slots) const;
  // The rows whose squared norms norms_ caches: a flat L2 index's vectors or
  // an IVF's L2 centroids; nullptr for other indexes.
  const faiss::IndexFlat* NormedRows() const;
  // Brings norms_ up to NormedRows() after training or adding.
  void SyncNorms();
  // Puts the arrays searches read at random on huge pages (see
  // common/huge_pages.h) after they were built, loaded or reallocated.
  void SyncHugePages();
  const float* norms() const { return norms_.empty() ? nullptr : norms_.data(); }

  const IndexSpec spec_;
  std::unique_ptr<faiss::Index> index_;
  Kind kind_;
  bool split_codes_ = false;  // see codes_need_vectors()
  // FAISS computes L2 distances for 2+ queries with BLAS, from the queries'
  // and the rows' squared norms; given none, it recomputes the rows' norms
  // (as costly as a scalar scan of them) on every call. A server's batches
  // are small, so the rows' norms are kept here instead (4 bytes a row).
  std::vector<float> norms_;
  // The buffers SyncHugePages has advised and the index still uses
  // (compared, never dereferenced).
  std::vector<const void*> huge_buffers_;
  // FAISS 1.7.3 sizes the HNSW candidate queue from the index's own
  // hnsw.efSearch and ignores SearchParametersHNSW::efSearch there, so a
  // search must set the member: shared while it has the wanted value,
  // exclusive to change it.
  mutable RwLock ef_mu_;
};

}  // namespace mnemo::index

#include "index/vector_index.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <faiss/IndexFlat.h>
#include <faiss/IndexFlatCodes.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPQ.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/HNSW.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>
#include <omp.h>

#include "common/huge_pages.h"
#include "index/hnsw_search.h"
#include "index/random_reads.h"
#include "index/split_search.h"

namespace mnemo::index {
namespace {

using faiss_idx = faiss::Index::idx_t;

// FAISS reports misuse by throwing; mnemo reports it as a Status. Whose
// misuse decides the code: a factory string or stored bytes that FAISS
// refuses are the caller's (kInvalidArgument, Guard's default); training on
// data FAISS cannot use is the collection's state (kFailedPrecondition);
// anything FAISS throws while adding, encoding, searching or serializing
// inputs mnemo has already checked is the server's (kInternal).
template <typename Fn>
Status Guard(std::string_view what, Fn&& fn, StatusCode faiss_code = StatusCode::kInvalidArgument) {
  try {
    fn();
    return Status::OK();
  } catch (const faiss::FaissException& e) {
    std::string msg = e.msg;
    while (!msg.empty() && msg.back() == '\0') msg.pop_back();  // FAISS counts the NUL
    return Status(faiss_code, std::string(what) + ": " + msg);
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted(std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return Status::Internal(std::string(what) + ": " + e.what());
  }
}

faiss::MetricType FaissMetric(Metric m) {
  return m == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT;
}

std::string StripIdMap(std::string_view factory) {
  for (std::string_view prefix : {"IDMap2,", "IDMap,"}) {
    if (factory.substr(0, prefix.size()) == prefix) return std::string(factory.substr(prefix.size()));
  }
  return std::string(factory);
}

Result<VectorIndex::Kind> Classify(const faiss::Index* index, std::string_view factory) {
  if (dynamic_cast<const faiss::IndexIVF*>(index)) return VectorIndex::Kind::kIvf;
  if (dynamic_cast<const faiss::IndexHNSW*>(index)) return VectorIndex::Kind::kHnsw;
  if (dynamic_cast<const faiss::IndexFlat*>(index)) return VectorIndex::Kind::kFlat;
  // Flat scans must honour the slot filter (deletes, groups): FAISS 1.7.3's
  // IndexPQ and IndexLSH cannot, the scalar quantizer can.
  if (dynamic_cast<const faiss::IndexScalarQuantizer*>(index)) return VectorIndex::Kind::kFlatCodes;
  if (dynamic_cast<const faiss::IndexPQ*>(index)) {
    return Status::InvalidArgument("index '" + std::string(factory) +
                                   "' cannot filter deleted entries; use 'IVF1," +
                                   std::string(factory) + "' for a flat PQ scan");
  }
  return Status::InvalidArgument(
      "index '" + std::string(factory) +
      "' is not supported (supported: Flat, SQ8/SQ4/SQfp16, IVFn,<Flat|PQm|SQ8>, HNSWm[,<Flat|PQm|SQ8>])");
}

// Adapts the engine's SlotFilter to FAISS.
struct FilterSelector final : faiss::IDSelector {
  explicit FilterSelector(const SlotFilter* f) : filter(f) {}
  bool is_member(faiss_idx id) const override { return filter->Contains(id); }
  const SlotFilter* filter;
};

// Bounds checked on the factory string itself, before FAISS allocates
// anything: "IVF99999999,PQ64" would spend many seconds and gigabytes on
// empty inverted lists, "HNSW100000" makes every insert crawl.
constexpr uint64_t kMaxIvfLists = uint64_t(1) << 20;
constexpr uint64_t kMaxHnswM = 256;

Status CheckFactoryBounds(const std::string& factory) {
  size_t at = 0;
  while (at <= factory.size()) {
    size_t end = factory.find(',', at);
    if (end == std::string::npos) end = factory.size();
    const std::string_view part(factory.data() + at, end - at);
    for (auto [prefix, limit] : {std::pair<std::string_view, uint64_t>{"IVF", kMaxIvfLists},
                                 {"HNSW", kMaxHnswM}}) {
      if (part.substr(0, prefix.size()) != prefix) continue;
      uint64_t value = 0;
      size_t i = prefix.size();
      for (; i < part.size() && std::isdigit(static_cast<unsigned char>(part[i])); ++i) {
        value = std::min<uint64_t>(value * 10 + uint64_t(part[i] - '0'), limit + 1);
      }
      if (i > prefix.size() && value > limit) {
        return Status::InvalidArgument("index '" + factory + "': " + std::string(prefix) +
                                       " takes at most " + std::to_string(limit) +
                                       (prefix == "IVF" ? " lists" : " links per vector"));
      }
    }
    at = end + 1;
  }
  return Status::OK();
}

void SetEfConstruction(faiss::Index* index, const IndexSpec& spec) {
  if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index)) {
    hnsw->hnsw.efConstruction =
        int(spec.ef_construction ? spec.ef_construction : kDefaultEfConstruction);
  }
}

size_t PointsFor(size_t centroids) { return 39 * centroids; }

constexpr int kDefaultEfSearch = 16;  // FAISS's default

// FAISS computes exact distances with BLAS from 20 queries per call; below,
// with a scalar loop that Debian's generic build runs slowly. A server's
// batches are small (a handful of clients' single queries, or one), and for
// them BLAS is faster, as long as the rows' norms need not be recomputed per
// call: VectorIndex keeps them (norms_), so even a lone query goes through
// BLAS. Flat scans and IVF's coarse quantizer both go through here. The knob
// is FAISS's, process-wide; set once, before the first index.
void TuneFaissOnce() {
  static std::once_flag once;
  std::call_once(once, [] { faiss::distance_compute_blas_threshold = 1; });
}

// BLAS finds a flat index's nearest rows from |q|^2 + |y|^2 - 2 q.y, which
// loses the digits of a small distance between large vectors (a near
// duplicate 0.04 away measured 0.040008). The k found are few: their
// distances are computed again directly, and the k put back in order.
void ExactL2(const faiss::IndexFlat& rows, size_t n, const float* q, size_t k, float* distances,
             int64_t* labels) {
  const size_t d = size_t(rows.d);
  std::vector<float> exact(distances, distances + n * k);
  std::vector<int64_t> found(labels, labels + n * k);
  for (size_t i = 0; i < n * k; ++i) {
    if (found[i] >= 0) exact[i] = faiss::fvec_L2sqr(q + i / k * d, rows.get_xb() + found[i] * d, d);
  }
  split::MergeBest(faiss::METRIC_L2, n, k, exact.data(), found.data(), k, distances, labels);
}

}  // namespace

VectorIndex::VectorIndex(IndexSpec spec, std::unique_ptr<faiss::Index> index, Kind kind)
    : spec_(std::move(spec)),
      index_(std::move(index)),
      kind_(kind),
      split_codes_(dynamic_cast<const faiss::IndexIVFFlat*>(index_.get()) != nullptr) {
  TuneFaissOnce();
  SyncNorms();
  SyncHugePages();
}

const faiss::IndexFlat* VectorIndex::NormedRows() const {
  const faiss::Index* rows = index_.get();
  if (kind_ == Kind::kIvf) rows = static_cast<const faiss::IndexIVF*>(rows)->quantizer;
  else if (kind_ != Kind::kFlat) return nullptr;
  auto* flat = dynamic_cast<const faiss::IndexFlat*>(rows);
  return flat != nullptr && flat->metric_type == faiss::METRIC_L2 ? flat : nullptr;
}

void VectorIndex::SyncNorms() {
  const faiss::IndexFlat* rows = NormedRows();
  if (rows == nullptr) return;
  const size_t want = size_t(rows->ntotal), d = size_t(rows->d);
  if (want <= norms_.size()) return;  // rows are only ever appended
  const size_t from = norms_.size();
  norms_.resize(want);
  faiss::fvec_norms_L2sqr(&norms_[from], rows->get_xb() + from * d, d, want - from);
}

void VectorIndex::SyncHugePages() {
  // A buffer once advised stays advised, its later pages fault in huge; an
  // array that grew into a new buffer is advised (and collapsed) again.
  std::vector<const void*> advised;
  for (const ArraySpan& array : RandomlyReadArrays(*index_)) {
    const bool known =
        std::find(huge_buffers_.begin(), huge_buffers_.end(), array.data) != huge_buffers_.end();
    if (known || AdviseHugePages(array.data, array.bytes) != HugePages::kTooSmall) {
      advised.push_back(array.data);
    }
  }
  huge_buffers_ = std::move(advised);
}

VectorIndex::~VectorIndex() = default;

bool VectorIndex::BatchingSavesWork(const IndexSpec& spec) { return StripIdMap(spec.factory) == "Flat"; }

Result<std::unique_ptr<VectorIndex>> VectorIndex::Create(const IndexSpec& spec) {
  if (spec.dim == 0 || spec.dim > kMaxDim) {
    return Status::InvalidArgument("dimension must be in 1.." + std::to_string(kMaxDim) +
                                   ", got " + std::to_string(spec.dim));
  }
  std::string factory = StripIdMap(spec.factory);
  if (factory.find("IDMap") != std::string::npos) {
    return Status::InvalidArgument("index '" + spec.factory + "': IDMap may only be a prefix");
  }
  MNEMO_RETURN_IF_ERROR(CheckFactoryBounds(factory));
  if (spec.ef_construction > kMaxEfConstruction) {
    return Status::InvalidArgument("ef_construction must be at most " +
                                   std::to_string(kMaxEfConstruction) + ", got " +
                                   std::to_string(spec.ef_construction));
  }
  std::unique_ptr<faiss::Index> index;
  MNEMO_RETURN_IF_ERROR(Guard("index '" + spec.factory + "'", [&] {
    index.reset(faiss::index_factory(int(spec.dim), factory.c_str(), FaissMetric(spec.metric)));
  }));
  MNEMO_ASSIGN_OR_RETURN(Kind kind, Classify(index.get(), spec.factory));
  SetEfConstruction(index.get(), spec);
  return std::unique_ptr<VectorIndex>(new VectorIndex(spec, std::move(index), kind));
}

Result<std::unique_ptr<VectorIndex>> VectorIndex::Deserialize(const IndexSpec& spec,
                                                              std::string_view bytes) {
  std::unique_ptr<faiss::Index> index;
  Status st = Guard("cannot load index", [&] {
    faiss::VectorIOReader reader;
    reader.data.assign(bytes.begin(), bytes.end());
    index.reset(faiss::read_index(&reader));
  });
  if (!st.ok()) return Status::Corruption(st.message());
  if (index->d != int(spec.dim)) {
    return Status::Corruption("stored index has dimension " + std::to_string(index->d) +
                              ", expected " + std::to_string(spec.dim));
  }
  MNEMO_ASSIGN_OR_RETURN(Kind kind, Classify(index.get(), spec.factory));
  // A graph saved before the collection's record had an efConstruction
  // (FAISS's 40) goes on with the collection's: later inserts link better.
  SetEfConstruction(index.get(), spec);
  return std::unique_ptr<VectorIndex>(new VectorIndex(spec, std::move(index), kind));
}

uint32_t VectorIndex::ef_construction() const {
  auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(index_.get());
  return hnsw ? uint32_t(hnsw->hnsw.efConstruction) : 0;
}

bool VectorIndex::is_trained() const { return index_->is_trained; }
int64_t VectorIndex::size() const { return index_->ntotal; }

size_t VectorIndex::min_training_vectors() const {
  if (index_->is_trained) return 0;
  size_t need = 1;
  const faiss::ProductQuantizer* pq = nullptr;
  if (auto* ivf = dynamic_cast<const faiss::IndexIVF*>(index_.get())) {
    need = PointsFor(ivf->nlist);
    if (auto* ivfpq = dynamic_cast<const faiss::IndexIVFPQ*>(ivf)) pq = &ivfpq->pq;
  } else if (auto* hnsw = dynamic_cast<const faiss::IndexHNSW*>(index_.get())) {
    if (auto* spq = dynamic_cast<const faiss::IndexPQ*>(hnsw->storage)) pq = &spq->pq;
  }
  if (pq != nullptr) need = std::max(need, PointsFor(pq->ksub));
  return need;
}

Status VectorIndex::Train(size_t n, const float* x) {
  std::unique_ptr<float[]> buf;
  const float* v = Prepare(n, x, &buf);
  MNEMO_RETURN_IF_ERROR(Guard("training failed", [&] { index_->train(faiss_idx(n), v); }, StatusCode::kFailedPrecondition));
  SyncNorms();
  SyncHugePages();
  return Status::OK();
}

size_t VectorIndex::code_size() const {
  if (split_codes_) return static_cast<const faiss::IndexIVF*>(index_.get())->coarse_code_size();
  return index_->sa_code_size();
}

Status VectorIndex::Encode(size_t n, const float* x, uint8_t* codes) const {
  if (!stores_codes()) return Status::Internal("index does not store codes");
  std::unique_ptr<float[]> buf;
  const float* v = Prepare(n, x, &buf);
  if (!split_codes_) {
    return Guard("encoding failed", [&] { index_->sa_encode(faiss_idx(n), v, codes); }, StatusCode::kInternal);
  }
  auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
  return Guard("encoding failed", [&] {
    std::vector<faiss_idx> lists(n);
    ivf->quantizer->assign(faiss_idx(n), v, lists.data());
    const size_t cs = ivf->coarse_code_size();
    for (size_t i = 0; i < n; ++i) ivf->encode_listno(lists[i], codes + i * cs);
  }, StatusCode::kInternal);
}

Status VectorIndex::Add(size_t n, const float* x, const uint8_t* codes, int64_t first_slot) {
  if (codes != nullptr && stores_codes()) return AddCodes(n, codes, x, first_slot);
  if (first_slot != index_->ntotal) {
    return Status::Internal("slot " + std::to_string(first_slot) + " added at position " +
                            std::to_string(index_->ntotal));
  }
  std::unique_ptr<float[]> buf;
  const float* v = Prepare(n, x, &buf);
  if (kind_ == Kind::kIvf) {
    std::vector<faiss_idx> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = first_slot + faiss_idx(i);
    return Guard("add failed", [&] { index_->add_with_ids(faiss_idx(n), v, ids.data()); }, StatusCode::kInternal);
  }
  MNEMO_RETURN_IF_ERROR(Guard("add failed", [&] { index_->add(faiss_idx(n), v); }, StatusCode::kInternal));
  SyncNorms();
  SyncHugePages();
  return Status::OK();
}

Status VectorIndex::AddCodes(size_t n, const uint8_t* codes, const float* vectors,
                             int64_t first_slot) {
  if (first_slot != index_->ntotal) {
    return Status::Internal("slot " + std::to_string(first_slot) + " added at position " +
                            std::to_string(index_->ntotal));
  }
  if (kind_ == Kind::kIvf) {
    auto* ivf = static_cast<faiss::IndexIVF*>(index_.get());
    std::vector<faiss_idx> ids(n);
    for (size_t i = 0; i < n; ++i) ids[i] = first_slot + faiss_idx(i);
    if (!split_codes_) {
      return Guard("add failed", [&] { ivf->add_sa_codes(faiss_idx(n), codes, ids.data()); }, StatusCode::kInternal);
    }
    if (vectors == nullptr) return Status::Internal("IVF-Flat codes need their vectors");
    // Rebuild the full code: list number, then the (prepared) vector.
    std::unique_ptr<float[]> buf;
    const float* v = Prepare(n, vectors, &buf);
    const size_t cs = ivf->coarse_code_size(), vs = size_t(ivf->d) * sizeof(float);
    std::vector<uint8_t> full(n * (cs + vs));
    for (size_t i = 0; i < n; ++i) {
      std::memcpy(&full[i * (cs + vs)], codes + i * cs, cs);
      std::memcpy(&full[i * (cs + vs) + cs], v + i * ivf->d, vs);
    }
    return Guard("add failed", [&] { ivf->add_sa_codes(faiss_idx(n), full.data(), ids.data()); }, StatusCode::kInternal);
  }
  if (kind_ == Kind::kFlatCodes || kind_ == Kind::kFlat) {
    auto* flat = static_cast<faiss::IndexFlatCodes*>(index_.get());
    MNEMO_RETURN_IF_ERROR(Guard("add failed", [&] {
      flat->codes.insert(flat->codes.end(), codes, codes + n * flat->code_size);
      flat->ntotal += faiss_idx(n);
    }, StatusCode::kInternal));
    SyncNorms();
    SyncHugePages();
    return Status::OK();
  }
  return Status::Internal("index does not take codes");
}

namespace {

// FAISS parallelises a search over its queries; for a handful of queries the
// OpenMP team costs more than it gives (and its spinning threads take the
// cores from the server's), so such calls run on the calling thread alone,
// unless SplitSearch spreads them over the data instead (see Search). A
// caller's own thread count wins. OpenMP's thread count is per thread, so
// this touches no other caller.
class SearchThreads {
 public:
  SearchThreads(size_t n, VectorIndex::Kind kind, uint32_t requested) {
    int want = int(requested);
    if (want == 0 && n < kMinParallelQueries &&
        (kind == VectorIndex::Kind::kIvf || kind == VectorIndex::Kind::kHnsw)) {
      want = 1;
    }
    if (want == 0 || want == omp_get_max_threads()) return;
    saved_ = omp_get_max_threads();
    omp_set_num_threads(want);
  }
  ~SearchThreads() {
    if (saved_ != 0) omp_set_num_threads(saved_);
  }

  static constexpr size_t kMinParallelQueries = 4;

 private:
  int saved_ = 0;
};

}  // namespace

Status VectorIndex::Search(size_t n, const float* queries, const SearchParams& p,
                           float* distances, int64_t* slots) const {
  std::unique_ptr<float[]> buf;
  const float* q = Prepare(n, queries, &buf);
  FilterSelector selector(p.filter);
  faiss::IDSelector* sel = p.filter != nullptr ? &selector : nullptr;
  static_assert(sizeof(int64_t) == sizeof(faiss_idx));
  // Searches that may have several cores (threads 0: a server's lone
  // batch) are split over the data: an IVF search of a few queries, where
  // FAISS would give each query one core, and a flat search of any number,
  // where FAISS's one BLAS call per block of rows runs on one core
  // (OPENBLAS_NUM_THREADS=1, see README "Threads") and only its top-k
  // step on the others. Split by rows, every core multiplies its share of
  // the rows by all the queries: the rows are read from memory once per
  // batch, not once per query or per core.
  const int team = p.threads == 0 ? omp_get_max_threads() : int(p.threads);
  if (team > 1 && (kind_ == Kind::kFlat ||
                   (kind_ == Kind::kIvf && n < SearchThreads::kMinParallelQueries))) {
    return Guard("search failed", [&] {
      if (kind_ == Kind::kFlat) {
        auto* flat = static_cast<const faiss::IndexFlat*>(index_.get());
        split::FlatSearch(flat->metric_type, flat->get_xb(), size_t(flat->ntotal), spec_.dim, n,
                          q, p.k, sel, team, distances, slots, norms());
        if (norms() != nullptr) ExactL2(*flat, n, q, p.k, distances, slots);
      } else {
        auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
        split::IvfSearch(*ivf, n, q, p.k, p.nprobe != 0 ? p.nprobe : ivf->nprobe, sel, team,
                         distances, slots, norms());
      }
    }, StatusCode::kInternal);
  }
  SearchThreads threads(n, kind_, p.threads);
  if (kind_ == Kind::kHnsw) return SearchHnsw(n, q, p, distances, slots);
  auto* labels = reinterpret_cast<faiss_idx*>(slots);
  return Guard("search failed", [&] {
    const faiss::IndexFlat* normed = norms_.empty() ? nullptr : NormedRows();
    if (kind_ == Kind::kIvf) {
      auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
      faiss::SearchParametersIVF sp;
      sp.sel = sel;
      sp.nprobe = std::min<size_t>(p.nprobe != 0 ? p.nprobe : ivf->nprobe, ivf->nlist);
      if (normed == nullptr) return index_->search(faiss_idx(n), q, p.k, distances, labels, &sp);
      // FAISS's own search, with the centroids' norms given to the coarse step.
      std::vector<float> coarse_d(n * sp.nprobe);
      std::vector<faiss_idx> lists(n * sp.nprobe);
      faiss::knn_L2sqr(q, normed->get_xb(), spec_.dim, n, size_t(normed->ntotal), sp.nprobe,
                       coarse_d.data(), lists.data(), norms_.data());
      ivf->search_preassigned(faiss_idx(n), q, p.k, lists.data(), coarse_d.data(), distances,
                              labels, /*store_pairs=*/false, &sp);
    } else if (normed != nullptr) {
      faiss::knn_L2sqr(q, normed->get_xb(), spec_.dim, n, size_t(normed->ntotal), p.k,
                       distances, labels, norms_.data(), sel);
      ExactL2(*normed, n, q, p.k, distances, slots);
    } else if (sel != nullptr) {
      faiss::SearchParameters sp;
      sp.sel = sel;
      index_->search(faiss_idx(n), q, p.k, distances, labels, &sp);
    } else {
      index_->search(faiss_idx(n), q, p.k, distances, labels);
    }
  }, StatusCode::kInternal);
}

Status VectorIndex::SearchHnsw(size_t n, const float* q, const SearchParams& p,
                               float* distances, int64_t* slots) const {
  auto* hnsw = static_cast<faiss::IndexHNSW*>(index_.get());
  const int ef = p.ef != 0 ? int(p.ef) : kDefaultEfSearch;
  FilterSelector selector(p.filter);
  faiss::SearchParametersHNSW sp;
  sp.sel = p.filter != nullptr ? &selector : nullptr;
  sp.efSearch = ef;
  auto* labels = reinterpret_cast<faiss_idx*>(slots);
  // On one thread (SearchThreads chose it, or the caller), without FAISS's
  // OpenMP region and fresh visited table per call (see hnsw_search.h).
  const bool here = omp_get_max_threads() == 1;
  auto run = [&] {
    return Guard("search failed", [&] {
      if (here) return HnswSearchHere(*hnsw, n, q, p.k, sp, distances, labels);
      index_->search(faiss_idx(n), q, p.k, distances, labels, &sp);
    }, StatusCode::kInternal);
  };
  {
    std::shared_lock<RwLock> lock(ef_mu_);
    if (hnsw->hnsw.efSearch == ef) return run();
  }
  std::unique_lock<RwLock> lock(ef_mu_);
  hnsw->hnsw.efSearch = ef;
  return run();
}

Result<std::string> VectorIndex::Serialize() const {
  faiss::VectorIOWriter writer;
  MNEMO_RETURN_IF_ERROR(Guard("cannot serialize index", [&] { faiss::write_index(index_.get(), &writer); }, StatusCode::kInternal));
  return std::string(reinterpret_cast<const char*>(writer.data.data()), writer.data.size());
}

size_t VectorIndex::MemoryBytes() const {
  switch (kind_) {
    case Kind::kFlat:
    case Kind::kFlatCodes:
      return static_cast<const faiss::IndexFlatCodes*>(index_.get())->codes.size() +
             norms_.size() * sizeof(float);
    case Kind::kIvf: {
      auto* ivf = static_cast<const faiss::IndexIVF*>(index_.get());
      return size_t(ivf->ntotal) * (ivf->code_size + sizeof(faiss_idx)) +
             size_t(ivf->nlist) * ivf->d * sizeof(float) + norms_.size() * sizeof(float);
    }
    case Kind::kHnsw: {
      auto* h = static_cast<const faiss::IndexHNSW*>(index_.get());
      return h->hnsw.neighbors.size() * sizeof(int32_t) +
             size_t(h->ntotal) * h->storage->sa_code_size();
    }
  }
  return 0;
}

const float* VectorIndex::Prepare(size_t n, const float* x,
                                  std::unique_ptr<float[]>* buf) const {
  if (spec_.metric != Metric::kCosine) return x;
  const size_t d = spec_.dim;
  buf->reset(new float[n * d]);
  float* out = buf->get();
  for (size_t i = 0; i < n; ++i) {
    double norm = 0;
    for (size_t j = 0; j < d; ++j) norm += double(x[i * d + j]) * x[i * d + j];
    float inv = norm > 0 ? float(1.0 / std::sqrt(norm)) : 0.f;
    for (size_t j = 0; j < d; ++j) out[i * d + j] = x[i * d + j] * inv;
  }
  return out;
}

}  // namespace mnemo::index

// VectorIndex: FAISS indexes from factory strings, codes, filters.
#include <gtest/gtest.h>

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/utils/distances.h>
#include <omp.h>

#include <fstream>
#include <thread>

#include "common/huge_pages.h"
#include "index/hnsw_search.h"
#include "index/split_search.h"
#include "index/vector_index.h"
#include "tests/test_util.h"

namespace mnemo::index {
namespace {

using mnemo::testing::MakeClustered;

std::unique_ptr<VectorIndex> Make(const std::string& factory, uint32_t dim,
                                  Metric metric = Metric::kL2) {
  auto r = VectorIndex::Create({dim, metric, factory});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return std::move(r).value();
}

std::vector<int64_t> SearchAll(const VectorIndex& idx, const std::vector<float>& q, uint32_t dim,
                               SearchParams p) {
  size_t n = q.size() / dim;
  std::vector<float> d(n * p.k);
  std::vector<int64_t> s(n * p.k);
  EXPECT_TRUE(idx.Search(n, q.data(), p, d.data(), s.data()).ok());
  return s;
}

TEST(VectorIndexTest, FactoryStringsAndKinds) {
  EXPECT_EQ(Make("Flat", 8)->kind(), VectorIndex::Kind::kFlat);
  EXPECT_EQ(Make("IDMap,Flat", 8)->kind(), VectorIndex::Kind::kFlat);
  EXPECT_EQ(Make("SQ8", 8)->kind(), VectorIndex::Kind::kFlatCodes);
  EXPECT_EQ(Make("IVF4,PQ2", 8)->kind(), VectorIndex::Kind::kIvf);
  EXPECT_EQ(Make("HNSW8", 8)->kind(), VectorIndex::Kind::kHnsw);
  EXPECT_FALSE(VectorIndex::Create({8, Metric::kL2, "IVF4,PQ3"}).ok());  // 8 % 3 != 0
  EXPECT_FALSE(VectorIndex::Create({8, Metric::kL2, "Flat,IDMap"}).ok());
  EXPECT_FALSE(VectorIndex::Create({0, Metric::kL2, "Flat"}).ok());
  EXPECT_EQ(Make("IVF100,Flat", 8)->min_training_vectors(), 3900u);
  EXPECT_EQ(Make("IVF4,PQ2", 8)->min_training_vectors(), 39u * 256);
}

// Only an exhaustive float scan runs a batch as one matrix product.
TEST(VectorIndexTest, BatchingSavesWorkOnlyForFlat) {
  for (const char* factory : {"Flat", "IDMap,Flat"}) {
    EXPECT_TRUE(VectorIndex::BatchingSavesWork({8, Metric::kL2, factory})) << factory;
  }
  for (const char* factory : {"HNSW8", "IVF4,Flat", "IVF4,PQ2", "SQ8", "IDMap,HNSW8"}) {
    EXPECT_FALSE(VectorIndex::BatchingSavesWork({8, Metric::kL2, factory})) << factory;
  }
}

TEST(VectorIndexTest, StoredCodesRebuildTheSameIndexWithoutEncoding) {
  auto d = MakeClustered(4000, 20, 16, 20, 3);
  for (auto [factory, metric] : {std::pair{"IVF16,PQ4", Metric::kL2},
                                 std::pair{"IVF16,Flat", Metric::kL2},
                                 std::pair{"IVF16,Flat", Metric::kCosine}}) {
    IndexSpec spec{16, metric, factory};
    auto a = std::move(VectorIndex::Create(spec)).value();
    ASSERT_TRUE(a->Train(d.n(), d.base.data()).ok());
    auto trained = std::move(a->Serialize()).value();
    std::vector<uint8_t> codes(d.n() * a->code_size());
    ASSERT_TRUE(a->Encode(d.n(), d.base.data(), codes.data()).ok());
    ASSERT_TRUE(a->Add(d.n(), d.base.data(), nullptr, 0).ok());

    auto b = std::move(VectorIndex::Deserialize(spec, trained)).value();
    EXPECT_TRUE(b->is_trained());
    ASSERT_TRUE(b->AddCodes(d.n(), codes.data(), d.base.data(), 0).ok());
    SearchParams p;
    p.k = 10;
    p.nprobe = 4;
    EXPECT_EQ(SearchAll(*a, d.queries, 16, p), SearchAll(*b, d.queries, 16, p)) << factory;
  }
  // IVF-Flat stores only the list number: 1 byte for 16 lists, not 65.
  EXPECT_EQ(Make("IVF16,Flat", 16)->code_size(), 1u);
}

TEST(VectorIndexTest, HnswSearchUsesTheRequestedEf) {
  // One graph searched both ways: FAISS with its efSearch member set, and
  // VectorIndex with the ef of the request.
  auto d = MakeClustered(5000, 50, 16, 30, 4);
  faiss::IndexHNSWFlat direct(16, 16);
  direct.add(faiss::Index::idx_t(d.n()), d.base.data());
  faiss::VectorIOWriter writer;
  faiss::write_index(&direct, &writer);
  auto idx = std::move(VectorIndex::Deserialize(
                           {16, Metric::kL2, "HNSW16"},
                           std::string_view(reinterpret_cast<const char*>(writer.data.data()),
                                            writer.data.size())))
                 .value();
  std::vector<int64_t> previous;
  for (int ef : {16, 80, 16}) {  // switching back and forth
    direct.hnsw.efSearch = ef;
    std::vector<float> dist(d.q() * 10);
    std::vector<faiss::Index::idx_t> labels(d.q() * 10);
    direct.search(faiss::Index::idx_t(d.q()), d.queries.data(), 10, dist.data(), labels.data());
    SearchParams p;
    p.ef = uint32_t(ef);
    auto got = SearchAll(*idx, d.queries, 16, p);
    EXPECT_EQ(got, std::vector<int64_t>(labels.begin(), labels.end())) << "ef " << ef;
    p.threads = 1;  // searched here, query by query (HnswSearchHere)
    EXPECT_EQ(SearchAll(*idx, d.queries, 16, p), got) << "ef " << ef;
    if (ef == 80) {
      EXPECT_NE(got, previous) << "ef should change what is found";
    }
    previous = got;
  }
}

// FAISS's own search of n queries of q on one thread.
void FaissSearch(const faiss::IndexHNSW& index, const std::vector<float>& q, size_t k,
                 const faiss::SearchParametersHNSW& sp, std::vector<float>* d,
                 std::vector<faiss::Index::idx_t>* l) {
  const size_t n = q.size() / size_t(index.d);
  d->resize(n * k);
  l->resize(n * k);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  index.search(faiss::Index::idx_t(n), q.data(), faiss::Index::idx_t(k), d->data(), l->data(), &sp);
  omp_set_num_threads(saved);
}

TEST(HnswSearchHereTest, FindsWhatFaissFindsForEveryMetricAndFilter) {
  auto d = MakeClustered(3000, 600, 16, 30, 8);
  faiss::IndexHNSWFlat l2(16, 12), ip(16, 12, faiss::METRIC_INNER_PRODUCT), empty(16, 12);
  l2.add(faiss::Index::idx_t(d.n()), d.base.data());
  ip.add(faiss::Index::idx_t(d.n()), d.base.data());
  faiss::IDSelectorRange every_other_half(0, 1500);
  for (const faiss::IndexHNSW* index : {&l2, &ip, &empty}) {
    for (faiss::IDSelector* sel : {static_cast<faiss::IDSelector*>(nullptr),
                                   static_cast<faiss::IDSelector*>(&every_other_half)}) {
      faiss::SearchParametersHNSW sp;
      sp.efSearch = 16;  // FAISS 1.7.3 reads the member (16)
      sp.sel = sel;
      std::vector<float> want_d, got_d(d.q() * 5);
      std::vector<faiss::Index::idx_t> want_l, got_l(d.q() * 5);
      FaissSearch(*index, d.queries, 5, sp, &want_d, &want_l);
      // One query a call, as a server searches: 600 searches on one table,
      // which is cleared every 250.
      for (size_t i = 0; i < d.q(); ++i) {
        HnswSearchHere(*index, 1, &d.queries[i * 16], 5, sp, &got_d[i * 5], &got_l[i * 5]);
      }
      const std::string what = std::string(index == &ip ? "ip" : index == &l2 ? "l2" : "empty") +
                               (sel ? " filtered" : "");
      EXPECT_EQ(got_l, want_l) << what;
      EXPECT_EQ(got_d, want_d) << what;
      if (index == &empty) {
        EXPECT_EQ(got_l[0], -1);
      } else if (sel) {
        for (auto label : got_l) EXPECT_LT(label, 1500) << what;
      }
    }
  }
}

TEST(HnswSearchHereTest, AThreadsTableServesIndexesOfEverySize) {
  // A small index, a larger one (the thread's table grows), the small again,
  // then a fresh thread: each finds what FAISS finds.
  auto small_data = MakeClustered(500, 40, 8, 10, 9), large_data = MakeClustered(4000, 40, 8, 10, 10);
  faiss::IndexHNSWFlat small(8, 8), large(8, 8);
  small.add(faiss::Index::idx_t(small_data.n()), small_data.base.data());
  large.add(faiss::Index::idx_t(large_data.n()), large_data.base.data());
  faiss::SearchParametersHNSW sp;
  sp.efSearch = 16;
  auto check = [&](const faiss::IndexHNSW& index, const std::vector<float>& q) {
    std::vector<float> want_d, got_d(q.size() / 8 * 3);
    std::vector<faiss::Index::idx_t> want_l, got_l(q.size() / 8 * 3);
    FaissSearch(index, q, 3, sp, &want_d, &want_l);
    HnswSearchHere(index, q.size() / 8, q.data(), 3, sp, got_d.data(), got_l.data());
    EXPECT_EQ(got_l, want_l) << index.ntotal;
    EXPECT_EQ(got_d, want_d) << index.ntotal;
  };
  check(small, small_data.queries);
  check(large, large_data.queries);
  check(small, small_data.queries);
  std::thread([&] { check(large, large_data.queries); }).join();
}

// AnonHugePages of this whole process, in bytes.
size_t ProcessHugeBytes() {
  std::ifstream rollup("/proc/self/smaps_rollup");
  for (std::string line; std::getline(rollup, line);) {
    if (line.rfind("AnonHugePages:", 0) == 0) return std::stoul(line.substr(14)) << 10;
  }
  return 0;
}

TEST(VectorIndexTest, FlatAndHnswVectorsLandOnHugePages) {
  // Only where this kernel collapses pages on request (Linux 6.1+ with THP).
  std::vector<float> probe(3 * kHugePageBytes / sizeof(float), 1.0f);
  const bool collapses = AdviseHugePages(probe.data(), probe.size() * sizeof(float)) == HugePages::kCollapsed;
  auto d = MakeClustered(40000, 4, 128, 50, 12);  // 20 MB of vectors
  for (std::string f : {"Flat", "HNSW8"}) {
    const size_t before = ProcessHugeBytes();
    auto idx = Make(f, 128);
    ASSERT_TRUE(idx->Add(d.n(), d.base.data(), nullptr, 0).ok());
    const size_t gained = ProcessHugeBytes() - std::min(before, ProcessHugeBytes());
    if (collapses) {
      EXPECT_GE(gained, 16u << 20) << f;
    } else {
      std::printf("%s: no MADV_COLLAPSE here; %zu bytes on huge pages so far\n", f.c_str(), gained);
    }
    SearchParams p;
    p.k = 1;
    p.ef = 32;
    auto found = SearchAll(*idx, std::vector<float>(d.base.begin(), d.base.begin() + 128), 128, p);
    if (f == "Flat") {
      EXPECT_EQ(found[0], 0) << "an exact search finds a stored vector itself";
    } else {
      EXPECT_GE(found[0], 0);
    }
  }
}

class OddSlots : public SlotFilter {
 public:
  bool Contains(int64_t slot) const override { return slot % 2 == 1; }
};

TEST(VectorIndexTest, EveryKindHonoursTheSlotFilter) {
  auto d = MakeClustered(2000, 20, 8, 10, 5);
  for (std::string f : {"Flat", "SQ8", "IVF8,Flat", "IVF8,PQ2", "HNSW8"}) {
    auto idx = Make(f, 8);
    if (!idx->is_trained()) {
      ASSERT_TRUE(idx->Train(d.n(), d.base.data()).ok());
    }
    ASSERT_TRUE(idx->Add(d.n(), d.base.data(), nullptr, 0).ok());
    OddSlots odd;
    SearchParams p;
    p.k = 5;
    p.nprobe = 8;
    p.filter = &odd;
    for (int64_t s : SearchAll(*idx, d.queries, 8, p)) EXPECT_EQ(s % 2, 1) << f;
  }
}

TEST(VectorIndexTest, CosineScoresAreInnerProductsOfUnitVectors) {
  auto idx = Make("Flat", 2, Metric::kCosine);
  std::vector<float> v = {3, 4, 0, 5};
  ASSERT_TRUE(idx->Add(2, v.data(), nullptr, 0).ok());
  std::vector<float> q = {0, 2};
  SearchParams p;
  p.k = 2;
  std::vector<float> dist(2);
  std::vector<int64_t> slots(2);
  ASSERT_TRUE(idx->Search(1, q.data(), p, dist.data(), slots.data()).ok());
  EXPECT_EQ(slots, (std::vector<int64_t>{1, 0}));
  EXPECT_NEAR(dist[0], 1.0f, 1e-6);
  EXPECT_NEAR(dist[1], 0.8f, 1e-6);
}

// A split search looks at what FAISS looks at: the same neighbours, the same
// distances (to rounding: FAISS's BLAS path sums in another order for a
// range of rows than for all of them), the same padding when fewer than k
// qualify.
struct Found {
  std::vector<float> distances;
  std::vector<int64_t> labels;
};

void ExpectSame(const Found& split, const Found& whole, const std::string& what) {
  EXPECT_EQ(split.labels, whole.labels) << what;
  ASSERT_EQ(split.distances.size(), whole.distances.size()) << what;
  for (size_t i = 0; i < split.distances.size(); ++i) {
    EXPECT_NEAR(split.distances[i], whole.distances[i], 1e-5 * std::abs(whole.distances[i]))
        << what << " at " << i;
  }
}

// Batches of 2+ queries against L2 rows go through BLAS with the rows' norms
// kept by VectorIndex (a flat index's vectors, kept up to date over adds; an
// IVF's centroids): the same neighbours as FAISS's own search, which
// recomputes those norms per call.
struct OddIds final : faiss::IDSelector {
  bool is_member(faiss::Index::idx_t id) const override { return id % 2 == 1; }
};

TEST(VectorIndexTest, BatchesWithCachedNormsFindWhatFaissFinds) {
  auto d = MakeClustered(20000, 25, 16, 40, 11);
  const size_t half = d.n() / 2;
  for (std::string factory : {"Flat", "IVF16,Flat", "IVF16,SQ8"}) {
    auto idx = Make(factory, 16);
    std::unique_ptr<faiss::Index> ref(faiss::index_factory(16, factory.c_str()));
    if (!idx->is_trained()) {
      ASSERT_TRUE(idx->Train(d.n(), d.base.data()).ok());
      ref->train(faiss::Index::idx_t(d.n()), d.base.data());
    }
    ASSERT_TRUE(idx->Add(half, d.base.data(), nullptr, 0).ok());
    ASSERT_TRUE(idx->Add(d.n() - half, &d.base[half * 16], nullptr, int64_t(half)).ok());
    ref->add(faiss::Index::idx_t(d.n()), d.base.data());
    OddSlots odd;
    OddIds odd_ids;
    // threads 4: a flat batch of any size is split by rows over 4 threads.
    for (auto [filtered, threads] : {std::pair{false, 1u}, std::pair{true, 1u},
                                     std::pair{false, 4u}, std::pair{true, 4u}}) {
      for (size_t n : {1, 2, 3, 8, 25}) {
        const size_t k = 10;
        SearchParams p;
        p.k = k;
        p.nprobe = 5;
        p.threads = threads;
        p.filter = filtered ? &odd : nullptr;
        Found ours{std::vector<float>(n * k), std::vector<int64_t>(n * k)};
        Found faiss_found = ours;
        ASSERT_TRUE(idx->Search(n, d.queries.data(), p, ours.distances.data(), ours.labels.data()).ok());
        faiss::SearchParametersIVF ivf_params;
        ivf_params.nprobe = 5;
        ivf_params.sel = filtered ? &odd_ids : nullptr;
        faiss::SearchParameters flat_params;
        flat_params.sel = ivf_params.sel;
        ref->search(faiss::Index::idx_t(n), d.queries.data(), faiss::Index::idx_t(k),
                    faiss_found.distances.data(), faiss_found.labels.data(),
                    factory == "Flat" ? &flat_params : &ivf_params);
        ExpectSame(ours, faiss_found, factory + ", " + std::to_string(n) + " queries, " +
                                          std::to_string(threads) + " threads" +
                                          (filtered ? ", odd slots" : ""));
      }
    }
  }
}

// |q|^2 + |y|^2 - 2 q.y (BLAS) loses a small distance between large
// vectors; a flat index reports the distances of what it found exactly.
TEST(VectorIndexTest, FlatDistancesAreExactForNearDuplicatesOfLargeVectors) {
  auto idx = Make("Flat", 4);
  std::vector<float> rows = {1000, 1000, 1000, 1000, 0, 0, 0, 0, 1000, 1000, 1000, 1001};
  ASSERT_TRUE(idx->Add(3, rows.data(), nullptr, 0).ok());
  std::vector<float> q = {1000.01f, 1000.01f, 1000.01f, 1000.01f};
  const float exact = faiss::fvec_L2sqr(q.data(), rows.data(), 4);
  for (uint32_t threads : {0u, 1u}) {
    for (size_t n : {1, 3}) {
      std::vector<float> queries;
      for (size_t i = 0; i < n; ++i) queries.insert(queries.end(), q.begin(), q.end());
      SearchParams p;
      p.k = 3;
      p.threads = threads;
      std::vector<float> dist(n * 3);
      std::vector<int64_t> slots(n * 3);
      ASSERT_TRUE(idx->Search(n, queries.data(), p, dist.data(), slots.data()).ok());
      for (size_t i = 0; i < n; ++i) {
        EXPECT_EQ(slots[i * 3], 0);
        EXPECT_EQ(slots[i * 3 + 1], 2);
        EXPECT_FLOAT_EQ(dist[i * 3], exact) << n << " queries, threads " << threads;
        EXPECT_LT(dist[i * 3], dist[i * 3 + 1]);
      }
    }
  }
}

TEST(SplitSearchTest, FlatRangesFindWhatOneScanFinds) {
  auto d = MakeClustered(20001, 3, 16, 40, 7);
  // Rows 7000..7002 only: fewer than k, and off the ranges' edges.
  faiss::IDSelectorRange few(7000, 7003);
  faiss::IDSelectorRange middle(6999, 13013);
  for (auto metric : {faiss::METRIC_L2, faiss::METRIC_INNER_PRODUCT}) {
    for (const faiss::IDSelector* sel : {(const faiss::IDSelector*)nullptr,
                                         (const faiss::IDSelector*)&middle,
                                         (const faiss::IDSelector*)&few}) {
      for (size_t n : {1, 3}) {
        const size_t k = 5;
        Found split{std::vector<float>(n * k), std::vector<int64_t>(n * k)};
        Found whole = split;
        split::FlatSearch(metric, d.base.data(), d.n(), 16, n, d.queries.data(), k, sel, 4,
                          split.distances.data(), split.labels.data());
        if (metric == faiss::METRIC_L2) {
          faiss::knn_L2sqr(d.queries.data(), d.base.data(), 16, n, d.n(), k,
                           whole.distances.data(), whole.labels.data(), nullptr, sel);
        } else {
          faiss::knn_inner_product(d.queries.data(), d.base.data(), 16, n, d.n(), k,
                                   whole.distances.data(), whole.labels.data(), sel);
        }
        ExpectSame(split, whole, "metric " + std::to_string(metric) + ", n " + std::to_string(n) +
                                     (sel == &few ? ", 3 rows" : sel ? ", a range" : ""));
        if (sel == &few) {
          EXPECT_EQ(split.labels[3], -1);
        }
      }
    }
  }
  // 1.3 MB of rows is worth 4 threads; a few KB, one.
  EXPECT_EQ(split::ThreadsFor(d.n() * 16 * sizeof(float), 4), 4);
  EXPECT_EQ(split::ThreadsFor(4096, 4), 1);
}

TEST(SplitSearchTest, IvfListsSearchedOneByOneFindWhatFaissFinds) {
  auto d = MakeClustered(20000, 3, 16, 40, 8);
  faiss::IDSelectorRange half(0, 10000);
  for (std::string factory : {"IVF16,Flat", "IVF16,SQ8"}) {
    std::unique_ptr<faiss::Index> index(faiss::index_factory(16, factory.c_str()));
    index->train(faiss::Index::idx_t(d.n()), d.base.data());
    index->add(faiss::Index::idx_t(d.n()), d.base.data());
    auto& ivf = dynamic_cast<faiss::IndexIVF&>(*index);
    for (faiss::IDSelector* sel : {(faiss::IDSelector*)nullptr, (faiss::IDSelector*)&half}) {
      const size_t n = 3, k = 10, nprobe = 5;
      Found split{std::vector<float>(n * k), std::vector<int64_t>(n * k)};
      Found whole = split;
      split::IvfSearch(ivf, n, d.queries.data(), k, nprobe, sel, 4, split.distances.data(),
                       split.labels.data());
      faiss::SearchParametersIVF params;
      params.nprobe = nprobe;
      params.sel = sel;
      index->search(faiss::Index::idx_t(n), d.queries.data(), faiss::Index::idx_t(k),
                    whole.distances.data(), whole.labels.data(), &params);
      ExpectSame(split, whole, factory + (sel ? ", half the ids" : ""));
      if (sel) {
        for (int64_t l : split.labels) EXPECT_LT(l, 10000) << factory;
      }
    }
  }
}

TEST(SplitSearchTest, ALoneQueryWithEveryCoreFindsWhatOneThreadFinds) {
  // threads 0 (all of OpenMP's) splits a search of a few queries; threads 1 does not.
  auto d = MakeClustered(20000, 3, 16, 40, 9);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(4);
  for (auto [factory, metric] : {std::pair{"Flat", Metric::kL2}, std::pair{"Flat", Metric::kCosine},
                                 std::pair{"IVF16,Flat", Metric::kL2}}) {
    auto idx = Make(factory, 16, metric);
    if (!idx->is_trained()) {
      ASSERT_TRUE(idx->Train(d.n(), d.base.data()).ok());
    }
    ASSERT_TRUE(idx->Add(d.n(), d.base.data(), nullptr, 0).ok());
    OddSlots odd;
    for (const SlotFilter* filter : {(const SlotFilter*)nullptr, (const SlotFilter*)&odd}) {
      SearchParams p;
      p.k = 10;
      p.nprobe = 6;
      p.filter = filter;
      std::vector<float> q(d.queries.begin(), d.queries.begin() + 16);
      p.threads = 1;
      auto one = SearchAll(*idx, q, 16, p);
      p.threads = 0;
      auto all = SearchAll(*idx, q, 16, p);
      EXPECT_EQ(all, one) << factory;
      if (filter) {
        for (int64_t s : all) EXPECT_EQ(s % 2, 1) << factory;
      }
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace mnemo::index

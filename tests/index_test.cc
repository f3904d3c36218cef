// VectorIndex: FAISS indexes from factory strings, codes, filters.
#include <gtest/gtest.h>

#include <faiss/IndexHNSW.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>

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
    if (ef == 80) {
      EXPECT_NE(got, previous) << "ef should change what is found";
    }
    previous = got;
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

}  // namespace
}  // namespace mnemo::index

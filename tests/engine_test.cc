// Behaviour of collections through the engine's C++ API.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>

#include "engine/engine.h"
#include "engine/records.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::Iota;
using mnemo::testing::MakeClustered;
using mnemo::testing::OptionsFor;
using mnemo::testing::TempDir;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    engine_.reset();
    auto e = Engine::Open(OptionsFor(dir_.path()));
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
  }
  std::shared_ptr<Collection> Create(const std::string& name, uint32_t dim,
                                     const std::string& index = "Flat",
                                     const std::string& metric = "l2", uint64_t train_size = 0) {
    CollectionConfig c;
    c.name = name;
    c.dim = dim;
    c.index = index;
    c.metric = metric;
    c.train_size = train_size;
    auto r = engine_->CreateCollection(c);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r.value() : nullptr;
  }
  std::shared_ptr<Collection> Get(const std::string& name) {
    auto r = engine_->GetCollection(name);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r.value() : nullptr;
  }

  TempDir dir_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, CreateListDrop) {
  Create("a", 4);
  Create("b", 8, "HNSW16", "ip");
  auto list = engine_->ListCollections();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "a");
  EXPECT_EQ(list[1].metric, "ip");
  EXPECT_EQ(list[1].index, "HNSW16");
  ASSERT_TRUE(engine_->DropCollection("a").ok());
  EXPECT_EQ(engine_->ListCollections().size(), 1u);
  EXPECT_EQ(engine_->GetCollection("a").status().code(), StatusCode::kNotFound);
}

TEST_F(EngineTest, CreateRejectsBadConfigs) {
  CollectionConfig c;
  c.name = "x";
  c.dim = 0;
  EXPECT_EQ(engine_->CreateCollection(c).status().code(), StatusCode::kInvalidArgument);
  c.dim = 4;
  c.index = "NotAnIndex";
  EXPECT_EQ(engine_->CreateCollection(c).status().code(), StatusCode::kInvalidArgument);
  c.index = "PQ2";  // FAISS cannot filter its scans
  auto pq = engine_->CreateCollection(c).status();
  EXPECT_EQ(pq.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(pq.message().find("use 'IVF1,PQ2'"), std::string::npos) << pq.ToString();
  for (std::string hostile : {"IVF99999999,PQ4", "HNSW100000", "IVF2000000,Flat"}) {
    c.index = hostile;  // refused before FAISS allocates anything
    auto st = engine_->CreateCollection(c).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << hostile;
    EXPECT_NE(st.message().find("takes at most"), std::string::npos) << st.ToString();
  }
  c.index = "Flat";
  c.metric = "hamming";
  EXPECT_EQ(engine_->CreateCollection(c).status().code(), StatusCode::kInvalidArgument);
  c.metric = "l2";
  c.name = "bad name!";
  EXPECT_EQ(engine_->CreateCollection(c).status().code(), StatusCode::kInvalidArgument);
  c.name = "x";
  ASSERT_TRUE(engine_->CreateCollection(c).ok());
  EXPECT_EQ(engine_->CreateCollection(c).status().code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(engine_->ListCollections().size() == 1);
}

TEST_F(EngineTest, HnswKeepsItsEfConstructionAcrossRestarts) {
  CollectionConfig c;
  c.name = "h100";
  c.dim = 8;
  c.index = "HNSW16";
  c.ef_construction = 100;
  ASSERT_TRUE(engine_->CreateCollection(c).ok());
  Create("hdefault", 8, "HNSW16");
  Create("flat", 8, "Flat");
  c.name = "hbig";
  c.ef_construction = index::kMaxEfConstruction + 1;  // every insert would crawl
  EXPECT_EQ(engine_->CreateCollection(c).status().code(), StatusCode::kInvalidArgument);
  auto data = MakeClustered(500, 0, 8, 4, 3);
  auto ids = Iota(500);
  ASSERT_TRUE(Get("h100")->Upsert({ids, data.base}).ok());
  for (int round = 0; round < 2; round++) {  // as created, then as recovered
    EXPECT_EQ(Get("h100")->Stats().ef_construction, 100u);
    EXPECT_EQ(Get("hdefault")->Stats().ef_construction, index::kDefaultEfConstruction);
    EXPECT_EQ(Get("flat")->Stats().ef_construction, 0u);
    Reopen();
  }
}

TEST(CollectionRecordTest, AFormatOneRecordReadsAsTheDefaultEfConstruction) {
  CollectionRecord r;
  r.id = 7;
  r.name = "old";
  r.spec = {16, index::Metric::kL2, "HNSW32", 96};
  auto back = CollectionRecord::Decode(r.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->spec.ef_construction, 96u);
  EXPECT_EQ(back->name, "old");
  std::string v1 = r.Encode();
  v1[0] = char(1);             // the layout before ef_construction: no trailing u32
  v1.resize(v1.size() - 4);
  back = CollectionRecord::Decode(v1);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->spec.ef_construction, 0u);
  EXPECT_EQ(back->spec.factory, "HNSW32");
  EXPECT_EQ(back->name, "old");
}

TEST_F(EngineTest, UpsertThenGetReturnsVectorsGroupsPayloads) {
  auto c = Create("docs", 3);
  std::vector<uint64_t> ids = {7, 3, 11};
  std::vector<float> v = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<uint64_t> groups = {1, 2, 1};
  std::vector<std::string_view> payloads = {"seven", "", "eleven"};
  ASSERT_TRUE(c->Upsert({ids, v, groups, payloads}).ok());
  std::vector<uint64_t> want = {11, 99, 7};
  auto e = c->Get(want);
  ASSERT_TRUE(e.ok());
  ASSERT_EQ(e->ids, (std::vector<uint64_t>{11, 7}));
  EXPECT_EQ(e->vectors, (std::vector<float>{7, 8, 9, 1, 2, 3}));
  EXPECT_EQ(e->groups, (std::vector<uint64_t>{1, 1}));
  EXPECT_EQ(e->payloads, (std::vector<std::string>{"eleven", "seven"}));
}

TEST_F(EngineTest, SearchSeesWriteAsSoonAsItIsAcknowledged) {
  auto c = Create("m", 2);
  std::vector<float> q = {10, 10};
  for (uint64_t id = 0; id < 50; ++id) {
    std::vector<uint64_t> ids = {id};
    std::vector<float> v = {float(id), float(id)};
    ASSERT_TRUE(c->Upsert({ids, v}).ok());
    auto r = c->Search({.queries = v, .k = 1});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->ids[0], int64_t(id));
  }
}

TEST_F(EngineTest, UpsertReplacesExistingId) {
  auto c = Create("m", 2);
  std::vector<uint64_t> ids = {1, 2};
  std::vector<float> v = {0, 0, 10, 10};
  ASSERT_TRUE(c->Upsert({ids, v}).ok());
  std::vector<uint64_t> one = {1};
  std::vector<float> moved = {20, 20};
  ASSERT_TRUE(c->Upsert({one, moved}).ok());
  std::vector<float> q = {0, 0};
  auto r = c->Search({.queries = q, .k = 3});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ids, (std::vector<int64_t>{2, 1, -1}));  // no stale copy of 1
  EXPECT_EQ(c->Stats().count, 2u);
  auto e = c->Get(one);
  EXPECT_EQ(e->vectors, moved);
}

TEST_F(EngineTest, DeleteHidesEntriesAndCountsExisting) {
  auto c = Create("m", 2);
  auto ids = Iota(10);
  std::vector<float> v(20);
  for (size_t i = 0; i < 20; ++i) v[i] = float(i / 2);
  ASSERT_TRUE(c->Upsert({ids, v}).ok());
  std::vector<uint64_t> del = {0, 1, 1, 42};
  auto n = c->Delete(del);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  std::vector<float> q = {0, 0};
  auto r = c->Search({.queries = q, .k = 2});
  EXPECT_EQ(r->ids, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(c->Get(del)->ids.empty());
  Reopen();
  c = Get("m");
  EXPECT_EQ(c->Stats().count, 8u);
  r = c->Search({.queries = q, .k = 2});
  EXPECT_EQ(r->ids, (std::vector<int64_t>{2, 3}));
}

TEST_F(EngineTest, GroupFilterReturnsOnlyThatGroup) {
  for (std::string index : {"Flat", "HNSW16", "IVF4,Flat"}) {
    auto c = Create("g" + std::to_string(index.size()), 2, index, "l2", /*train_size=*/8);
    auto ids = Iota(40);
    std::vector<float> v(80);
    std::vector<uint64_t> groups(40);
    for (size_t i = 0; i < 40; ++i) {
      v[2 * i] = float(i);
      v[2 * i + 1] = 0;
      groups[i] = i % 4;
    }
    ASSERT_TRUE(c->Upsert({ids, v, groups}).ok());
    std::vector<float> q = {0, 0};
    auto r = c->Search({.queries = q, .k = 3, .nprobe = 4, .group = 3});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->ids, (std::vector<int64_t>{3, 7, 11})) << index;
  }
}

// FAISS answers k=1 with slot 0 when nothing qualifies; that must come back
// as "none", never as an entry that is absent, deleted or of another group.
TEST_F(EngineTest, SearchWhereNothingQualifiesFindsNothing) {
  for (std::string index : {"Flat", "HNSW16", "IVF4,Flat", "SQ8"}) {
    auto c = Create("n" + std::to_string(index.size()), 2, index, "l2", /*train_size=*/8);
    std::vector<float> q = {0, 0};
    for (uint32_t k : {1u, 3u}) {
      auto empty = c->Search({.queries = q, .k = k, .nprobe = 4});
      ASSERT_TRUE(empty.ok()) << index << ": " << empty.status().ToString();
      EXPECT_EQ(empty->ids, std::vector<int64_t>(k, -1)) << index << " empty, k=" << k;
    }
    std::vector<float> v(32);
    for (size_t i = 0; i < 32; ++i) v[i] = float(i);
    std::vector<uint64_t> groups(16, 1);
    ASSERT_TRUE(c->Upsert({Iota(16), v, groups}).ok());
    auto other_group = c->Search({.queries = q, .k = 1, .nprobe = 4, .group = 2});
    ASSERT_TRUE(other_group.ok());
    EXPECT_EQ(other_group->ids, std::vector<int64_t>{-1}) << index << " other group";
    ASSERT_TRUE(c->Delete(Iota(16)).ok());
    auto deleted = c->Search({.queries = q, .k = 1, .nprobe = 4});
    ASSERT_TRUE(deleted.ok());
    EXPECT_EQ(deleted->ids, std::vector<int64_t>{-1}) << index << " all deleted";
  }
}

TEST_F(EngineTest, IvfSearchesExactlyUntilTrainedThenTrainsOnce) {
  auto d = MakeClustered(3000, 10, 16, 20, 1);
  auto c = Create("ivf", 16, "IVF16,PQ4", "l2", /*train_size=*/2000);
  auto ids = Iota(3000);
  std::span<const float> all(d.base);
  ASSERT_TRUE(c->Upsert({std::span(ids).first(1000), all.first(1000 * 16)}).ok());
  EXPECT_FALSE(c->Stats().trained);
  auto r = c->Search({.queries = all.subspan(5 * 16, 16), .k = 1});
  EXPECT_EQ(r->ids[0], 5);  // exact while staging
  ASSERT_TRUE(c->Upsert({std::span(ids).subspan(1000), all.subspan(1000 * 16)}).ok());
  auto s = c->Stats();
  EXPECT_TRUE(s.trained);
  EXPECT_EQ(s.trainings, 1u);
  EXPECT_EQ(s.count, 3000u);
  r = c->Search({.queries = all.subspan(2500 * 16, 16), .k = 5, .nprobe = 16});
  EXPECT_NE(std::find(r->ids.begin(), r->ids.end(), 2500), r->ids.end());
}

TEST_F(EngineTest, ExplicitTrainBeforeTrainSize) {
  auto d = MakeClustered(500, 1, 8, 10, 2);
  auto c = Create("t", 8, "IVF32,Flat");  // would train at 39 * 32 = 1248
  auto ids = Iota(500);
  ASSERT_TRUE(c->Upsert({ids, d.base}).ok());
  EXPECT_FALSE(c->Stats().trained);
  ASSERT_TRUE(c->Train().ok());
  EXPECT_TRUE(c->Stats().trained);
  EXPECT_EQ(c->Train().code(), StatusCode::kFailedPrecondition);
  auto r = c->Search({.queries = std::span(d.base).first(8), .k = 1, .nprobe = 32});
  EXPECT_EQ(r->ids[0], 0);
}

TEST_F(EngineTest, TrainWithTooFewVectorsFailsAndChangesNothing) {
  auto c = Create("t", 8, "IVF64,Flat");
  auto d = MakeClustered(10, 1, 8, 2, 3);
  auto ids = Iota(10);
  ASSERT_TRUE(c->Upsert({ids, d.base}).ok());
  Status st = c->Train();
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(c->Stats().trained);
  EXPECT_EQ(c->Stats().count, 10u);
}

TEST_F(EngineTest, CosineIgnoresVectorLength) {
  auto c = Create("cos", 2, "Flat", "cosine");
  std::vector<uint64_t> ids = {1, 2};
  std::vector<float> v = {100, 1, 0.1f, 0.1f};
  ASSERT_TRUE(c->Upsert({ids, v}).ok());
  std::vector<float> q = {1, 1};
  auto r = c->Search({.queries = q, .k = 2});
  EXPECT_EQ(r->ids[0], 2);
  EXPECT_NEAR(r->distances[0], 1.0f, 1e-5);
  EXPECT_EQ(c->Get(ids)->vectors, v);  // stored as given
}

TEST_F(EngineTest, CompactionDropsDeadSlotsAndKeepsResults) {
  engine_.reset();
  auto o = OptionsFor(dir_.path());
  o.compact_min_dead = 100;
  engine_ = std::move(Engine::Open(o)).value();
  auto c = Create("c", 4);
  auto d = MakeClustered(400, 5, 4, 4, 4);
  auto ids = Iota(400);
  ASSERT_TRUE(c->Upsert({ids, d.base}).ok());
  std::vector<uint64_t> del = Iota(300);
  ASSERT_TRUE(c->Delete(del).ok());
  auto s = c->Stats();
  EXPECT_EQ(s.count, 100u);
  EXPECT_EQ(s.deleted_slots, 0u);  // compacted
  auto r = c->Search({.queries = d.queries, .k = 100});
  for (int64_t id : r->ids) EXPECT_GE(id, 300);
}

TEST_F(EngineTest, DropRemovesDataAndNameCanBeReused) {
  auto c = Create("d", 2);
  std::vector<uint64_t> ids = {1};
  std::vector<float> v = {1, 1};
  ASSERT_TRUE(c->Upsert({ids, v}).ok());
  ASSERT_TRUE(engine_->DropCollection("d").ok());
  EXPECT_EQ(c->Upsert({ids, v}).code(), StatusCode::kNotFound);
  EXPECT_EQ(engine_->DropCollection("d").code(), StatusCode::kNotFound);
  auto c2 = Create("d", 2);
  EXPECT_TRUE(c2->Get(ids)->ids.empty());
  Reopen();
  EXPECT_EQ(Get("d")->Stats().count, 0u);
}

TEST_F(EngineTest, ConcurrentSearchesDuringWritesSeeConsistentResults) {
  auto c = Create("cc", 8, "HNSW16");
  auto d = MakeClustered(4000, 50, 8, 8, 5);
  std::atomic<bool> done{false};
  std::atomic<int> errors{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!done) {
        auto r = c->Search({.queries = d.queries, .k = 5});
        if (!r.ok()) errors++;
        for (int64_t id : r->ids) {
          if (id < -1 || id >= 4000) errors++;
        }
      }
    });
  }
  for (size_t b = 0; b < 40; ++b) {
    auto ids = Iota(100, b * 100);
    ASSERT_TRUE(c->Upsert({ids, std::span(d.base).subspan(b * 800, 800)}).ok());
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(c->Stats().count, 4000u);
}

}  // namespace
}  // namespace mnemo::engine

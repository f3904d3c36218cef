// Recall: the engine answers as FAISS used directly with the same factory
// string, parameters and data, before and after a reopen; a reopened
// quantized collection neither trains nor encodes.
#include <gtest/gtest.h>

#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>

#include "engine/engine.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::BruteForce;
using mnemo::testing::Dataset;
using mnemo::testing::Iota;
using mnemo::testing::MakeClustered;
using mnemo::testing::OptionsFor;
using mnemo::testing::RecallAtK;
using mnemo::testing::TempDir;

constexpr uint32_t kK = 10;
constexpr uint32_t kNprobe = 16;
constexpr uint32_t kEf = 64;

class RecallTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    data_ = new Dataset(MakeClustered(100000, 1000, 128, 1000, 42));
    truth_ = new std::vector<int64_t>(BruteForce(*data_, kK));
  }
  static void TearDownTestSuite() {
    delete data_;
    delete truth_;
  }

  // Recall of FAISS itself: train on all data, add, search.
  static double FaissRecall(const std::string& factory) {
    std::unique_ptr<faiss::Index> index(faiss::index_factory(128, factory.c_str()));
    index->train(faiss::Index::idx_t(data_->n()), data_->base.data());
    index->add(faiss::Index::idx_t(data_->n()), data_->base.data());
    std::vector<float> dist(data_->q() * kK);
    std::vector<faiss::Index::idx_t> labels(data_->q() * kK);
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index.get())) ivf->nprobe = kNprobe;
    if (auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get())) hnsw->hnsw.efSearch = kEf;
    index->search(faiss::Index::idx_t(data_->q()), data_->queries.data(), kK, dist.data(),
                  labels.data());
    return RecallAtK(std::vector<int64_t>(labels.begin(), labels.end()), *truth_, data_->q(), kK);
  }

  static std::vector<int64_t> EngineSearch(Collection& c) {
    auto r = c.Search({.queries = data_->queries, .k = kK, .nprobe = kNprobe, .ef = kEf});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->ids : std::vector<int64_t>();
  }

  static void Fill(Collection& c) {
    auto ids = Iota(data_->n());
    ASSERT_TRUE(c.Upsert({ids, data_->base}).ok());
  }

  std::unique_ptr<Engine> Open() { return std::move(Engine::Open(OptionsFor(dir_.path()))).value(); }

  std::shared_ptr<Collection> Create(Engine& e, const std::string& factory) {
    CollectionConfig config;
    config.name = "c";
    config.dim = 128;
    config.index = factory;
    return std::move(e.CreateCollection(config)).value();
  }

  // Engine recall before and after reopen equals FAISS's within 0.01.
  void CheckAgainstFaiss(const std::string& factory) {
    const double faiss_recall = FaissRecall(factory);
    double before;
    {
      auto e = Open();
      auto c = Create(*e, factory);
      Fill(*c);
      EXPECT_TRUE(c->Stats().trained);
      before = RecallAtK(EngineSearch(*c), *truth_, data_->q(), kK);
    }
    auto e = Open();
    auto c = std::move(e->GetCollection("c")).value();
    const double after = RecallAtK(EngineSearch(*c), *truth_, data_->q(), kK);
    auto s = c->Stats();
    EXPECT_EQ(s.count, data_->n());
    EXPECT_EQ(s.trainings, 0u) << "reopen must not train";
    EXPECT_EQ(s.codes_encoded_on_load, 0u) << "reopen must not re-encode stored codes";
    std::printf("%-14s recall@10: faiss %.4f  engine %.4f  reopened %.4f\n", factory.c_str(),
                faiss_recall, before, after);
    EXPECT_NEAR(before, faiss_recall, 0.01) << factory;
    EXPECT_NEAR(after, faiss_recall, 0.01) << factory;
    EXPECT_GT(faiss_recall, 0.3) << "the data set should not make recall trivial";
  }

  static Dataset* data_;
  static std::vector<int64_t>* truth_;
  TempDir dir_;
};

Dataset* RecallTest::data_ = nullptr;
std::vector<int64_t>* RecallTest::truth_ = nullptr;

TEST_F(RecallTest, FlatReturnsExactlyTheBruteForceNeighbours) {
  {
    auto e = Open();
    auto c = Create(*e, "Flat");
    Fill(*c);
    EXPECT_EQ(EngineSearch(*c), *truth_);
  }
  auto e = Open();
  EXPECT_EQ(EngineSearch(*std::move(e->GetCollection("c")).value()), *truth_);
}

TEST_F(RecallTest, IvfPqMatchesFaiss) { CheckAgainstFaiss("IVF1024,PQ16"); }
TEST_F(RecallTest, IvfFlatMatchesFaiss) { CheckAgainstFaiss("IVF1024,Flat"); }

TEST_F(RecallTest, HnswMatchesFaissAndReloadsItsGraph) {
  CheckAgainstFaiss("HNSW32");
  auto e = Open();
  EXPECT_TRUE(std::move(e->GetCollection("c")).value()->Stats().loaded_from_snapshot);
}

}  // namespace
}  // namespace mnemo::engine

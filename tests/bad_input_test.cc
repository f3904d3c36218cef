// Bad input to the engine API gets a clear error status and changes nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/engine.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::Iota;
using mnemo::testing::OptionsFor;
using mnemo::testing::TempDir;

class BadInputTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    engine_ = std::move(Engine::Open(OptionsFor(dir_.path()))).value();
    CollectionConfig c;
    c.name = "docs";
    c.dim = 4;
    c.index = GetParam();
    c.train_size = 16;
    c_ = std::move(engine_->CreateCollection(c)).value();
    auto ids = Iota(32);
    std::vector<float> v(32 * 4);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 13);
    ASSERT_TRUE(c_->Upsert({ids, v}).ok());
    before_ = c_->Stats();
  }

  // The rejected write left no trace: same count, new ids absent, old intact.
  void ExpectUnchanged() {
    auto s = c_->Stats();
    EXPECT_EQ(s.count, before_.count);
    EXPECT_EQ(s.deleted_slots, before_.deleted_slots);
    std::vector<uint64_t> probe = {100, 101, 102};
    EXPECT_TRUE(c_->Get(probe)->ids.empty());
    std::vector<uint64_t> old = {0};
    EXPECT_EQ(c_->Get(old)->vectors, (std::vector<float>{0, 1, 2, 3}));
  }

  static void ExpectError(const Status& st, StatusCode code, const std::string& needle) {
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_NE(st.message().find(needle), std::string::npos) << st.ToString();
  }

  TempDir dir_;
  std::unique_ptr<Engine> engine_;
  std::shared_ptr<Collection> c_;
  CollectionStats before_;
};

TEST_P(BadInputTest, WrongDimension) {
  std::vector<uint64_t> ids = {100, 101};
  std::vector<float> v(2 * 5, 1.f);
  ExpectError(c_->Upsert({ids, v}), StatusCode::kInvalidArgument,
              "dimension 5 does not match collection 'docs' (4)");
  ExpectUnchanged();
}

TEST_P(BadInputTest, NaNAndInfinity) {
  std::vector<uint64_t> ids = {100, 101};
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity()}) {
    std::vector<float> v(8, 1.f);
    v[6] = bad;
    ExpectError(c_->Upsert({ids, v}), StatusCode::kInvalidArgument,
                "vector 1 has a NaN or infinite value at position 2");
  }
  ExpectUnchanged();
}

TEST_P(BadInputTest, EmptyBatch) {
  ExpectError(c_->Upsert({}), StatusCode::kInvalidArgument, "empty batch");
  ExpectUnchanged();
}

TEST_P(BadInputTest, DuplicateIdsInOneBatch) {
  std::vector<uint64_t> ids = {100, 101, 100};
  std::vector<float> v(12, 1.f);
  ExpectError(c_->Upsert({ids, v}), StatusCode::kInvalidArgument,
              "id 100 appears more than once");
  ExpectUnchanged();
}

TEST_P(BadInputTest, IdAboveInt64Max) {
  std::vector<uint64_t> ids = {100, uint64_t(1) << 63};
  std::vector<float> v(8, 1.f);
  ExpectError(c_->Upsert({ids, v}), StatusCode::kInvalidArgument, "above 2^63 - 1");
  ExpectUnchanged();
}

TEST_P(BadInputTest, GroupsAndPayloadsMustMatchIds) {
  std::vector<uint64_t> ids = {100, 101};
  std::vector<float> v(8, 1.f);
  std::vector<uint64_t> groups = {1};
  ExpectError(c_->Upsert({ids, v, groups}), StatusCode::kInvalidArgument, "1 groups for 2 ids");
  std::string big((1 << 20) + 1, 'x');
  std::vector<std::string_view> payloads = {"ok", big};
  ExpectError(c_->Upsert({ids, v, {}, payloads}), StatusCode::kInvalidArgument,
              "above the limit");
  ExpectUnchanged();
}

TEST_P(BadInputTest, KOutOfRange) {
  std::vector<float> q(4, 1.f);
  ExpectError(c_->Search({.queries = q, .k = 0}).status(), StatusCode::kOutOfRange,
              "k must be in 1..4096, got 0");
  ExpectError(c_->Search({.queries = q, .k = 5000}).status(), StatusCode::kOutOfRange,
              "got 5000");
  // An HNSW heap of ef entries: 4 billion would be gigabytes.
  ExpectError(c_->Search({.queries = q, .k = 1, .ef = 4000000000u}).status(),
              StatusCode::kOutOfRange, "ef must be at most 65536, got 4000000000");
  std::vector<float> many(4 * 5000, 1.f);  // 5000 queries x k=4096 > 2^24 results
  ExpectError(c_->Search({.queries = many, .k = 4096}).status(), StatusCode::kOutOfRange,
              "results per search");
  ExpectUnchanged();
}

TEST_P(BadInputTest, BadQueries) {
  ExpectError(c_->Search({.queries = {}, .k = 1}).status(), StatusCode::kInvalidArgument,
              "no queries");
  std::vector<float> q(5, 1.f);
  ExpectError(c_->Search({.queries = q, .k = 1}).status(), StatusCode::kInvalidArgument,
              "does not match collection 'docs'");
  std::vector<float> nan = {1, 2, std::nanf(""), 4};
  ExpectError(c_->Search({.queries = nan, .k = 1}).status(), StatusCode::kInvalidArgument,
              "NaN");
}

TEST_P(BadInputTest, UnknownCollection) {
  ExpectError(engine_->GetCollection("nope").status(), StatusCode::kNotFound,
              "no collection named 'nope'");
  ExpectError(engine_->DropCollection("nope"), StatusCode::kNotFound, "nope");
  ExpectUnchanged();
}

TEST_P(BadInputTest, EmptyIdListsForGetAndDelete) {
  ExpectError(c_->Get({}).status(), StatusCode::kInvalidArgument, "empty batch");
  ExpectError(c_->Delete({}).status(), StatusCode::kInvalidArgument, "empty batch");
  ExpectUnchanged();
}

INSTANTIATE_TEST_SUITE_P(Indexes, BadInputTest,
                         ::testing::Values("Flat", "IVF2,Flat", "HNSW8"),
                         mnemo::testing::FactoryName());

}  // namespace
}  // namespace mnemo::engine

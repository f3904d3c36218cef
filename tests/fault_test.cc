// Storage and index faults seen through the engine: a write that fails is
// not acknowledged, leaves nothing behind, and stops later writes; a write
// that is durable stays so whatever happens to the in-memory index.
#include <gtest/gtest.h>

#include <rocksdb/env.h>

#include "engine/engine.h"
#include "tests/failing_fs.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::FailingFs;
using mnemo::testing::Iota;
using mnemo::testing::OptionsFor;
using mnemo::testing::TempDir;

std::shared_ptr<Collection> CreateFlat(Engine& engine, const std::string& name,
                                       const std::string& index = "Flat") {
  CollectionConfig config;
  config.name = name;
  config.dim = 2;
  config.index = index;
  return std::move(engine.CreateCollection(config)).value();
}

std::vector<int64_t> Nearest(const Collection& c, std::vector<float> query, uint32_t k) {
  auto r = c.Search({.queries = query, .k = k});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r->ids : std::vector<int64_t>{};
}

TEST(FaultTest, FailedUpsertChangesNothingAndLaterWritesAreRefused) {
  TempDir dir;
  auto fs = std::make_shared<FailingFs>(rocksdb::FileSystem::Default());
  auto env = rocksdb::NewCompositeEnv(fs);
  EngineOptions options;
  options.data_dir = dir.path();
  options.env = env.get();
  {
    auto engine = std::move(Engine::Open(options)).value();
    CollectionConfig config;
    config.name = "f";
    config.dim = 2;
    auto c = std::move(engine->CreateCollection(config)).value();
    std::vector<uint64_t> a = {1};
    std::vector<float> va = {1, 1};
    ASSERT_TRUE(c->Upsert({a, va}).ok());

    fs->fail = true;
    std::vector<uint64_t> b = {2};
    std::vector<float> vb = {2, 2};
    EXPECT_FALSE(c->Upsert({b, vb}).ok());
    fs->fail = false;
    EXPECT_EQ(c->Stats().count, 1u);
    EXPECT_TRUE(c->Get(b)->ids.empty());
    auto r = c->Search({.queries = vb, .k = 2});
    EXPECT_EQ(r->ids, (std::vector<int64_t>{1, -1}));
    // Do not acknowledge anything once the log may be broken.
    EXPECT_FALSE(c->Upsert({b, vb}).ok());
    EXPECT_FALSE(c->Delete(a).ok());
    EXPECT_EQ(c->Stats().count, 1u);
  }
  options.env = nullptr;
  auto engine = std::move(Engine::Open(options)).value();
  auto c = std::move(engine->GetCollection("f")).value();
  EXPECT_EQ(c->Stats().count, 1u);
}

// A full disk: the write that hits it and every later one fail with a code
// that says retrying cannot help, until the store is reopened.
TEST(FaultTest, AFullDiskRefusesWritesWithANonRetryableCodeUntilReopened) {
  TempDir dir;
  auto fs = std::make_shared<FailingFs>(rocksdb::FileSystem::Default());
  auto env = rocksdb::NewCompositeEnv(fs);
  EngineOptions options = OptionsFor(dir.path());
  options.env = env.get();
  {
    auto engine = std::move(Engine::Open(options)).value();
    auto c = CreateFlat(*engine, "f");
    std::vector<uint64_t> a = {1};
    std::vector<float> va = {1, 1};
    ASSERT_TRUE(c->Upsert({a, va}).ok());

    fs->no_space = true;
    std::vector<uint64_t> b = {2};
    Status full = c->Upsert({b, va});
    EXPECT_EQ(full.code(), StatusCode::kFailedPrecondition) << full.ToString();
    EXPECT_NE(full.message().find("no space"), std::string::npos) << full.ToString();
    EXPECT_NE(full.message().find("reopen"), std::string::npos) << full.ToString();
    fs->no_space = false;  // space freed: still refused, the log may be broken
    Status refused = c->Upsert({b, va});
    EXPECT_EQ(refused.code(), StatusCode::kFailedPrecondition) << refused.ToString();
    EXPECT_EQ(c->Delete(a).status().code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(engine->store()->write_error().code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(Nearest(*c, va, 2), (std::vector<int64_t>{1, -1}));  // reads go on
  }
  auto engine = std::move(Engine::Open(options)).value();  // reopened
  auto c = std::move(engine->GetCollection("f")).value();
  std::vector<uint64_t> b = {2};
  std::vector<float> vb = {2, 2};
  ASSERT_TRUE(c->Upsert({b, vb}).ok());
  EXPECT_EQ(Nearest(*c, vb, 3), (std::vector<int64_t>{2, 1, -1}));
}

// The index fails to take a write that is already durable; the collection
// rebuilds it from the store, and the write is acknowledged and searchable.
TEST(FaultTest, AFailedIndexAddAfterTheDurableWriteRebuildsTheIndex) {
  TempDir dir;
  EngineOptions options = OptionsFor(dir.path());
  int add_failures = 1;
  options.index_fault = [&](std::string_view op) {
    if (op == "add" && add_failures > 0) {
      --add_failures;
      return Status::Internal("injected: FAISS ran out of memory");
    }
    return Status::OK();
  };
  auto engine = std::move(Engine::Open(options)).value();
  for (std::string index : {"Flat", "HNSW8"}) {
    add_failures = 1;
    auto c = CreateFlat(*engine, "c" + index, index);
    ASSERT_TRUE(c->Upsert({std::vector<uint64_t>{1}, std::vector<float>{1, 1}}).ok());
    add_failures = 1;
    std::vector<uint64_t> ids = {2, 3};
    std::vector<float> v = {2, 2, 3, 3};
    Status st = c->Upsert({ids, v});
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(add_failures, 0);  // the fault fired
    EXPECT_EQ(c->Stats().count, 3u);
    EXPECT_EQ(Nearest(*c, {3, 3}, 4), (std::vector<int64_t>{3, 2, 1, -1})) << index;
    ASSERT_TRUE(c->Upsert({std::vector<uint64_t>{4}, std::vector<float>{4, 4}}).ok());
    EXPECT_EQ(Nearest(*c, {4, 4}, 2), (std::vector<int64_t>{4, 3})) << index;
  }
}

// Neither the add nor the rebuild works: the write is stored but reported as
// Internal, and the collection refuses searches and writes until reopened,
// when everything acknowledged and the stored write are back.
TEST(FaultTest, AFailedRebuildLeavesTheEntriesStoredAndTheCollectionRefusingUntilReopened) {
  TempDir dir;
  EngineOptions options = OptionsFor(dir.path());
  bool broken = false;
  options.index_fault = [&](std::string_view op) {
    if (broken && (op == "add" || op == "rebuild")) return Status::Internal("injected " + std::string(op));
    return Status::OK();
  };
  {
    auto engine = std::move(Engine::Open(options)).value();
    auto c = CreateFlat(*engine, "f");
    ASSERT_TRUE(c->Upsert({std::vector<uint64_t>{1}, std::vector<float>{1, 1}}).ok());
    broken = true;
    std::vector<uint64_t> two = {2};
    std::vector<float> v2 = {2, 2};
    Status st = c->Upsert({two, v2});
    EXPECT_EQ(st.code(), StatusCode::kInternal) << st.ToString();
    EXPECT_NE(st.message().find("entries are stored"), std::string::npos) << st.ToString();
    broken = false;
    EXPECT_EQ(c->Get(two)->ids, two);  // stored
    EXPECT_EQ(c->Search({.queries = v2, .k = 1}).status().code(), StatusCode::kInternal);
    EXPECT_EQ(c->Upsert({std::vector<uint64_t>{3}, v2}).code(), StatusCode::kInternal);
    EXPECT_EQ(c->Delete(two).status().code(), StatusCode::kInternal);
  }
  auto engine = std::move(Engine::Open(options)).value();
  auto c = std::move(engine->GetCollection("f")).value();
  EXPECT_EQ(Nearest(*c, {2, 2}, 3), (std::vector<int64_t>{2, 1, -1}));
}

// Training that a write sets off fails: the write is acknowledged, the
// collection stays on its exact staging index, and a later write trains it.
TEST(FaultTest, AFailedTrainingNeverFailsTheWriteThatSetItOff) {
  TempDir dir;
  EngineOptions options = OptionsFor(dir.path());
  bool fail_training = true;
  options.index_fault = [&](std::string_view op) {
    return op == "train" && fail_training ? Status::Internal("injected training failure")
                                          : Status::OK();
  };
  auto engine = std::move(Engine::Open(options)).value();
  CollectionConfig config;
  config.name = "ivf";
  config.dim = 2;
  config.index = "IVF2,Flat";
  config.train_size = 8;
  auto c = std::move(engine->CreateCollection(config)).value();
  std::vector<float> v;
  for (int i = 0; i < 8; ++i) v.insert(v.end(), {float(i), float(i % 3)});
  ASSERT_TRUE(c->Upsert({Iota(8), v}).ok());
  EXPECT_FALSE(c->Stats().trained);
  EXPECT_EQ(Nearest(*c, {7, 1}, 1), (std::vector<int64_t>{7}));  // exact meanwhile
  fail_training = false;
  ASSERT_TRUE(c->Upsert({std::vector<uint64_t>{8}, std::vector<float>{8, 2}}).ok());
  EXPECT_TRUE(c->Stats().trained);
  EXPECT_EQ(c->Stats().count, 9u);
}

}  // namespace
}  // namespace mnemo::engine

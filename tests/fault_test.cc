// Storage faults seen through the engine: a write that fails is not
// acknowledged, leaves nothing behind, and stops later writes.
#include <gtest/gtest.h>

#include <rocksdb/env.h>

#include "engine/engine.h"
#include "tests/failing_fs.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::FailingFs;
using mnemo::testing::Iota;
using mnemo::testing::TempDir;

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

}  // namespace
}  // namespace mnemo::engine

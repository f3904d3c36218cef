// The store: key order, atomic batches, and refusing writes after a failure.
#include <gtest/gtest.h>

#include <atomic>

#include <rocksdb/env.h>

#include "storage/keys.h"
#include "tests/failing_fs.h"
#include "storage/store.h"
#include "tests/test_util.h"

namespace mnemo::storage {
namespace {

using mnemo::testing::TempDir;

TEST(KeysTest, EntryKeysSortByCollectionThenNumericId) {
  EXPECT_LT(EntryKey(1, 255), EntryKey(1, 256));
  EXPECT_LT(EntryKey(1, UINT64_MAX), EntryKey(2, 0));
  EXPECT_LT(EntryKey(1, 5), OwnerPrefix(2));
  EXPECT_GE(EntryKey(1, 0), OwnerPrefix(1));
  EXPECT_EQ(EntryIdFromKey(EntryKey(9, 0x0102030405060708ull)), 0x0102030405060708ull);
}

TEST(StoreTest, BatchIsAtomicAndScanIsOrdered) {
  TempDir dir;
  auto store = std::move(Store::Open(dir.path(), {})).value();
  WriteBatch batch(*store);
  for (uint64_t id : {3, 1, 2}) batch.Put(Cf::kEntries, EntryKey(1, id), std::to_string(id));
  batch.Put(Cf::kEntries, EntryKey(2, 0), "other collection");
  ASSERT_TRUE(store->Write(&batch).ok());
  std::string seen;
  ASSERT_TRUE(store->Scan(Cf::kEntries, OwnerPrefix(1), OwnerPrefix(2),
                          [&](std::string_view, std::string_view v) {
                            seen += v;
                            return true;
                          }).ok());
  EXPECT_EQ(seen, "123");
  WriteBatch drop(*store);
  drop.DeleteRange(Cf::kEntries, OwnerPrefix(1), OwnerPrefix(2));
  ASSERT_TRUE(store->Write(&drop).ok());
  EXPECT_FALSE(store->Get(Cf::kEntries, EntryKey(1, 1))->has_value());
  EXPECT_EQ(**store->Get(Cf::kEntries, EntryKey(2, 0)), "other collection");
}

TEST(StoreTest, CheckpointIsAConsistentCopy) {
  TempDir dir;
  auto store = std::move(Store::Open(dir.Sub("db"), {})).value();
  WriteBatch batch(*store);
  batch.Put(Cf::kMeta, "k", "v");
  ASSERT_TRUE(store->Write(&batch).ok());
  ASSERT_TRUE(store->Checkpoint(dir.Sub("copy")).ok());
  WriteBatch later(*store);
  later.Put(Cf::kMeta, "k", "changed");
  ASSERT_TRUE(store->Write(&later).ok());
  auto copy = std::move(Store::Open(dir.Sub("copy"), {})).value();
  EXPECT_EQ(**copy->Get(Cf::kMeta, "k"), "v");
}

TEST(StoreTest, AFailedWriteIsNotVisibleAndStopsLaterWrites) {
  TempDir dir;
  auto fs = std::make_shared<mnemo::testing::FailingFs>(rocksdb::FileSystem::Default());
  auto env = rocksdb::NewCompositeEnv(fs);
  StoreOptions options;
  options.env = env.get();
  {
    auto store = std::move(Store::Open(dir.path(), options)).value();
    WriteBatch ok(*store);
    ok.Put(Cf::kMeta, "before", "1");
    ASSERT_TRUE(store->Write(&ok).ok());

    fs->fail = true;
    WriteBatch bad(*store);
    bad.Put(Cf::kMeta, "during", "1");
    Status st = store->Write(&bad);
    EXPECT_FALSE(st.ok());
    fs->fail = false;

    WriteBatch after(*store);
    after.Put(Cf::kMeta, "after", "1");
    Status refused = store->Write(&after);
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(refused.message().find("refuses writes"), std::string::npos) << refused.ToString();
    EXPECT_FALSE(store->write_error().ok());
    EXPECT_EQ(**store->Get(Cf::kMeta, "before"), "1");  // reads keep working
  }
  auto reopened = std::move(Store::Open(dir.path(), {})).value();
  EXPECT_EQ(**reopened->Get(Cf::kMeta, "before"), "1");
  EXPECT_FALSE(reopened->Get(Cf::kMeta, "during")->has_value());
  EXPECT_FALSE(reopened->Get(Cf::kMeta, "after")->has_value());
}

}  // namespace
}  // namespace mnemo::storage

// The value log: values written once, read back checked, files deleted once
// nothing in them is referenced, never while a backup holds them.
#include "storage/value_log.h"

#include <filesystem>
#include <fstream>
#include <numeric>

#include <gtest/gtest.h>

#include "tests/failing_fs.h"
#include "tests/test_util.h"

namespace mnemo::storage {
namespace {

using mnemo::testing::TempDir;
namespace fs = std::filesystem;

std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

Result<ValueRef> AppendOne(ValueLog& log, const std::vector<uint8_t>& v) {
  const std::span<const uint8_t> part(v);
  return log.Append(std::span(&part, 1));
}

std::vector<uint8_t> ReadAll(const ValueLog& log, const ValueRef& ref) {
  std::vector<uint8_t> out(ref.length);
  EXPECT_TRUE(log.Read(ref, out.data()).ok());
  return out;
}

// Files of 10,000 bytes: a new one every 2 values of 6,000.
ValueLogOptions SmallFiles(size_t recycle_files) {
  ValueLogOptions o;
  o.file_bytes = 10000;
  o.recycle_files = recycle_files;
  return o;
}

// n values of 6,000 bytes, value i made from seed i.
std::vector<ValueRef> AppendSeeded(ValueLog& log, int n) {
  std::vector<ValueRef> refs;
  for (int i = 0; i < n; ++i) refs.push_back(std::move(AppendOne(log, Bytes(6000, uint8_t(i)))).value());
  return refs;
}

size_t FilesIn(const std::string& dir) {
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".vlog";
  return n;
}

TEST(ValueLogTest, PartsAreWrittenAsOneValueAndReadIntoParts) {
  TempDir dir;
  auto log = std::move(ValueLog::Open(dir.path(), {})).value();
  auto a = Bytes(1000, 1), b = Bytes(3000, 2);
  const std::span<const uint8_t> parts[2] = {a, b};
  auto ref = std::move(log->Append(std::span(parts))).value();
  EXPECT_EQ(ref.length, 4000u);
  std::vector<uint8_t> x(10), y(3990);
  const std::span<uint8_t> into[2] = {x, y};
  ASSERT_TRUE(log->Read(ref, std::span(into)).ok());
  std::vector<uint8_t> joined(a);
  joined.insert(joined.end(), b.begin(), b.end());
  EXPECT_TRUE(std::equal(x.begin(), x.end(), joined.begin()));
  EXPECT_TRUE(std::equal(y.begin(), y.end(), joined.begin() + 10));
  // The reference survives its encoding; a mangled one does not decode.
  EXPECT_EQ(ValueRef::Decode(ref.Encode()).value(), ref);
  EXPECT_EQ(ValueRef::Decode(ref.Encode().substr(1)).status().code(), StatusCode::kCorruption);
  // Sizes that do not add up are refused.
  std::vector<uint8_t> small(5);
  const std::span<uint8_t> wrong[1] = {small};
  EXPECT_EQ(log->Read(ref, std::span(wrong)).code(), StatusCode::kInvalidArgument);
}

TEST(ValueLogTest, AFlippedByteIsCorruptionNotData) {
  TempDir dir;
  ValueRef ref;
  {
    auto log = std::move(ValueLog::Open(dir.path(), {})).value();
    ref = std::move(AppendOne(*log, Bytes(5000, 3))).value();
  }
  {
    std::fstream f(dir.path() + "/000001.vlog", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(ref.offset + 1234));
    f.put('\x55');
  }
  auto log = std::move(ValueLog::Open(dir.path(), {})).value();
  log->AddLive(ref);
  std::vector<uint8_t> out(ref.length);
  EXPECT_EQ(log->Read(ref, out.data()).code(), StatusCode::kCorruption);
}

TEST(ValueLogTest, FilesGoOnceEveryValueInThemIsReleased) {
  TempDir dir;
  auto log = std::move(ValueLog::Open(dir.path(), SmallFiles(0))).value();
  auto refs = AppendSeeded(*log, 6);
  EXPECT_EQ(FilesIn(dir.path()), 3u);
  EXPECT_EQ(log->live_bytes(), 36000u);
  log->Release(refs[0]);
  EXPECT_EQ(FilesIn(dir.path()), 3u);  // refs[1] still lives there
  log->Release(refs[1]);
  EXPECT_EQ(FilesIn(dir.path()), 2u);
  EXPECT_EQ(ReadAll(*log, refs[2]), Bytes(6000, 2));
  std::vector<uint8_t> out(6000);
  EXPECT_EQ(log->Read(refs[0], out.data()).code(), StatusCode::kNotFound);
  // The file being appended to stays, even with nothing live in it.
  log->Release(refs[4]);
  log->Release(refs[5]);
  EXPECT_EQ(FilesIn(dir.path()), 2u);
}

// Dead files are kept (up to recycle_files) and overwritten by the next
// files; a value read from a recycled file is NotFound, not Corruption; a
// file a backup links to is deleted, never overwritten.
TEST(ValueLogTest, DeadFilesAreRecycledUnlessABackupLinksThem) {
  TempDir dir;
  auto log = std::move(ValueLog::Open(dir.path(), SmallFiles(1))).value();
  auto refs = AppendSeeded(*log, 4);
  ASSERT_EQ(FilesIn(dir.path()), 2u);
  log->Release(refs[0]);
  log->Release(refs[1]);  // file 1 is dead: kept for recycling
  EXPECT_EQ(FilesIn(dir.path()), 2u);
  EXPECT_EQ(log->file_count(), 1u);
  std::vector<uint8_t> out(6000);
  EXPECT_EQ(log->Read(refs[0], out.data()).code(), StatusCode::kNotFound);
  auto next = std::move(AppendOne(*log, Bytes(6000, 9))).value();  // file 3, made of file 1
  EXPECT_EQ(next.file, 3u);
  EXPECT_EQ(FilesIn(dir.path()), 2u);
  EXPECT_FALSE(fs::exists(dir.path() + "/000001.vlog"));
  EXPECT_EQ(ReadAll(*log, next), Bytes(6000, 9));
  EXPECT_EQ(ReadAll(*log, refs[3]), Bytes(6000, 3));

  // Back up file 2, then let it die: it must not be overwritten.
  TempDir backup;
  {
    ValueLog::DeletionHold hold(log.get());
    ASSERT_TRUE(log->LinkInto(backup.path()).ok());
  }
  const std::string copy = backup.path() + "/000002.vlog";
  ASSERT_TRUE(fs::exists(copy));
  const auto before = fs::file_size(copy);
  log->Release(refs[2]);
  log->Release(refs[3]);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(AppendOne(*log, Bytes(6000, uint8_t(20 + i))).ok());
  ASSERT_TRUE(fs::exists(copy));
  EXPECT_EQ(fs::file_size(copy), before);
  std::ifstream in(copy, std::ios::binary);
  std::vector<char> head(6000);
  in.read(head.data(), 6000);
  EXPECT_EQ(uint8_t(head[0]), Bytes(6000, 2)[0]);
  EXPECT_TRUE(std::equal(head.begin(), head.end(), Bytes(6000, 2).begin(),
                         [](char a, uint8_t b) { return uint8_t(a) == b; }));
}

TEST(ValueLogTest, RecoveryKeepsTheFilesThatLiveRefsName) {
  TempDir dir;
  const ValueLogOptions o = SmallFiles(0);
  ValueRef kept, dropped;
  {
    auto log = std::move(ValueLog::Open(dir.path(), o)).value();
    dropped = std::move(AppendOne(*log, Bytes(12000, 1))).value();  // file 1
    kept = std::move(AppendOne(*log, Bytes(12000, 2))).value();     // file 2
    (void)AppendOne(*log, Bytes(100, 3));  // file 3: a crash before its ref was committed
  }
  auto log = std::move(ValueLog::Open(dir.path(), o)).value();
  log->AddLive(kept);
  ASSERT_TRUE(log->FinishRecovery().ok());
  EXPECT_EQ(FilesIn(dir.path()), 1u);
  EXPECT_EQ(ReadAll(*log, kept), Bytes(12000, 2));
  // New values go to a new file, after the old ones.
  auto fresh = std::move(AppendOne(*log, Bytes(10, 4))).value();
  EXPECT_GT(fresh.file, kept.file);
  EXPECT_NE(fresh.file, dropped.file);
}

TEST(ValueLogTest, AFailedWriteMakesNothingLiveAndTheNextGoesToANewFile) {
  TempDir dir;
  auto failing = std::make_shared<mnemo::testing::FailingFs>(rocksdb::FileSystem::Default());
  ValueLogOptions o;
  o.fs = failing.get();
  auto log = std::move(ValueLog::Open(dir.path(), o)).value();
  auto first = std::move(AppendOne(*log, Bytes(100, 1))).value();
  failing->fail = true;
  auto bad = AppendOne(*log, Bytes(100, 2));
  EXPECT_EQ(bad.status().code(), StatusCode::kIOError);
  failing->fail = false;
  EXPECT_EQ(log->live_bytes(), 100u);
  auto next = std::move(AppendOne(*log, Bytes(100, 3))).value();
  EXPECT_NE(next.file, first.file);
  EXPECT_EQ(ReadAll(*log, first), Bytes(100, 1));
  EXPECT_EQ(ReadAll(*log, next), Bytes(100, 3));
}

TEST(ValueLogTest, ABackupHoldKeepsFilesUntilTheyAreLinked) {
  TempDir dir;
  ValueLogOptions o;
  o.file_bytes = 100;
  auto log = std::move(ValueLog::Open(dir.Sub("log"), o)).value();
  auto a = std::move(AppendOne(*log, Bytes(200, 1))).value();
  auto b = std::move(AppendOne(*log, Bytes(200, 2))).value();
  (void)b;
  {
    ValueLog::DeletionHold hold(log.get());
    log->Release(a);
    EXPECT_EQ(FilesIn(dir.Sub("log")), 2u);  // held
    ASSERT_TRUE(log->LinkInto(dir.Sub("copy")).ok());
  }
  EXPECT_EQ(FilesIn(dir.Sub("log")), 1u);  // released with the hold
  EXPECT_EQ(FilesIn(dir.Sub("copy")), 2u);
  auto copy = std::move(ValueLog::Open(dir.Sub("copy"), o)).value();
  EXPECT_EQ(ReadAll(*copy, a), Bytes(200, 1));
}

}  // namespace
}  // namespace mnemo::storage

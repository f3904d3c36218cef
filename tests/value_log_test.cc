// The value log: values written once, read back checked, files deleted once
// nothing in them is referenced, never while a backup holds them.
#include "storage/value_log.h"

#include <filesystem>
#include <fstream>
#include <numeric>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

// What a same-host writer does: opens the reserved file by its path, checks
// it is the one the log named, and writes `bytes` at `offset`.
void WriteAsAnotherProcess(const ValueLog::Reservation& r, uint64_t offset,
                           const std::vector<uint8_t>& bytes) {
  const int fd = ::open(r.path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << r.path;
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(uint64_t(st.st_dev), r.device);
  EXPECT_EQ(uint64_t(st.st_ino), r.inode);
  ASSERT_EQ(::pwrite(fd, bytes.data(), bytes.size(), off_t(r.offset + offset)), ssize_t(bytes.size()));
  ::close(fd);
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

namespace mnemo::storage {
namespace {

// A same-host writer fills a reserved range through the file's path; Seal
// makes pieces of it values that read back checked, like appended ones.
TEST(ValueLogTest, ReservedRangesWrittenInPlaceAreSealedIntoValues) {
  TempDir dir;
  auto log = std::move(ValueLog::Open(dir.path(), {})).value();
  auto before = std::move(AppendOne(*log, Bytes(100, 1))).value();
  auto r = std::move(log->Reserve(7000, 0)).value();
  EXPECT_NE(r.file, before.file);  // Append never writes in a reserved file
  EXPECT_TRUE(fs::path(r.path).is_absolute());
  EXPECT_EQ(log->live_bytes(), 100u + 7000u);  // reserved bytes count as live
  WriteAsAnotherProcess(r, 0, Bytes(3000, 5));
  WriteAsAnotherProcess(r, 3000, Bytes(4000, 6));
  auto a = std::move(log->Seal(r, 0, 3000)).value();
  auto b = std::move(log->Seal(r, 3000, 4000)).value();
  EXPECT_EQ(ReadAll(*log, a), Bytes(3000, 5));
  EXPECT_EQ(ReadAll(*log, b), Bytes(4000, 6));
  EXPECT_EQ(ReadAll(*log, before), Bytes(100, 1));
  // The checksum is the bytes' at sealing: a later write is Corruption.
  WriteAsAnotherProcess(r, 10, Bytes(1, 99));
  std::vector<uint8_t> out(3000);
  EXPECT_EQ(log->Read(a, out.data()).code(), StatusCode::kCorruption);
  EXPECT_EQ(log->Seal(r, 3000, 4001).status().code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(log->SyncReserved(r).ok());
  // Live bytes follow the pieces as they would appended values.
  log->Release(a);
  log->Release(b);
  EXPECT_EQ(log->live_bytes(), 100u);
}

// A range the writer did not fill is refused at sealing; an abandoned range
// is released as a whole, and its file is deleted, never recycled, once it
// is dead: its writer may still be writing.
TEST(ValueLogTest, UnwrittenRangesAreRefusedAtSealingAndAbandonedOnesReleased) {
  TempDir dir;
  auto log = std::move(ValueLog::Open(dir.path(), {})).value();
  auto r = std::move(log->Reserve(5000, 0)).value();
  WriteAsAnotherProcess(r, 0, Bytes(1000, 1));  // the file ends at 1000
  auto sealed = log->Seal(r, 0, 5000);
  EXPECT_EQ(sealed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(sealed.status().message().find("not all written"), std::string::npos);
  log->Abandon(r);
  EXPECT_EQ(log->live_bytes(), 0u);

  ValueLogOptions small = SmallFiles(/*recycle_files=*/2);
  small.reserve_lanes = 1;
  TempDir dir2;
  auto log2 = std::move(ValueLog::Open(dir2.path(), small)).value();
  auto late = std::move(log2->Reserve(6000, 0)).value();
  auto done = std::move(log2->Reserve(6000, 0)).value();  // the same file
  ASSERT_EQ(done.file, late.file);
  ASSERT_TRUE(log2->Reserve(100, 0).ok());  // the file is full: the lane moves on
  WriteAsAnotherProcess(done, 0, Bytes(6000, 2));
  log2->Release(std::move(log2->Seal(done, 0, 6000)).value());
  log2->Abandon(late);  // the file is dead now
  EXPECT_FALSE(fs::exists(late.path));
  EXPECT_EQ(FilesIn(dir2.path()), 1u);
}

// Each lane reserves in its own file (a writer fills lanes in parallel);
// files of lanes are recycled as lanes' files, and recovery deletes those
// whose ranges were never committed.
TEST(ValueLogTest, LanesReserveInTheirOwnFilesAndRecoveryDropsUncommittedOnes) {
  TempDir dir;
  ValueLogOptions o = SmallFiles(1);
  o.reserve_lanes = 2;
  ValueLog::Reservation kept;
  ValueRef committed;
  {
    auto log = std::move(ValueLog::Open(dir.path(), o)).value();
    ASSERT_EQ(log->reserve_lanes(), 2u);
    auto r0 = std::move(log->Reserve(6000, 0)).value();
    auto r1 = std::move(log->Reserve(3000, 1)).value();
    EXPECT_NE(r0.file, r1.file);
    EXPECT_NE(r0.inode, r1.inode);
    EXPECT_EQ(log->Reserve(10, 2).status().code(), StatusCode::kInvalidArgument);
    // A lane's files hold file_bytes / lanes: the next range starts a file.
    auto r2 = std::move(log->Reserve(6000, 0)).value();
    EXPECT_NE(r2.file, r0.file);
    WriteAsAnotherProcess(r1, 0, Bytes(3000, 7));
    kept = r1;
    committed = std::move(log->Seal(r1, 0, 3000)).value();
    EXPECT_EQ(ReadAll(*log, committed), Bytes(3000, 7));
    // r0's file, dead and no lane's now, is kept for lanes to reuse.
    WriteAsAnotherProcess(r0, 0, Bytes(6000, 1));
    log->Release(std::move(log->Seal(r0, 0, 6000)).value());
    EXPECT_EQ(FilesIn(dir.path()), 3u);
    auto r3 = std::move(log->Reserve(6000, 0)).value();  // starts a file, recycling r0's
    EXPECT_EQ(r3.inode, r0.inode);
    EXPECT_EQ(FilesIn(dir.path()), 3u);
  }
  // Restart: only r1's piece was committed (reported live).
  auto log = std::move(ValueLog::Open(dir.path(), o)).value();
  log->AddLive(committed);
  ASSERT_TRUE(log->FinishRecovery().ok());
  // Of the two files with nothing committed, one is deleted and one kept to
  // be recycled (recycle_files = 1).
  EXPECT_EQ(log->file_count(), 1u);
  EXPECT_EQ(FilesIn(dir.path()), 2u);
  EXPECT_TRUE(fs::exists(kept.path));
  EXPECT_EQ(ReadAll(*log, committed), Bytes(3000, 7));
}

// 6,000 bytes of a file as a same-host reader (another process) reads them.
std::vector<uint8_t> ReadAt(const std::string& path, uint64_t offset) {
  const std::string got = mnemo::testing::ReadFileRange(path, offset, 6000);
  return std::vector<uint8_t>(got.begin(), got.end());
}

// A reader lease names the files a same-host reader reads by path and keeps
// them, even once every value in them is released, neither deleted nor
// recycled (whose bytes would change under the reader) until it lapses.
TEST(ValueLogTest, ReaderLeasesKeepDeadFilesAsTheyWereUntilTheyLapse) {
  TempDir dir;
  int64_t now = 1000;
  ValueLogOptions o = SmallFiles(1);
  o.now_ms = [&now] { return now; };
  auto log = std::move(ValueLog::Open(dir.path(), o)).value();
  auto refs = AppendSeeded(*log, 4);  // files 1 and 2
  const uint32_t numbers[] = {refs[0].file};
  auto ids = std::move(log->LeaseToReaders(numbers, 500)).value();
  ASSERT_EQ(ids.size(), 1u);
  struct stat st;
  ASSERT_EQ(::stat(ids[0].path.c_str(), &st), 0);
  EXPECT_EQ(uint64_t(st.st_ino), ids[0].inode);
  EXPECT_EQ(uint64_t(st.st_dev), ids[0].device);
  EXPECT_EQ(ReadAt(ids[0].path, refs[0].offset), Bytes(6000, 0));

  log->Release(refs[0]);
  log->Release(refs[1]);  // file 1 is dead, but leased
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(AppendOne(*log, Bytes(6000, uint8_t(40 + i))).ok());
  EXPECT_EQ(ReadAt(ids[0].path, refs[0].offset), Bytes(6000, 0));
  EXPECT_EQ(ReadAt(ids[0].path, refs[1].offset), Bytes(6000, 1));
  EXPECT_TRUE(log->LeaseToReaders(numbers, 500).ok());  // still there: leased again, to 1600

  now += 599;
  log->Release(refs[2]);  // a sweep: the lease has not lapsed yet
  EXPECT_TRUE(fs::exists(ids[0].path));
  now += 2;
  log->Release(refs[3]);  // lapsed: file 1 goes (recycled or deleted)
  EXPECT_EQ(log->LeaseToReaders(numbers, 500).status().code(), StatusCode::kNotFound);
  // A file that cannot be stat'ed (here: deleted behind the log's back) is
  // an IOError, for the reader to get over the network instead.
  auto fresh = std::move(AppendOne(*log, Bytes(100, 7))).value();
  const std::string path = dir.path() + "/" + std::string(6 - std::to_string(fresh.file).size(), '0') +
                           std::to_string(fresh.file) + ".vlog";
  ASSERT_TRUE(fs::remove(path)) << path;
  const uint32_t gone[] = {fresh.file};
  EXPECT_EQ(log->LeaseToReaders(gone, 500).status().code(), StatusCode::kIOError);
}

}  // namespace
}  // namespace mnemo::storage

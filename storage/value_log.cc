#include "storage/value_log.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include <sys/stat.h>

#include <rocksdb/file_system.h>
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>
#include <xxh_x86dispatch.h>  // XXH3 with the widest SIMD this CPU has (AVX2/AVX-512), picked at run time

#include "storage/keys.h"

namespace mnemo::storage {
namespace {

constexpr uint8_t kRefVersion = 1;
constexpr std::string_view kSuffix = ".vlog";

Status FromIo(const rocksdb::IOStatus& s, const std::string& what) {
  if (s.ok()) return Status::OK();
  if (s.IsNoSpace()) return Status::ResourceExhausted(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

// 42 -> "000042.vlog"; NumberOf is its inverse.
std::string FileName(uint32_t number) {
  char name[32];
  std::snprintf(name, sizeof(name), "%06" PRIu32 "%s", number, kSuffix.data());
  return name;
}

// "000042.vlog" -> 42; 0 for other names.
uint32_t NumberOf(const std::string& name) {
  if (name.size() <= kSuffix.size() || !name.ends_with(kSuffix)) return 0;
  uint32_t n = 0;
  for (size_t i = 0; i + kSuffix.size() < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9' || n > UINT32_MAX / 10 - 1) return 0;
    n = n * 10 + uint32_t(name[i] - '0');
  }
  return n;
}

// True when another name links to the file (a backup's hard link), or when
// that cannot be told: overwriting it would change the backup.
bool SharedWithABackup(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) != 0 || st.st_nlink != 1;
}

}  // namespace

std::string ValueRef::Encode() const {
  std::string out(1, char(kRefVersion));
  PutFixed32(&out, file);
  PutFixed64(&out, offset);
  PutFixed64(&out, length);
  PutFixed64(&out, checksum);
  return out;
}

Result<ValueRef> ValueRef::Decode(std::string_view in) {
  if (in.size() != kEncodedBytes || uint8_t(in[0]) != kRefVersion) {
    return Status::Corruption("bad value reference (" + std::to_string(in.size()) + " bytes)");
  }
  ValueRef r;
  r.file = DecodeFixed32(in.data() + 1);
  r.offset = DecodeFixed64(in.data() + 5);
  r.length = DecodeFixed64(in.data() + 13);
  r.checksum = DecodeFixed64(in.data() + 21);
  return r;
}

struct ValueLog::File {
  uint32_t number = 0;
  uint64_t size = 0;  // bytes appended (or reserved by an append in flight)
  uint64_t live = 0;  // bytes of values not released
  // The file being appended to; a file of reserved ranges keeps its writer
  // (never appended to) until it is deleted, to sync what was written in it.
  std::unique_ptr<rocksdb::FSWritableFile> writer;
  std::unique_ptr<rocksdb::FSRandomAccessFile> reader;
  std::string path;  // files of reserved ranges: absolute, and its identity
  uint64_t device = 0, inode = 0;
  bool never_recycle = false;  // a range in it was abandoned (see Abandon)
  int64_t leased_until_ms = 0;  // same-host readers may read it until then
};

ValueLog::ValueLog(std::string dir, ValueLogOptions options)
    : dir_(std::move(dir)),
      options_(options),
      fs_(options.fs != nullptr ? options.fs : rocksdb::FileSystem::Default().get()),
      lanes_(std::max<size_t>(1, options.reserve_lanes)),
      reserving_(lanes_, 0) {}

ValueLog::~ValueLog() {
  MutexLock lock(&mu_);
  for (auto& [n, f] : files_) {
    if (f->writer) (void)f->writer->Close(rocksdb::IOOptions(), nullptr);
  }
}

std::string ValueLog::PathOf(uint32_t number) const { return dir_ + "/" + FileName(number); }

Result<std::unique_ptr<ValueLog>> ValueLog::Open(const std::string& dir, ValueLogOptions options) {
  std::unique_ptr<ValueLog> log(new ValueLog(dir, options));
  rocksdb::IOOptions io;
  MNEMO_RETURN_IF_ERROR(FromIo(log->fs_->CreateDirIfMissing(dir, io, nullptr),
                               "cannot create value log directory '" + dir + "'"));
  std::vector<std::string> names;
  MNEMO_RETURN_IF_ERROR(FromIo(log->fs_->GetChildren(dir, io, &names, nullptr),
                               "cannot list value log directory '" + dir + "'"));
  MutexLock lock(&log->mu_);  // uncontended: the log is not out yet
  for (const auto& name : names) {
    const uint32_t n = NumberOf(name);
    if (n == 0) continue;
    auto f = std::make_shared<File>();
    f->number = n;
    const std::string path = log->PathOf(n);
    MNEMO_RETURN_IF_ERROR(FromIo(log->fs_->GetFileSize(path, io, &f->size, nullptr),
                                 "cannot stat '" + path + "'"));
    MNEMO_RETURN_IF_ERROR(FromIo(
        log->fs_->NewRandomAccessFile(path, rocksdb::FileOptions(), &f->reader, nullptr),
        "cannot open '" + path + "'"));
    log->files_.emplace(n, std::move(f));
    log->last_number_ = std::max(log->last_number_, n);
  }
  return log;
}

Status ValueLog::StartFileLocked(uint32_t* stream) {
  const uint32_t n = last_number_ + 1;
  if (n == 0) return Status::ResourceExhausted("value log file numbers are used up");
  auto f = std::make_shared<File>();
  f->number = n;
  const std::string path = PathOf(n);
  rocksdb::FileOptions fo;
  auto& recyclable = recyclable_[stream == &active_ ? 0 : 1];
  while (!recyclable.empty() && f->writer == nullptr) {
    const std::string old = PathOf(recyclable.back());
    recyclable.pop_back();
    // Renamed and written from offset 0; a failure leaves a file to delete.
    if (!fs_->ReuseWritableFile(path, old, fo, &f->writer, nullptr).ok()) {
      (void)fs_->DeleteFile(old, rocksdb::IOOptions(), nullptr);
    }
  }
  if (f->writer == nullptr) {
    MNEMO_RETURN_IF_ERROR(
        FromIo(fs_->NewWritableFile(path, fo, &f->writer, nullptr), "cannot create '" + path + "'"));
  }
  last_number_ = n;
  auto st = FromIo(fs_->NewRandomAccessFile(path, fo, &f->reader, nullptr), "cannot open '" + path + "'");
  if (st.ok() && stream != &active_) st = IdentifyForWriters(path, f.get());
  if (!st.ok()) {
    (void)f->writer->Close(rocksdb::IOOptions(), nullptr);
    (void)fs_->DeleteFile(path, rocksdb::IOOptions(), nullptr);
    return st;
  }
  const uint32_t previous = *stream;
  files_.emplace(n, std::move(f));
  *stream = n;
  if (previous != 0) {
    auto& old = files_.at(previous);
    if (stream == &active_) {
      (void)old->writer->Close(rocksdb::IOOptions(), nullptr);
      old->writer.reset();
    }
    MaybeDeleteLocked(previous);
  }
  return Status::OK();
}

Result<ValueLog::FileIdentity> ValueLog::Identify(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path abs = std::filesystem::absolute(path, ec);
  struct stat st;
  if (ec || ::stat(abs.c_str(), &st) != 0) {
    return Status::IOError("cannot stat '" + path + "' for same-host clients");
  }
  return FileIdentity{abs.string(), uint64_t(st.st_dev), uint64_t(st.st_ino)};
}

Status ValueLog::IdentifyForWriters(const std::string& path, File* f) {
  MNEMO_ASSIGN_OR_RETURN(FileIdentity id, Identify(path));
  f->path = std::move(id.path);
  f->device = id.device;
  f->inode = id.inode;
  return Status::OK();
}

int64_t ValueLog::NowMs() const {
  if (options_.now_ms) return options_.now_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Result<std::vector<ValueLog::FileIdentity>> ValueLog::LeaseToReaders(std::span<const uint32_t> files,
                                                                     int64_t lease_ms) {
  std::vector<FileIdentity> out;
  out.reserve(files.size());
  MutexLock lock(&mu_);
  SweepLapsedLeasesLocked();
  const int64_t until = NowMs() + lease_ms;
  for (uint32_t n : files) {
    auto it = files_.find(n);
    if (it == files_.end()) return Status::NotFound("value log file " + std::to_string(n) + " is gone");
    // stat under the lock: the file can be neither deleted nor recycled
    // between naming it and leasing it. One stat is a microsecond or two.
    MNEMO_ASSIGN_OR_RETURN(FileIdentity id, Identify(PathOf(n)));
    it->second->leased_until_ms = std::max(it->second->leased_until_ms, until);
    out.push_back(std::move(id));
  }
  return out;
}

void ValueLog::SweepLapsedLeasesLocked() {
  if (leased_dead_.empty()) return;
  const int64_t now = NowMs();
  std::vector<uint32_t> lapsed, kept;
  for (uint32_t n : leased_dead_) {
    auto it = files_.find(n);
    (it != files_.end() && it->second->leased_until_ms > now ? kept : lapsed).push_back(n);
  }
  leased_dead_ = std::move(kept);
  for (uint32_t n : lapsed) MaybeDeleteLocked(n);
}

Result<ValueRef> ValueLog::Append(std::span<const std::span<const uint8_t>> parts) {
  uint64_t length = 0;
  for (auto p : parts) length += p.size();
  MutexLock append_lock(&append_mu_);
  std::shared_ptr<File> file;
  ValueRef ref;
  {
    MutexLock lock(&mu_);
    if (active_ == 0 || files_.at(active_)->size >= options_.file_bytes) {
      MNEMO_RETURN_IF_ERROR(StartFileLocked(&active_));
    }
    file = files_.at(active_);
    ref.file = file->number;
    ref.offset = file->size;
    ref.length = length;
    file->size += length;  // reserved: readers never see it before a ref to it exists
    file->live += length;
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  rocksdb::IOStatus io;
  for (auto p : parts) {
    if (p.empty()) continue;
    io = file->writer->Append(rocksdb::Slice(reinterpret_cast<const char*>(p.data()), p.size()),
                              rocksdb::IOOptions(), nullptr);
    if (!io.ok()) break;
    XXH3_64bits_update(&state, p.data(), p.size());
  }
  if (io.ok() && options_.sync_writes) io = file->writer->Sync(rocksdb::IOOptions(), nullptr);
  if (!io.ok()) {
    // Where the file ends is now unknown: append to a fresh one from here on.
    MutexLock lock(&mu_);
    file->live -= length;
    (void)file->writer->Close(rocksdb::IOOptions(), nullptr);
    file->writer.reset();
    active_ = 0;
    MaybeDeleteLocked(file->number);
    return FromIo(io, "value log write to '" + PathOf(ref.file) + "' failed");
  }
  ref.checksum = XXH3_64bits_digest(&state);
  return ref;
}

std::shared_ptr<ValueLog::File> ValueLog::FindFile(uint32_t number) const {
  MutexLock lock(&mu_);
  auto it = files_.find(number);
  return it == files_.end() ? nullptr : it->second;
}

Status ValueLog::Read(const ValueRef& ref, std::span<const std::span<uint8_t>> into) const {
  uint64_t want = 0;
  for (auto p : into) want += p.size();
  if (want != ref.length) {
    return Status::InvalidArgument("value of " + std::to_string(ref.length) + " bytes read into " +
                                   std::to_string(want));
  }
  // A reader keeps the file open even if it is deleted meanwhile; a file
  // recycled meanwhile reads as other bytes. Either way the value was
  // released: NotFound, where anything else is Corruption.
  const auto gone = [] { return Status::NotFound("the value was deleted while it was read"); };
  const auto damaged = [&](std::string what) {
    return FindFile(ref.file) == nullptr ? gone() : Status::Corruption(std::move(what));
  };
  std::shared_ptr<File> file = FindFile(ref.file);
  if (file == nullptr) return gone();
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  uint64_t at = ref.offset;
  for (auto p : into) {
    if (p.empty()) continue;
    rocksdb::Slice got;
    auto io = file->reader->Read(at, p.size(), rocksdb::IOOptions(), &got,
                                 reinterpret_cast<char*>(p.data()), nullptr);
    MNEMO_RETURN_IF_ERROR(FromIo(io, "value log read of '" + PathOf(ref.file) + "' failed"));
    if (got.size() != p.size()) {
      return damaged("value log file '" + PathOf(ref.file) + "' ends before offset " +
                     std::to_string(at + p.size()));
    }
    if (got.data() != reinterpret_cast<const char*>(p.data())) std::memcpy(p.data(), got.data(), got.size());
    XXH3_64bits_update(&state, p.data(), p.size());
    at += p.size();
  }
  if (XXH3_64bits_digest(&state) != ref.checksum) {
    return damaged("checksum mismatch in value log file '" + PathOf(ref.file) + "' at offset " +
                   std::to_string(ref.offset));
  }
  return Status::OK();
}

Status ValueLog::Read(const ValueRef& ref, uint8_t* into) const {
  const std::span<uint8_t> one(into, ref.length);
  return Read(ref, std::span<const std::span<uint8_t>>(&one, 1));
}

void ValueLog::Release(const ValueRef& ref) {
  MutexLock lock(&mu_);
  SweepLapsedLeasesLocked();
  auto it = files_.find(ref.file);
  if (it == files_.end()) return;
  it->second->live -= std::min(it->second->live, ref.length);
  MaybeDeleteLocked(ref.file);
}

Result<ValueLog::Reservation> ValueLog::Reserve(uint64_t length, size_t lane) {
  if (lane >= lanes_) {
    return Status::InvalidArgument("lane " + std::to_string(lane) + " of " + std::to_string(lanes_));
  }
  MutexLock lock(&mu_);
  // The lanes' files together hold file_bytes, as the appended file does.
  uint32_t& number = reserving_[lane];
  if (number == 0 || files_.at(number)->size >= options_.file_bytes / lanes_) {
    MNEMO_RETURN_IF_ERROR(StartFileLocked(&number));
  }
  File& f = *files_.at(number);
  Reservation r{f.number, f.size, length, f.path, f.device, f.inode};
  f.size += length;
  f.live += length;
  return r;
}

Result<ValueRef> ValueLog::Seal(const Reservation& r, uint64_t offset, uint64_t length) const {
  if (offset > r.length || length > r.length - offset) {
    return Status::InvalidArgument("bytes " + std::to_string(offset) + "+" + std::to_string(length) +
                                   " are outside a reservation of " + std::to_string(r.length));
  }
  std::shared_ptr<File> file = FindFile(r.file);
  if (file == nullptr) return Status::NotFound("the reserved file " + PathOf(r.file) + " is gone");
  // Read back in pieces that stay in the core's cache while they are hashed.
  constexpr size_t kStep = size_t(512) << 10;
  thread_local std::unique_ptr<char[]> scratch(new char[kStep]);
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (uint64_t at = r.offset + offset, end = at + length; at < end;) {
    const size_t n = size_t(std::min<uint64_t>(kStep, end - at));
    rocksdb::Slice got;
    auto io = file->reader->Read(at, n, rocksdb::IOOptions(), &got, scratch.get(), nullptr);
    MNEMO_RETURN_IF_ERROR(FromIo(io, "value log read of '" + PathOf(r.file) + "' failed"));
    if (got.size() != n) {
      return Status::InvalidArgument("the reserved bytes of '" + PathOf(r.file) + "' end at offset " +
                                     std::to_string(at + got.size()) + ", before offset " +
                                     std::to_string(r.offset + r.length) + ": they were not all written");
    }
    XXH3_64bits_update(&state, got.data(), got.size());
    at += n;
  }
  return ValueRef{r.file, r.offset + offset, length, XXH3_64bits_digest(&state)};
}

Status ValueLog::SyncReserved(const Reservation& r) const {
  if (!options_.sync_writes) return Status::OK();
  std::shared_ptr<File> file = FindFile(r.file);
  if (file == nullptr || file->writer == nullptr) {
    return Status::NotFound("the reserved file " + PathOf(r.file) + " is gone");
  }
  return FromIo(file->writer->Sync(rocksdb::IOOptions(), nullptr),
                "value log sync of '" + PathOf(r.file) + "' failed");
}

void ValueLog::Abandon(const Reservation& r) {
  {
    // Its writer may still write (it stalled past the lapse, or the space
    // was dropped under it): were the file recycled, those bytes could land
    // in another put's range before that one is sealed.
    MutexLock lock(&mu_);
    auto it = files_.find(r.file);
    if (it != files_.end()) it->second->never_recycle = true;
  }
  Release(ValueRef{r.file, r.offset, r.length, 0});
}

void ValueLog::AddLive(const ValueRef& ref) {
  MutexLock lock(&mu_);
  auto it = files_.find(ref.file);
  if (it != files_.end()) it->second->live += ref.length;
}

Status ValueLog::FinishRecovery() {
  MutexLock lock(&mu_);
  std::vector<uint32_t> numbers;
  for (auto& [n, f] : files_) numbers.push_back(n);
  for (uint32_t n : numbers) MaybeDeleteLocked(n);
  return Status::OK();
}

void ValueLog::MaybeDeleteLocked(uint32_t number) {
  auto it = files_.find(number);
  if (it == files_.end() || number == active_ || it->second->live != 0 ||
      std::find(reserving_.begin(), reserving_.end(), number) != reserving_.end()) {
    return;
  }
  if (holds_ > 0) {
    deferred_.push_back(number);
    return;
  }
  if (it->second->leased_until_ms > NowMs()) {
    if (std::find(leased_dead_.begin(), leased_dead_.end(), number) == leased_dead_.end()) {
      leased_dead_.push_back(number);
    }
    return;
  }
  const bool reserved = !it->second->path.empty();
  const bool recyclable = !it->second->never_recycle;
  files_.erase(it);  // readers in flight keep their handle
  // recycle_files for each file being written: the one appended to, and
  // the lanes' (a lane's files are smaller: each kind is reused as its own).
  auto& pool = recyclable_[reserved ? 1 : 0];
  const size_t keep = options_.recycle_files * (reserved ? lanes_ : 1);
  if (recyclable && pool.size() < keep && !SharedWithABackup(PathOf(number))) {
    pool.push_back(number);
    return;
  }
  // A file that cannot be deleted is only wasted space; the next start retries.
  (void)fs_->DeleteFile(PathOf(number), rocksdb::IOOptions(), nullptr);
}

ValueLog::DeletionHold::DeletionHold(ValueLog* log) : log_(log) {
  MutexLock lock(&log_->mu_);
  log_->holds_++;
}

ValueLog::DeletionHold::~DeletionHold() {
  MutexLock lock(&log_->mu_);
  if (--log_->holds_ > 0) return;
  auto deferred = std::move(log_->deferred_);
  log_->deferred_.clear();
  for (uint32_t n : deferred) log_->MaybeDeleteLocked(n);
}

Status ValueLog::LinkInto(const std::string& dir) const {
  rocksdb::IOOptions io;
  MNEMO_RETURN_IF_ERROR(FromIo(fs_->CreateDirIfMissing(dir, io, nullptr), "cannot create '" + dir + "'"));
  std::vector<uint32_t> numbers;
  {
    MutexLock lock(&mu_);
    for (auto& [n, f] : files_) numbers.push_back(n);
  }
  for (uint32_t n : numbers) {
    const std::string from = PathOf(n);
    const std::string to = dir + "/" + FileName(n);
    // Files are append-only, so a link is a consistent copy of every value
    // a ref in the checkpoint names.
    if (fs_->LinkFile(from, to, io, nullptr).ok()) continue;
    std::unique_ptr<rocksdb::FSSequentialFile> in;
    std::unique_ptr<rocksdb::FSWritableFile> out;
    MNEMO_RETURN_IF_ERROR(FromIo(fs_->NewSequentialFile(from, rocksdb::FileOptions(), &in, nullptr),
                                 "cannot open '" + from + "'"));
    MNEMO_RETURN_IF_ERROR(FromIo(fs_->NewWritableFile(to, rocksdb::FileOptions(), &out, nullptr),
                                 "cannot create '" + to + "'"));
    std::vector<char> buf(4 << 20);
    for (;;) {
      rocksdb::Slice got;
      MNEMO_RETURN_IF_ERROR(FromIo(in->Read(buf.size(), io, &got, buf.data(), nullptr), "cannot read '" + from + "'"));
      if (got.empty()) break;
      MNEMO_RETURN_IF_ERROR(FromIo(out->Append(got, io, nullptr), "cannot write '" + to + "'"));
    }
    MNEMO_RETURN_IF_ERROR(FromIo(out->Sync(io, nullptr), "cannot sync '" + to + "'"));
    MNEMO_RETURN_IF_ERROR(FromIo(out->Close(io, nullptr), "cannot close '" + to + "'"));
  }
  return Status::OK();
}

uint64_t ValueLog::file_bytes() const {
  MutexLock lock(&mu_);
  uint64_t n = 0;
  for (auto& [k, f] : files_) n += f->size;
  return n;
}

uint64_t ValueLog::live_bytes() const {
  MutexLock lock(&mu_);
  uint64_t n = 0;
  for (auto& [k, f] : files_) n += f->live;
  return n;
}

size_t ValueLog::file_count() const {
  MutexLock lock(&mu_);
  return files_.size();
}

}  // namespace mnemo::storage

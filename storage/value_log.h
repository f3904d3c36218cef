// ValueLog: large values (encoded KV layers, megabytes each) written once to
// append-only files beside the RocksDB store, addressed by a ValueRef that
// the caller keeps in RocksDB (the WiscKey design).
//
// Why not RocksDB's blob files: its integrated BlobDB copies every value
// three times on the way to disk (write-ahead log, memtable, blob file at
// flush) and checksums it twice with CRC32c; a KV segment of 32 MiB then
// costs more than its transfer. Here a value is written once, checksummed
// with XXH3, and read back with one pread straight into the caller's memory.
//
// Durability: Append returns after the bytes are in the file (the OS page
// cache), with ValueLogOptions::sync_writes after they are synced. The
// caller makes a value live by committing its ValueRef to RocksDB after
// Append returned; a value whose ref never got committed (a crash, a failed
// batch) is dead space. A file whose values are all released (the file
// being appended to excepted) is deleted, or kept to be recycled: up to
// ValueLogOptions::recycle_files such files are renamed to the next file
// number and overwritten from the start, as RocksDB recycles its logs.
// Writing over pages the OS already caches runs many times faster than
// growing the page cache (README, "Same-host puts", has the figures); files
// a backup links to are never recycled.
//
// Same-host writers: a process on this machine may write a value in place
// instead of handing its bytes to Append (a client's put skips the network
// and one copy). Reserve sets aside a range of a file that Append never
// writes to; the writer fills it through the file's path; Seal then makes
// pieces of the range values, checksummed as the file holds them at that
// moment. The log cannot tell who wrote the bytes: it seals what is there.
// Until its pieces are sealed and later released, or it is abandoned, a
// reserved range counts as live, so its file is neither deleted nor
// recycled under the writer.
//
// Same-host readers: a process on this machine may also read committed
// values through the files' paths (a client loading KV layers straight into
// its pinned memory). LeaseToReaders names the files and keeps each from
// being deleted or recycled until the lease lapses, even once every value
// in it is released: bytes under a ref the reader was given stay as they
// were for that long. A reader must finish within the lease, or check what
// it read (the refs' checksums) itself.
//
// Recovery: Open starts a new file to append to; the owner reports every
// committed ref with AddLive and then calls FinishRecovery, which deletes
// the files that hold no live value.
//
// Thread-safe. Appends take turns (one file being appended to); reads run
// in parallel with each other and with appends. Errors: IOError for a failed
// write, read or sync (nothing is made live); NotFound for a read of a value
// whose file was deleted or recycled (every value in it was released);
// Corruption when the bytes read do not match the ref's checksum.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"
#include "common/thread_annotations.h"

namespace rocksdb {
class FileSystem;
class FSWritableFile;
class FSRandomAccessFile;
}  // namespace rocksdb

namespace mnemo::storage {

// Where a value lies, and its checksum. Stored in RocksDB as 29 bytes.
struct ValueRef {
  uint32_t file = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t checksum = 0;  // XXH3-64 of the value

  static constexpr size_t kEncodedBytes = 29;
  std::string Encode() const;
  static Result<ValueRef> Decode(std::string_view bytes);
  bool operator==(const ValueRef&) const = default;
};

struct ValueLogOptions {
  // Sync each appended value before Append returns.
  bool sync_writes = false;
  // A new file is started once the current one holds this many bytes.
  uint64_t file_bytes = uint64_t(256) << 20;
  // Dead files kept to be overwritten by later appends (see above), for
  // each file being written (the one appended to, and those reserved in).
  size_t recycle_files = 2;
  // Files reserved in at once, so that a same-host writer fills several in
  // parallel: the kernel takes one file's writes in turn, so several files
  // take several times one file's rate (bench/page_cache_writes.py measures
  // it; README, "Same-host puts").
  size_t reserve_lanes = 8;
  // File I/O, a seam for fault injection; not owned; the default when null.
  rocksdb::FileSystem* fs = nullptr;
  // Milliseconds on a monotonic clock, for reader leases; a seam for tests.
  // The steady clock when empty.
  std::function<int64_t()> now_ms;
};

class ValueLog {
 public:
  // Opens (creating it if missing) the log in directory `dir`.
  static Result<std::unique_ptr<ValueLog>> Open(const std::string& dir, ValueLogOptions options);
  ~ValueLog();
  ValueLog(const ValueLog&) = delete;
  ValueLog& operator=(const ValueLog&) = delete;

  // Writes the concatenation of `parts` as one value.
  Result<ValueRef> Append(std::span<const std::span<const uint8_t>> parts);
  // Reads a value into consecutive destinations whose sizes add up to
  // ref.length, and checks it against the ref's checksum.
  Status Read(const ValueRef& ref, std::span<const std::span<uint8_t>> into) const;
  Status Read(const ValueRef& ref, uint8_t* into) const;

  // The value is no longer referenced (its ref was deleted, and the delete
  // committed, or its ref was never committed).
  void Release(const ValueRef& ref);

  // Same-host writers (see the header comment).
  struct Reservation {
    uint32_t file = 0;
    uint64_t offset = 0, length = 0;
    std::string path;                // absolute, for the writer to open
    uint64_t device = 0, inode = 0;  // of that file: the writer checks it opened this one
  };
  // A range in the file of lane `lane` (0 <= lane < reserve_lanes()).
  // IOError when the file cannot be created or stat'ed.
  Result<Reservation> Reserve(uint64_t length, size_t lane);
  size_t reserve_lanes() const { return lanes_; }
  // The bytes [offset, offset + length) of `r` (offset relative to the
  // range) as one value. Thread-safe and const: pieces may be sealed in
  // parallel. With sync_writes call SyncReserved before committing refs.
  Result<ValueRef> Seal(const Reservation& r, uint64_t offset, uint64_t length) const;
  Status SyncReserved(const Reservation& r) const;  // OK at once without sync_writes
  bool syncs_writes() const { return options_.sync_writes; }
  // Releases the whole range. Call it instead of releasing sealed pieces
  // when none of them got committed; never both. The file is then deleted,
  // not recycled, once nothing in it lives: a writer that is late does no
  // harm to the puts after it.
  void Abandon(const Reservation& r);

  // Same-host readers (see the header comment). The identities of
  // `files` (numbers from refs), in that order, each leased for `lease_ms`
  // from now (a lease already longer stays). NotFound for a file that is
  // gone (its values were released meanwhile); IOError when a file cannot
  // be stat'ed (e.g. a file system that is not the machine's).
  struct FileIdentity {
    std::string path;  // absolute
    uint64_t device = 0, inode = 0;
  };
  Result<std::vector<FileIdentity>> LeaseToReaders(std::span<const uint32_t> files, int64_t lease_ms);

  // Recovery: see the header comment.
  void AddLive(const ValueRef& ref);
  Status FinishRecovery();

  // Backups: while a hold is alive no file is deleted, so that a RocksDB
  // checkpoint taken under it finds every file its refs name; LinkInto then
  // hard-links (or copies) every file into `dir`.
  class DeletionHold {
   public:
    explicit DeletionHold(ValueLog* log);
    ~DeletionHold();
    DeletionHold(const DeletionHold&) = delete;
    DeletionHold& operator=(const DeletionHold&) = delete;

   private:
    ValueLog* const log_;
  };
  Status LinkInto(const std::string& dir) const;

  // Bytes in files on disk, and of those the bytes of live values.
  uint64_t file_bytes() const;
  uint64_t live_bytes() const;
  size_t file_count() const;

 private:
  struct File;
  ValueLog(std::string dir, ValueLogOptions options);
  std::string PathOf(uint32_t number) const;
  // A new file for `stream` (&active_ or a lane of reserving_) from then on.
  Status StartFileLocked(uint32_t* stream) REQUIRES(mu_);
  // Fills f's path (absolute), device and inode, which writers check.
  static Status IdentifyForWriters(const std::string& path, File* f);
  static Result<FileIdentity> Identify(const std::string& path);
  int64_t NowMs() const;
  // Deletes (or recycles) the dead files whose reader lease lapsed.
  void SweepLapsedLeasesLocked() REQUIRES(mu_);
  void MaybeDeleteLocked(uint32_t number) REQUIRES(mu_);
  std::shared_ptr<File> FindFile(uint32_t number) const;

  const std::string dir_;
  const ValueLogOptions options_;
  rocksdb::FileSystem* const fs_;
  const size_t lanes_;  // reserve lanes

  Mutex append_mu_ ACQUIRED_BEFORE(mu_);  // one append at a time
  mutable Mutex mu_;
  std::map<uint32_t, std::shared_ptr<File>> files_ GUARDED_BY(mu_);
  uint32_t active_ GUARDED_BY(mu_) = 0;  // the file appended to (0: none yet)
  // Per lane, the file ranges are reserved in (0: none yet).
  std::vector<uint32_t> reserving_ GUARDED_BY(mu_);
  int holds_ GUARDED_BY(mu_) = 0;
  std::vector<uint32_t> deferred_ GUARDED_BY(mu_);  // files to delete once holds_ is 0
  std::vector<uint32_t> leased_dead_ GUARDED_BY(mu_);  // dead files a reader lease keeps
  // Dead files on disk, not in files_: [0] were appended to, [1] reserved in.
  std::array<std::vector<uint32_t>, 2> recyclable_ GUARDED_BY(mu_);
  uint32_t last_number_ GUARDED_BY(mu_) = 0;  // the highest file number used
};

}  // namespace mnemo::storage

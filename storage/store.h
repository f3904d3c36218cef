// Store: mnemo's durable state, one RocksDB database with five column
// families (see storage/keys.h for what each holds).
//
// Thread-safe: every method may be called from any thread without external
// synchronization. Writes are atomic per WriteBatch.
//
// Durability: Write() returns OK only after the batch is in the write-ahead
// log, and with StoreOptions::sync_writes only after the log is synced. If a
// write ever fails (I/O error, disk full, failed sync) nothing of it is
// stored, and the store refuses all later writes instead of acknowledging
// data that may be lost; reads keep working. That write and every later one
// fail with FailedPrecondition (retrying cannot help), naming the first
// error; write_error() returns that error. Reopen to recover.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace rocksdb {
class Env;
}

namespace mnemo::storage {

enum class Cf { kMeta = 0, kEntries = 1, kCodes = 2, kIndex = 3, kKv = 4 };

struct StoreOptions {
  // Sync the write-ahead log before acknowledging each write.
  bool sync_writes = false;
  // Create the database if it does not exist.
  bool create_if_missing = true;
  // Seam for fault injection in tests; not owned, must outlive the Store.
  rocksdb::Env* env = nullptr;
};

class Store;

// A set of updates applied atomically by Store::Write to the store it was
// made for. Not thread-safe.
class WriteBatch {
 public:
  explicit WriteBatch(const Store& store);
  ~WriteBatch();
  WriteBatch(WriteBatch&&) noexcept;
  WriteBatch& operator=(WriteBatch&&) noexcept;

  void Put(Cf cf, std::string_view key, std::string_view value);
  void Delete(Cf cf, std::string_view key);
  // Deletes every key in [begin, end).
  void DeleteRange(Cf cf, std::string_view begin, std::string_view end);
  size_t Count() const;
  size_t ByteSize() const;

 private:
  friend class Store;
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

class Store {
 public:
  // Opens (or creates) the database in `dir`.
  static Result<std::unique_ptr<Store>> Open(const std::string& dir,
                                             const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  Status Write(WriteBatch* batch);

  // The value of `key`, or std::nullopt when absent.
  Result<std::optional<std::string>> Get(Cf cf, std::string_view key) const;
  // Values of many keys of one column family, in order; absent ones nullopt.
  Result<std::vector<std::optional<std::string>>> MultiGet(
      Cf cf, const std::vector<std::string>& keys) const;

  // Calls fn for each key in [begin, end) in key order, from a consistent
  // snapshot, until fn returns false.
  using ScanFn = std::function<bool(std::string_view key, std::string_view value)>;
  Status Scan(Cf cf, std::string_view begin, std::string_view end,
              const ScanFn& fn) const;

  // A forward iterator over [begin, end) of one column family, reading a
  // consistent snapshot. Not thread-safe; must not outlive the Store.
  class Iterator {
   public:
    virtual ~Iterator() = default;
    virtual bool Valid() const = 0;
    virtual void Next() = 0;
    virtual std::string_view key() const = 0;
    virtual std::string_view value() const = 0;
    // Non-OK when the scan stopped on an error rather than at the end.
    virtual Status status() const = 0;
  };
  std::unique_ptr<Iterator> NewIterator(Cf cf, std::string_view begin,
                                        std::string_view end) const;

  // Approximate bytes on disk and in memtables of keys in [begin, end).
  uint64_t ApproximateBytes(Cf cf, std::string_view begin, std::string_view end) const;

  // Flushes memtables to SST files (used before snapshots and on close).
  Status Flush();
  // Writes a consistent point-in-time copy of the database to `dir`, which
  // must not exist (hard links where possible).
  Status Checkpoint(const std::string& dir);

  // The error that stopped writes (IOError, ResourceExhausted for a full
  // disk, ...), or OK.
  Status write_error() const;

 private:
  friend class WriteBatch;
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mnemo::storage

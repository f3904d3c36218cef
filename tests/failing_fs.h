// Fault injection through RocksDB's FileSystem seam.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include <rocksdb/file_system.h>

namespace mnemo::testing {

// A file system whose writable files fail every append while `fail` is set,
// report a full disk on every append while `no_space` is, fail every sync
// while `fail_sync` is, and hold every append (the writer waits, `held`
// counts it) while `hold` is.
class FailingFs : public rocksdb::FileSystemWrapper {
 public:
  explicit FailingFs(const std::shared_ptr<rocksdb::FileSystem>& base) : FileSystemWrapper(base) {}
  const char* Name() const override { return "FailingFs"; }
  std::atomic<bool> fail{false};
  std::atomic<bool> no_space{false};
  std::atomic<bool> fail_sync{false};
  std::atomic<bool> hold{false};
  std::atomic<int> held{0};
  rocksdb::IOStatus Injected() const {
    if (fail) return rocksdb::IOStatus::IOError("injected write failure");
    if (no_space) return rocksdb::IOStatus::NoSpace("injected: no space left on device");
    return rocksdb::IOStatus::OK();
  }
  void Gate() {
    if (!hold) return;
    held++;
    while (hold) std::this_thread::yield();
  }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewWritableFile(f, o, r, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), this);
    return s;
  }

  rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                      const rocksdb::FileOptions& o,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->ReuseWritableFile(f, old, o, r, dbg);
    if (s.ok()) *r = std::make_unique<File>(std::move(*r), this);
    return s;
  }

 private:
  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> f, FailingFs* fs)
        : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& d, const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* dbg) override {
      fs_->Gate();
      if (rocksdb::IOStatus s = fs_->Injected(); !s.ok()) return s;
      return FSWritableFileOwnerWrapper::Append(d, o, dbg);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& d, const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v,
                             rocksdb::IODebugContext* dbg) override {
      fs_->Gate();
      if (rocksdb::IOStatus s = fs_->Injected(); !s.ok()) return s;
      return FSWritableFileOwnerWrapper::Append(d, o, v, dbg);
    }

    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
      if (fs_->fail_sync) return rocksdb::IOStatus::IOError("injected sync failure");
      return FSWritableFileOwnerWrapper::Sync(o, dbg);
    }

   private:
    FailingFs* fs_;
  };
};

}  // namespace mnemo::testing

// RwLock: a reader/writer lock that lets a waiting writer in ahead of new
// readers. std::shared_mutex on glibc prefers readers, so a steady stream of
// searches can starve an index update forever; this one cannot.
// Meets the SharedMutex requirements; hold it with ReaderLock / WriterLock
// below, which clang's thread-safety analysis follows.
#pragma once

#include <pthread.h>

#include "common/thread_annotations.h"

namespace mnemo {

class CAPABILITY("rwlock") RwLock {
 public:
  RwLock() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock_, &attr);
    pthread_rwlockattr_destroy(&attr);
  }
  ~RwLock() { pthread_rwlock_destroy(&lock_); }
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void lock() ACQUIRE() { pthread_rwlock_wrlock(&lock_); }
  bool try_lock() TRY_ACQUIRE(true) { return pthread_rwlock_trywrlock(&lock_) == 0; }
  void unlock() RELEASE() { pthread_rwlock_unlock(&lock_); }
  // Not reentrant: a thread holding it shared must not take it shared again
  // while a writer waits.
  void lock_shared() ACQUIRE_SHARED() { pthread_rwlock_rdlock(&lock_); }
  bool try_lock_shared() TRY_ACQUIRE(true) { return pthread_rwlock_tryrdlock(&lock_) == 0; }
  void unlock_shared() RELEASE_SHARED() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

// Holds an RwLock shared (readers) for its scope.
class SCOPED_CAPABILITY ReaderLock {
 public:
  explicit ReaderLock(RwLock* mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_->lock_shared(); }
  ~ReaderLock() RELEASE() { mu_->unlock_shared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  RwLock* const mu_;
};

// Holds an RwLock exclusively (a writer) for its scope.
class SCOPED_CAPABILITY WriterLock {
 public:
  explicit WriterLock(RwLock* mu) ACQUIRE(mu) : mu_(mu) { mu_->lock(); }
  ~WriterLock() RELEASE() { mu_->unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  RwLock* const mu_;
};

}  // namespace mnemo

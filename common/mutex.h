// Mutex and MutexLock: std::mutex with the annotations clang's thread-safety
// analysis needs (common/thread_annotations.h); libstdc++'s own types carry
// none, so members guarded by a std::mutex cannot be checked.
//
// Mutex meets Lockable, so std::condition_variable_any can wait on a
// MutexLock (or on the Mutex itself).
#pragma once

#include <mutex>

#include "common/thread_annotations.h"

namespace mnemo {

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // For the analysis only: the caller knows the lock is held.
  void AssertHeld() const ASSERT_CAPABILITY(this) {}

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope; unlock() and lock() let go of it and take it
// again in between (a wait, a call that must run unlocked).
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ACQUIRE(mu) : mu_(mu) { mu_->lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mu_->unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() RELEASE() {
    mu_->unlock();
    held_ = false;
  }
  void lock() ACQUIRE() {
    mu_->lock();
    held_ = true;
  }

 private:
  Mutex* const mu_;
  bool held_ = true;
};

}  // namespace mnemo

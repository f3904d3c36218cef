#include "net/buffer_pool.h"

#include <map>
#include <utility>

#include "common/mutex.h"

namespace mnemo::net {
namespace {

// Buffers at most twice the size asked for are reused; free ones are kept
// by capacity, up to `limit` bytes in all.
class Pool {
 public:
  uint8_t* Take(size_t size, size_t* capacity) {
    {
      MutexLock lock(&mu_);
      auto it = free_.lower_bound(size);
      if (it != free_.end() && it->first <= 2 * size) {
        uint8_t* p = it->second;
        *capacity = it->first;
        kept_ -= it->first;
        free_.erase(it);
        return p;
      }
    }
    *capacity = size;
    return new uint8_t[size];  // uninitialized
  }

  void Give(uint8_t* p, size_t capacity) {
    MutexLock lock(&mu_);
    if (capacity > limit_) {
      lock.unlock();
      delete[] p;
      return;
    }
    free_.emplace(capacity, p);
    kept_ += capacity;
    TrimLocked();
  }

  // Over the limit: the smallest go first (the big ones are what the pool
  // is for).
  void TrimLocked() REQUIRES(mu_) {
    while (kept_ > limit_) {
      auto it = free_.begin();
      kept_ -= it->first;
      delete[] it->second;
      free_.erase(it);
    }
  }

  size_t Kept() {
    MutexLock lock(&mu_);
    return kept_;
  }

  void SetLimit(size_t bytes) {
    MutexLock lock(&mu_);
    limit_ = bytes;
    TrimLocked();
  }

 private:
  Mutex mu_;
  std::multimap<size_t, uint8_t*> free_ GUARDED_BY(mu_);
  size_t kept_ GUARDED_BY(mu_) = 0;
  size_t limit_ GUARDED_BY(mu_) = size_t(512) << 20;
};

Pool& ThePool() {
  static Pool* pool = new Pool();  // never destroyed: buffers may outlive main
  return *pool;
}

}  // namespace

Buffer Buffer::Acquire(size_t size) {
  Buffer b;
  if (size == 0) return b;
  b.data_ = ThePool().Take(size, &b.capacity_);
  b.size_ = size;
  return b;
}

Buffer::~Buffer() {
  if (data_ != nullptr) ThePool().Give(data_, capacity_);
}

Buffer::Buffer(Buffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      capacity_(std::exchange(o.capacity_, 0)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) ThePool().Give(data_, capacity_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    capacity_ = std::exchange(o.capacity_, 0);
  }
  return *this;
}

void SetBufferPoolLimit(size_t bytes) { ThePool().SetLimit(bytes); }
size_t BufferPoolBytesKept() { return ThePool().Kept(); }

}  // namespace mnemo::net

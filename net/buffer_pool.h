// Buffer: a large byte buffer for frame attachments (KV layers, megabytes
// each), recycled through a process-wide pool.
//
// Why a pool: memory fresh from the allocator of this size is mmapped and
// costs a page fault per 4 KiB on first touch (and on virtual machines a
// second fault in the host): for a 32 MiB segment that was a third of a
// get's time. A recycled buffer is already mapped. The bytes of a buffer
// from Acquire are uninitialized.
//
// Thread-safe: buffers may be acquired and dropped on any thread; a Buffer
// itself is not shared between threads without synchronization.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace mnemo::net {

class Buffer {
 public:
  Buffer() = default;
  // At least `size` bytes, uninitialized.
  static Buffer Acquire(size_t size);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// How many bytes the pool keeps for reuse at most (default 512 MiB); larger
// buffers, and any beyond it, are freed (at once, when the limit shrinks).
void SetBufferPoolLimit(size_t bytes);
// Bytes of free buffers the pool holds now.
size_t BufferPoolBytesKept();

}  // namespace mnemo::net

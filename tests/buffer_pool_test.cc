// Attachment buffers are recycled: a buffer given back is the next one of a
// similar size handed out, so its pages are already mapped.
#include "net/buffer_pool.h"

#include <gtest/gtest.h>

namespace mnemo::net {
namespace {

TEST(BufferPoolTest, AGivenBackBufferIsReusedForASimilarSize) {
  const uint8_t* first;
  {
    Buffer a = Buffer::Acquire(3 << 20);
    ASSERT_EQ(a.size(), size_t(3) << 20);
    a.data()[0] = 1;
    first = a.data();
  }
  Buffer b = Buffer::Acquire(2 << 20);  // at most twice smaller: the same memory
  EXPECT_EQ(b.data(), first);
  EXPECT_EQ(b.size(), size_t(2) << 20);
  Buffer c = Buffer::Acquire(1 << 20);  // the pool has nothing free now
  EXPECT_NE(c.data(), first);
}

TEST(BufferPoolTest, MovesTransferOwnershipAndEmptyIsFree) {
  Buffer a = Buffer::Acquire(100);
  const uint8_t* p = a.data();
  Buffer b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_TRUE(a.empty());  // NOLINT: moved-from is empty by contract
  EXPECT_TRUE(Buffer::Acquire(0).empty());
}

TEST(BufferPoolTest, BuffersOverTheLimitAreNotKept) {
  SetBufferPoolLimit(0);  // empties the pool
  EXPECT_EQ(BufferPoolBytesKept(), 0u);
  SetBufferPoolLimit(1 << 20);
  { Buffer big = Buffer::Acquire(8 << 20); }
  EXPECT_EQ(BufferPoolBytesKept(), 0u);  // freed, not kept
  { Buffer small = Buffer::Acquire(4 << 10); }
  EXPECT_EQ(BufferPoolBytesKept(), size_t(4) << 10);
  SetBufferPoolLimit(size_t(512) << 20);
}

}  // namespace
}  // namespace mnemo::net

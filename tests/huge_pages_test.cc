// AdviseHugePages: large buffers move onto 2 MiB pages, contents unchanged.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "common/huge_pages.h"

namespace mnemo {
namespace {

// AnonHugePages (bytes) of the mapping of this process that holds `at`.
size_t HugeBytesAround(const void* at) {
  const auto addr = reinterpret_cast<uintptr_t>(at);
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    unsigned long long start, end;
    if (std::sscanf(line.c_str(), "%llx-%llx ", &start, &end) == 2 && line.find(':') > line.find(' ')) {
      inside = start <= addr && addr < end;
    } else if (inside && line.rfind("AnonHugePages:", 0) == 0) {
      std::istringstream fields(line.substr(14));
      size_t kb = 0;
      fields >> kb;
      return kb << 10;
    }
  }
  return 0;
}

std::vector<uint32_t> Counting(size_t bytes) {
  std::vector<uint32_t> v(bytes / sizeof(uint32_t));
  std::iota(v.begin(), v.end(), 7u);
  return v;
}

TEST(HugePagesTest, ABufferWithoutAWholeHugePageIsLeftAlone) {
  auto small = Counting(kHugePageBytes / 2);
  EXPECT_EQ(AdviseHugePages(small.data(), small.size() * sizeof(uint32_t)), HugePages::kTooSmall);
  EXPECT_EQ(AdviseHugePages(nullptr, 0), HugePages::kTooSmall);
}

TEST(HugePagesTest, ALargeBufferKeepsItsContentsAndIsCollapsedWhereTheKernelCan) {
  // Faulted in on 4 KiB pages first, as a vector that grew by copying is.
  auto big = Counting(5 * kHugePageBytes);
  const auto want = big;
  const HugePages got = AdviseHugePages(big.data(), big.size() * sizeof(uint32_t));
  EXPECT_NE(got, HugePages::kTooSmall);
  EXPECT_EQ(big, want);
  if (got == HugePages::kCollapsed) {
    // Every whole 2 MiB page inside the buffer: at least 4 of them.
    EXPECT_GE(HugeBytesAround(big.data() + big.size() / 2), 4 * kHugePageBytes);
  } else {
    std::printf("kernel result %d (no MADV_COLLAPSE here): khugepaged collapses later\n", int(got));
  }
}

}  // namespace
}  // namespace mnemo

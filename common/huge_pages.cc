#include "common/huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1; older headers lack it
#endif

namespace mnemo {

HugePages AdviseHugePages(const void* data, size_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t last = (begin + bytes) & ~(kHugePageBytes - 1);
  if (data == nullptr || last <= first) return HugePages::kTooSmall;
  void* at = reinterpret_cast<void*>(first);
  const size_t length = last - first;
  if (madvise(at, length, MADV_HUGEPAGE) != 0) return HugePages::kUnsupported;
  // EINVAL before Linux 6.1; EAGAIN/ENOMEM when no huge page was free, in
  // which case khugepaged retries later.
  return madvise(at, length, MADV_COLLAPSE) == 0 ? HugePages::kCollapsed : HugePages::kAdvised;
}

}  // namespace mnemo

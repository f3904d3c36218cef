// Huge pages for large, randomly read arrays (HNSW graphs and their vectors).
//
// An HNSW search reads a few hundred vectors and neighbour lists scattered
// over the whole index, each on a different 4 KiB page: a TLB miss apiece,
// and on a virtual machine a two-level page walk. On 2 MiB pages the index
// of 100k x 128 floats needs 40 TLB entries instead of 20,000 (README,
// "Huge pages", has what that bought).
//
// AdviseHugePages marks the 2 MiB-aligned interior of a buffer for
// transparent huge pages (madvise MADV_HUGEPAGE: pages faulted from now on
// are huge), then asks the kernel to move what is already there onto huge
// pages at once (MADV_COLLAPSE, Linux 6.1 and later; before that, the
// kernel's khugepaged does it in the background). Contents are unchanged.
// A kernel built without THP refuses the advice; nothing changes then.
//
// Thread-safety: any thread; the buffer may be read meanwhile (a collapse
// copies pages under the kernel's locks), not freed.
#pragma once

#include <cstddef>

namespace mnemo {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

enum class HugePages {
  kTooSmall,     // no whole 2 MiB page inside the buffer
  kUnsupported,  // the kernel refused the advice (built without THP)
  kAdvised,      // advised; existing pages left to khugepaged (no MADV_COLLAPSE)
  kCollapsed,    // advised, and existing pages collapsed now
};

HugePages AdviseHugePages(const void* data, size_t bytes);

}  // namespace mnemo

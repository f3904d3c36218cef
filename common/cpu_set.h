// CPU sets: which cores this thread may run on, for sizing thread pools and
// for benchmarks that keep a server and its clients on separate cores.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"

namespace mnemo {

// Cores the calling thread may run on (its affinity mask), at least 1. Unlike
// std::thread::hardware_concurrency this honours taskset, cgroups' cpusets
// and a container's --cpuset-cpus.
size_t UsableCores();

// The calling thread's allowed CPUs, in ascending order.
std::vector<int> AllowedCpus();

// Parses "0-3,6" into {0,1,2,3,6}. InvalidArgument on anything else.
Result<std::vector<int>> ParseCpuList(const std::string& text);

// Restricts the calling thread (and threads it starts later) to `cpus`.
Status PinThisThread(const std::vector<int>& cpus);

}  // namespace mnemo

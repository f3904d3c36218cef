#include "common/cpu_set.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <sstream>

namespace mnemo {

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

size_t UsableCores() { return std::max<size_t>(1, AllowedCpus().size()); }

Result<std::vector<int>> ParseCpuList(const std::string& text) {
  std::vector<int> cpus;
  std::stringstream in(text);
  auto number = [](const std::string& s, int* out) {
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
    return ec == std::errc() && end == s.data() + s.size() && *out >= 0 && *out < CPU_SETSIZE;
  };
  for (std::string part; std::getline(in, part, ',');) {
    auto dash = part.find('-');
    int lo = 0, hi = 0;
    bool ok = dash == std::string::npos
                  ? number(part, &lo) && number(part, &hi)
                  : number(part.substr(0, dash), &lo) && number(part.substr(dash + 1), &hi);
    if (!ok || lo > hi) return Status::InvalidArgument("bad CPU list '" + text + "'");
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
  }
  if (cpus.empty()) return Status::InvalidArgument("empty CPU list");
  return cpus;
}

Status PinThisThread(const std::vector<int>& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0)
    return Status::InvalidArgument("cannot run on the requested CPUs");
  return Status::OK();
}

}  // namespace mnemo

// One line describing a collection, as `mnemo stats` and `mnemod --check`
// print it: "docs: dim=128 metric=l2 index=Flat count=... trained=yes ...".
#pragma once

#include <cstdio>
#include <string>

#include "engine/types.h"

namespace mnemo::tools {

inline std::string DescribeCollection(const engine::CollectionStats& s) {
  char line[512];
  std::snprintf(line, sizeof(line),
                "dim=%u metric=%s index=%s count=%llu trained=%s storage_bytes=%llu "
                "index_memory_bytes=%llu",
                s.dim, s.metric.c_str(), s.index.c_str(), (unsigned long long)s.count,
                s.trained ? "yes" : "no", (unsigned long long)s.storage_bytes,
                (unsigned long long)s.index_memory_bytes);
  std::string out = s.name + ": " + line;
  if (s.ef_construction) out += " ef_construction=" + std::to_string(s.ef_construction);
  return out;
}

}  // namespace mnemo::tools

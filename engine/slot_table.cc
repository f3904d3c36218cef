#include "engine/slot_table.h"

#include <cstring>

namespace mnemo::engine {

int64_t SlotTable::Append(uint64_t id, uint64_t group, uint64_t insert) {
  int64_t slot = int64_t(ids_.size());
  ids_.push_back(id);
  groups_.push_back(group);
  inserts_.push_back(insert);
  live_.push_back(1);
  by_id_[id] = slot;
  return slot;
}

bool SlotTable::Kill(uint64_t id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  live_[size_t(it->second)] = 0;
  by_id_.erase(it);
  return true;
}

std::optional<int64_t> SlotTable::Find(uint64_t id) const {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return std::nullopt;
  return it->second;
}

// u64 n, then n x (u64 id, u64 group, u64 insert, u8 live).
std::string SlotTable::Serialize() const {
  std::string out;
  uint64_t n = ids_.size();
  out.reserve(8 + n * 25);
  out.append(reinterpret_cast<const char*>(&n), 8);
  for (size_t i = 0; i < n; ++i) {
    out.append(reinterpret_cast<const char*>(&ids_[i]), 8);
    out.append(reinterpret_cast<const char*>(&groups_[i]), 8);
    out.append(reinterpret_cast<const char*>(&inserts_[i]), 8);
    out.push_back(char(live_[i]));
  }
  return out;
}

Result<SlotTable> SlotTable::Deserialize(std::string_view bytes) {
  if (bytes.size() < 8) return Status::Corruption("truncated slot table");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  if ((bytes.size() - 8) / 25 != n || (bytes.size() - 8) % 25 != 0) {
    return Status::Corruption("slot table size mismatch");
  }
  SlotTable t;
  const char* p = bytes.data() + 8;
  for (uint64_t i = 0; i < n; ++i, p += 25) {
    uint64_t id, group, insert;
    std::memcpy(&id, p, 8);
    std::memcpy(&group, p + 8, 8);
    std::memcpy(&insert, p + 16, 8);
    if (p[24] != 0) {
      t.Append(id, group, insert);
    } else {  // a dead slot keeps its place but never owns the id
      t.ids_.push_back(id);
      t.groups_.push_back(group);
      t.inserts_.push_back(insert);
      t.live_.push_back(0);
    }
  }
  return t;
}

}  // namespace mnemo::engine

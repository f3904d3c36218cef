// SlotTable: the map between index slots and client entries.
//
// Each vector in a VectorIndex is labelled by a slot (its position). The
// table knows, per slot, the client id, group, insertion number and whether
// the slot is still live; a replaced or deleted entry leaves a dead slot that
// searches skip until the collection is compacted.
//
// Not thread-safe: the Collection guards it with its index lock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "index/vector_index.h"

namespace mnemo::engine {

class SlotTable {
 public:
  // Appends a live slot for `id` and returns it; `id` must not be live.
  int64_t Append(uint64_t id, uint64_t group, uint64_t insert);
  // Marks the live slot of `id` dead; false when `id` is not live.
  bool Kill(uint64_t id);
  std::optional<int64_t> Find(uint64_t id) const;

  size_t size() const { return ids_.size(); }
  size_t live() const { return by_id_.size(); }
  size_t dead() const { return ids_.size() - by_id_.size(); }
  bool is_live(int64_t slot) const { return live_[size_t(slot)] != 0; }
  uint64_t id(int64_t slot) const { return ids_[size_t(slot)]; }
  uint64_t group(int64_t slot) const { return groups_[size_t(slot)]; }
  uint64_t insert(int64_t slot) const { return inserts_[size_t(slot)]; }

  // For snapshots.
  std::string Serialize() const;
  static Result<SlotTable> Deserialize(std::string_view bytes);

 private:
  std::vector<uint64_t> ids_;
  std::vector<uint64_t> groups_;
  std::vector<uint64_t> inserts_;
  std::vector<uint8_t> live_;
  std::unordered_map<uint64_t, int64_t> by_id_;
};

// Admits live slots only.
class LiveFilter final : public index::SlotFilter {
 public:
  explicit LiveFilter(const SlotTable& t) : t_(t) {}
  bool Contains(int64_t slot) const override { return t_.is_live(slot); }

 private:
  const SlotTable& t_;
};

// Admits live slots of one group.
class GroupFilter final : public index::SlotFilter {
 public:
  GroupFilter(const SlotTable& t, uint64_t group) : t_(t), group_(group) {}
  bool Contains(int64_t slot) const override {
    return t_.is_live(slot) && t_.group(slot) == group_;
  }

 private:
  const SlotTable& t_;
  uint64_t group_;
};

}  // namespace mnemo::engine

// KeyRing: API keys and what each may do (mnemod --auth-file).
//
// The file is TOML, one [[key]] table per key:
//
//   [[key]]
//   key = "change-me"          # the secret the client sends (api_key)
//   role = "write"             # read | write | admin
//   collections = ["docs"]     # optional: only these collections / KV spaces
//
// read: search, get, stats, list, get_kv, match_prefix, kv_stats.
// write: read + upsert, delete, train, put_kv.
// admin: everything, including create, drop and backup.
// A key bound to collections may not create, drop or back up anything, and
// sees only its collections in `list`.
//
// Immutable after Load; thread-safe. Check answers Unauthenticated for a
// missing or unknown key and PermissionDenied for a request outside the
// key's role or collections; the request then does nothing.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "net/mnemo_generated.h"

namespace mnemo::net {

enum class Role { kRead = 0, kWrite = 1, kAdmin = 2 };
const char* RoleName(Role role);

struct Grant {
  Role role = Role::kRead;
  std::optional<std::set<std::string, std::less<>>> collections;  // nullopt: all
  bool Allows(std::string_view name) const {
    return !collections || collections->count(name) != 0;
  }
};

class KeyRing {
 public:
  // InvalidArgument names the file and what is wrong in it.
  static Result<KeyRing> Load(const std::string& path);
  static Result<KeyRing> Parse(std::string_view toml, const std::string& origin);

  // The grant of a verified frame's key, or why it gets nothing.
  Result<const Grant*> Check(const wire::RequestFrame& frame) const;

  size_t size() const { return keys_.size(); }

 private:
  std::unordered_map<std::string, Grant> keys_;
};

}  // namespace mnemo::net

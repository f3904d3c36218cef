#include "net/key_ring.h"

#include <toml++/toml.h>

#include <fstream>
#include <sstream>

#include "net/operations.h"

namespace mnemo::net {

const char* RoleName(Role r) {
  return r == Role::kRead ? "read" : r == Role::kWrite ? "write" : "admin";
}

Result<KeyRing> KeyRing::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("cannot read auth file '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

Result<KeyRing> KeyRing::Parse(std::string_view toml_text, const std::string& origin) {
  toml::table t;
  try {
    t = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument("auth file '" + origin + "': " + std::string(e.description()));
  }
  auto* keys = t["key"].as_array();
  if (keys == nullptr || keys->empty()) {
    return Status::InvalidArgument("auth file '" + origin + "' has no [[key]] tables");
  }
  KeyRing ring;
  size_t n = 0;
  for (auto& node : *keys) {
    ++n;
    const std::string where = "auth file '" + origin + "', key " + std::to_string(n) + ": ";
    auto* k = node.as_table();
    if (k == nullptr) return Status::InvalidArgument(where + "not a table");
    auto secret = (*k)["key"].value<std::string>();
    if (!secret || secret->empty()) return Status::InvalidArgument(where + "no 'key'");
    auto role = (*k)["role"].value<std::string>();
    Grant g;
    if (role == "read") g.role = Role::kRead;
    else if (role == "write") g.role = Role::kWrite;
    else if (role == "admin") g.role = Role::kAdmin;
    else return Status::InvalidArgument(where + "role must be read, write or admin");
    if (auto* list = (*k)["collections"].as_array()) {
      g.collections.emplace();
      for (auto& c : *list) {
        auto name = c.value<std::string>();
        if (!name) return Status::InvalidArgument(where + "collections must be strings");
        g.collections->insert(*name);
      }
    }
    if (!ring.keys_.emplace(*secret, std::move(g)).second) {
      return Status::InvalidArgument(where + "the same key appears twice");
    }
  }
  return ring;
}

Result<const Grant*> KeyRing::Check(const wire::RequestFrame& f) const {
  if (f.api_key() == nullptr || f.api_key()->size() == 0) {
    return Status::Unauthenticated("this daemon requires an API key");
  }
  auto it = keys_.find(f.api_key()->str());
  if (it == keys_.end()) return Status::Unauthenticated("unknown API key");
  const Grant& g = it->second;
  const Operation* op = FindOperation(f.request_type());
  const Role need = op ? op->role : Role::kAdmin;
  if (int(g.role) < int(need)) {
    return Status::PermissionDenied(std::string("a ") + RoleName(g.role) + " key may not " +
                                    RequestName(f.request_type()));
  }
  if (g.collections) {
    const flatbuffers::String* target = op && op->target ? op->target(f) : nullptr;
    if (f.request_type() != wire::Request::ListCollections && target == nullptr) {
      return Status::PermissionDenied(std::string("a key bound to collections may not ") +
                                      RequestName(f.request_type()));
    }
    if (target != nullptr && !g.Allows(target->string_view())) {
      return Status::PermissionDenied("this key may not use '" + target->str() + "'");
    }
  }
  return &g;
}

}  // namespace mnemo::net

// ImportState: how far an import got, kept in a small file so that
// `mnemo import --resume` continues where an interrupted import stopped.
//
// `rows` counts the leading rows of the file that the daemon acknowledged,
// all of them; rows after it may or may not be stored. Resuming re-sends
// from `rows` on: upserts of the same ids and vectors are idempotent, so
// the collection ends with exactly the file's entries. The file is named by
// its absolute path, size and modification time; a state for any other file,
// collection or start id is refused rather than applied.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace mnemo::tools {

struct ImportState {
  std::string collection;
  std::string file;  // absolute path
  uint64_t file_size = 0;
  int64_t file_mtime_ns = 0;
  uint64_t start_id = 0;
  uint64_t rows = 0;  // rows acknowledged, from the first

  // The identity of `path` as it is now, with rows = 0.
  static Result<ImportState> For(const std::string& collection, const std::string& path,
                                 uint64_t start_id);
  // Whether `other` describes the same import (everything but rows).
  bool SameImport(const ImportState& other) const;
};

// The state stored at `path`; nullopt when there is none. Corruption when
// the file exists but cannot be parsed.
Result<std::optional<ImportState>> LoadImportState(const std::string& path);
// Replaces the state at `path` atomically (write, fsync, rename).
Status SaveImportState(const std::string& path, const ImportState& state);
Status RemoveImportState(const std::string& path);

}  // namespace mnemo::tools

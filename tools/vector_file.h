// Streaming readers and writers for the TEXMEX vector formats
// (http://corpus-texmex.irisa.fr): each record is a little-endian int32
// dimension followed by that many values (fvecs: float32, ivecs: int32,
// bvecs: uint8). Readers hold one batch in memory whatever the file size.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace mnemo::tools {

enum class VecFormat { kFvecs, kBvecs, kIvecs };

// The format named by `name` ("fvecs", ...) or by the file's extension.
Result<VecFormat> FormatFor(const std::string& path, const std::string& name);

class VecReader {
 public:
  static Result<std::unique_ptr<VecReader>> Open(const std::string& path, VecFormat format);
  ~VecReader();
  uint32_t dim() const { return dim_; }
  // Appends up to max_rows rows as float32 to *out; returns how many were
  // read (0 at the end). A truncated last record or a record of another
  // dimension is an InvalidArgument error naming the row.
  Result<size_t> Read(size_t max_rows, std::vector<float>* out);

 private:
  VecReader(std::FILE* f, VecFormat format, uint32_t dim, std::string path);
  std::FILE* f_;
  VecFormat format_;
  uint32_t dim_;
  std::string path_;
  uint64_t row_ = 0;
};

// Writes rows of int64 ids as ivecs (ids must fit in int32; -1 stays -1).
Status WriteIvecs(const std::string& path, const std::vector<int64_t>& ids, size_t rows,
                  size_t cols);

}  // namespace mnemo::tools

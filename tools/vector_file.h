// Streaming readers for the vector files people already have, and an ivecs
// writer. Readers hold one batch in memory whatever the file size.
//   fvecs/ivecs/bvecs (TEXMEX): each record is a little-endian int32
//     dimension, then that many float32 / int32 / uint8 values.
//   npy: a 2-D C-order array of little-endian float32 or float16.
//   jsonl: one object per line: {"id": 7, "vector": [...], "group": 3,
//     "text": "..."}; id, group and text are optional.
//   hdf5: the ann-benchmarks layout: a 2-D dataset "train" (any float or
//     integer type, converted to float32 by libhdf5), read in row slabs.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace mnemo::tools {

enum class VecFormat { kFvecs, kBvecs, kIvecs, kNpy, kJsonl, kHdf5 };

// The format named by `name` ("fvecs", ...) or by the file's extension.
Result<VecFormat> FormatFor(const std::string& path, const std::string& name);

// Rows read from a file. ids/groups/payloads are filled only by formats that
// carry them (jsonl), for every row of the batch.
struct VecBatch {
  std::vector<float> vectors;  // rows * dim
  std::vector<uint64_t> ids;
  std::vector<uint64_t> groups;
  std::vector<std::string> payloads;
  void clear() { vectors.clear(); ids.clear(); groups.clear(); payloads.clear(); }
};

class VecReader {
 public:
  static Result<std::unique_ptr<VecReader>> Open(const std::string& path, VecFormat format);
  ~VecReader();
  uint32_t dim() const { return dim_; }
  // Rows in the file when the format tells without reading it (0 if not).
  uint64_t rows_hint() const { return rows_hint_; }
  // Appends up to max_rows rows to *out; returns how many were read (0 at
  // the end). A truncated last record or a record of another dimension is an
  // InvalidArgument error naming the row.
  Result<size_t> Read(size_t max_rows, VecBatch* out);

 private:
  VecReader(std::FILE* f, VecFormat format, std::string path);
  Result<bool> ReadRow(VecBatch* out);
  Status ParseNpyHeader();
  Status ParseJsonlFirst();

  std::FILE* f_;
  VecFormat format_;
  uint32_t dim_ = 0;
  uint64_t rows_hint_ = 0;
  bool npy_half_ = false;
  std::string path_;
  uint64_t row_ = 0;
  std::string line_;  // jsonl: the first line, read to learn the dimension
  bool have_line_ = false;
  struct Hdf5;  // hdf5: open file, dataset and dataspace
  std::unique_ptr<Hdf5> h5_;
  Status OpenHdf5();
  Result<size_t> ReadHdf5(size_t max_rows, VecBatch* out);
};

// Writes rows of int64 ids as ivecs (ids must fit in int32; -1 stays -1).
Status WriteIvecs(const std::string& path, const std::vector<int64_t>& ids, size_t rows,
                  size_t cols);

}  // namespace mnemo::tools

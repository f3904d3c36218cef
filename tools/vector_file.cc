#include "tools/vector_file.h"

#include <cerrno>
#include <cstring>

namespace mnemo::tools {
namespace {

size_t ValueBytes(VecFormat f) { return f == VecFormat::kBvecs ? 1 : 4; }

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

Result<VecFormat> FormatFor(const std::string& path, const std::string& name) {
  std::string n = name;
  if (n.empty()) {
    for (const char* ext : {"fvecs", "bvecs", "ivecs"}) {
      if (EndsWith(path, std::string(".") + ext)) n = ext;
    }
  }
  if (n == "fvecs") return VecFormat::kFvecs;
  if (n == "bvecs") return VecFormat::kBvecs;
  if (n == "ivecs") return VecFormat::kIvecs;
  if (n.empty()) return Status::InvalidArgument("cannot tell the format of '" + path + "'; give --format");
  return Status::InvalidArgument("unsupported format '" + n + "' (expected fvecs, bvecs or ivecs)");
}

VecReader::VecReader(std::FILE* f, VecFormat format, uint32_t dim, std::string path)
    : f_(f), format_(format), dim_(dim), path_(std::move(path)) {}

VecReader::~VecReader() {
  if (f_) std::fclose(f_);
}

Result<std::unique_ptr<VecReader>> VecReader::Open(const std::string& path, VecFormat format) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status::NotFound("cannot open '" + path + "': " + std::strerror(errno));
  int32_t dim = 0;
  size_t got = std::fread(&dim, 1, 4, f);
  if (got != 4 || dim <= 0 || dim > 65536) {
    std::fclose(f);
    return Status::InvalidArgument("'" + path + "' does not start with a valid dimension");
  }
  std::rewind(f);
  return std::unique_ptr<VecReader>(new VecReader(f, format, uint32_t(dim), path));
}

Result<size_t> VecReader::Read(size_t max_rows, std::vector<float>* out) {
  const size_t vb = ValueBytes(format_);
  std::vector<uint8_t> raw(size_t(dim_) * vb);
  size_t rows = 0;
  for (; rows < max_rows; ++rows, ++row_) {
    int32_t dim = 0;
    size_t got = std::fread(&dim, 1, 4, f_);
    if (got == 0 && std::feof(f_)) break;
    if (got != 4) return Status::InvalidArgument(path_ + ": record " + std::to_string(row_) + " is truncated");
    if (uint32_t(dim) != dim_) {
      return Status::InvalidArgument(path_ + ": record " + std::to_string(row_) + " has dimension " +
                                     std::to_string(dim) + ", the file's first has " +
                                     std::to_string(dim_));
    }
    if (std::fread(raw.data(), 1, raw.size(), f_) != raw.size()) {
      return Status::InvalidArgument(path_ + ": record " + std::to_string(row_) + " is truncated");
    }
    size_t at = out->size();
    out->resize(at + dim_);
    float* dst = out->data() + at;
    if (format_ == VecFormat::kFvecs) {
      std::memcpy(dst, raw.data(), raw.size());
    } else if (format_ == VecFormat::kBvecs) {
      for (uint32_t j = 0; j < dim_; ++j) dst[j] = float(raw[j]);
    } else {
      for (uint32_t j = 0; j < dim_; ++j) {
        int32_t v;
        std::memcpy(&v, &raw[j * 4], 4);
        dst[j] = float(v);
      }
    }
  }
  return rows;
}

Status WriteIvecs(const std::string& path, const std::vector<int64_t>& ids, size_t rows,
                  size_t cols) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return Status::IOError("cannot write '" + path + "': " + std::strerror(errno));
  std::vector<int32_t> row(cols);
  int32_t d = int32_t(cols);
  bool ok = true;
  for (size_t i = 0; i < rows && ok; ++i) {
    for (size_t j = 0; j < cols; ++j) row[j] = int32_t(ids[i * cols + j]);
    ok = std::fwrite(&d, 4, 1, f) == 1 && std::fwrite(row.data(), 4, cols, f) == cols;
  }
  ok = (std::fclose(f) == 0) && ok;
  return ok ? Status::OK() : Status::IOError("write to '" + path + "' failed");
}

}  // namespace mnemo::tools

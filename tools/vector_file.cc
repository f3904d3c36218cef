#include "tools/vector_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <regex>

#include <hdf5.h>
#include <nlohmann/json.hpp>

namespace mnemo::tools {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(float(mant), -24);  // subnormal
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(float(mant | 0x400), exp - 25);
  }
  return sign ? -v : v;
}

uint64_t FileSize(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 ? uint64_t(st.st_size) : 0;
}

bool ReadLine(std::FILE* f, std::string* line) {
  line->clear();
  int c;
  while ((c = std::fgetc(f)) != EOF && c != '\n') line->push_back(char(c));
  return c != EOF || !line->empty();
}

}  // namespace

Result<VecFormat> FormatFor(const std::string& path, const std::string& name) {
  std::string n = name;
  if (n.empty()) {
    for (const char* ext : {"fvecs", "bvecs", "ivecs", "npy", "jsonl", "hdf5"}) {
      if (EndsWith(path, std::string(".") + ext)) n = ext;
    }
    if (EndsWith(path, ".h5")) n = "hdf5";
  }
  if (n == "fvecs") return VecFormat::kFvecs;
  if (n == "bvecs") return VecFormat::kBvecs;
  if (n == "ivecs") return VecFormat::kIvecs;
  if (n == "npy") return VecFormat::kNpy;
  if (n == "jsonl") return VecFormat::kJsonl;
  if (n == "hdf5") return VecFormat::kHdf5;
  if (n.empty()) return Status::InvalidArgument("cannot tell the format of '" + path + "'; give --format");
  return Status::InvalidArgument("unsupported format '" + n +
                                 "' (expected fvecs, bvecs, ivecs, npy, jsonl or hdf5)");
}

VecReader::VecReader(std::FILE* f, VecFormat format, std::string path)
    : f_(f), format_(format), path_(std::move(path)) {}

struct VecReader::Hdf5 {
  hid_t file = -1, dataset = -1, space = -1;
  ~Hdf5() {
    if (space >= 0) H5Sclose(space);
    if (dataset >= 0) H5Dclose(dataset);
    if (file >= 0) H5Fclose(file);
  }
};

VecReader::~VecReader() {
  if (f_) std::fclose(f_);
}

Status VecReader::OpenHdf5() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors come back as Status
  h5_ = std::make_unique<Hdf5>();
  h5_->file = H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (h5_->file < 0) return Status::InvalidArgument("'" + path_ + "' is not an HDF5 file");
  h5_->dataset = H5Dopen2(h5_->file, "train", H5P_DEFAULT);
  if (h5_->dataset < 0) {
    return Status::InvalidArgument("'" + path_ + "' has no dataset 'train' (ann-benchmarks layout)");
  }
  h5_->space = H5Dget_space(h5_->dataset);
  hsize_t dims[2] = {0, 0};
  if (H5Sget_simple_extent_ndims(h5_->space) != 2 ||
      H5Sget_simple_extent_dims(h5_->space, dims, nullptr) != 2 || dims[1] == 0) {
    return Status::InvalidArgument("'" + path_ + "': dataset 'train' is not a 2-D array");
  }
  hid_t type = H5Dget_type(h5_->dataset);
  H5T_class_t cls = H5Tget_class(type);
  H5Tclose(type);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) {
    return Status::InvalidArgument("'" + path_ + "': dataset 'train' is not numeric");
  }
  rows_hint_ = dims[0];
  dim_ = uint32_t(dims[1]);
  return Status::OK();
}

Result<size_t> VecReader::ReadHdf5(size_t max_rows, VecBatch* out) {
  const size_t n = size_t(std::min<uint64_t>(max_rows, rows_hint_ - row_));
  if (n == 0) return size_t(0);
  hsize_t start[2] = {row_, 0}, count[2] = {n, dim_};
  H5Sselect_hyperslab(h5_->space, H5S_SELECT_SET, start, nullptr, count, nullptr);
  hid_t memspace = H5Screate_simple(2, count, nullptr);
  const size_t at = out->vectors.size();
  out->vectors.resize(at + n * dim_);
  herr_t st = H5Dread(h5_->dataset, H5T_NATIVE_FLOAT, memspace, h5_->space, H5P_DEFAULT,
                      out->vectors.data() + at);
  H5Sclose(memspace);
  if (st < 0) {
    out->vectors.resize(at);
    return Status::InvalidArgument(path_ + ": cannot read rows " + std::to_string(row_) + ".." +
                                   std::to_string(row_ + n - 1) + " of 'train'");
  }
  row_ += n;
  return n;
}

Result<std::unique_ptr<VecReader>> VecReader::Open(const std::string& path, VecFormat format) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return Status::NotFound("cannot open '" + path + "': " + std::strerror(errno));
  std::unique_ptr<VecReader> r(new VecReader(f, format, path));
  if (format == VecFormat::kHdf5) {
    MNEMO_RETURN_IF_ERROR(r->OpenHdf5());
  } else if (format == VecFormat::kNpy) {
    MNEMO_RETURN_IF_ERROR(r->ParseNpyHeader());
  } else if (format == VecFormat::kJsonl) {
    MNEMO_RETURN_IF_ERROR(r->ParseJsonlFirst());
  } else {
    int32_t dim = 0;
    if (std::fread(&dim, 1, 4, f) != 4 || dim <= 0 || dim > 65536) {
      return Status::InvalidArgument("'" + path + "' does not start with a valid dimension");
    }
    std::rewind(f);
    r->dim_ = uint32_t(dim);
    const size_t record = 4 + size_t(dim) * (format == VecFormat::kBvecs ? 1 : 4);
    const uint64_t size = FileSize(path);
    r->rows_hint_ = size / record;
    if (size % record != 0) {  // found before anything is read: nothing partial
      return Status::InvalidArgument("'" + path + "': record " + std::to_string(r->rows_hint_) +
                                     " is truncated (" + std::to_string(size) +
                                     " bytes is not a whole number of " +
                                     std::to_string(record) + "-byte records)");
    }
  }
  return r;
}

// "\x93NUMPY", version, header length, then a Python dict literal.
Status VecReader::ParseNpyHeader() {
  char magic[8];
  if (std::fread(magic, 1, 8, f_) != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    return Status::InvalidArgument("'" + path_ + "' is not a .npy file");
  }
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t n;
    if (std::fread(&n, 1, 2, f_) != 2) return Status::InvalidArgument("'" + path_ + "': truncated header");
    header_len = n;
  } else if (std::fread(&header_len, 1, 4, f_) != 4) {
    return Status::InvalidArgument("'" + path_ + "': truncated header");
  }
  std::string header(header_len, '\0');
  if (std::fread(header.data(), 1, header_len, f_) != header_len) {
    return Status::InvalidArgument("'" + path_ + "': truncated header");
  }
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<|=]?)([fF])(\\d)'"))) {
    return Status::InvalidArgument("'" + path_ + "': only float32 and float16 arrays are supported");
  }
  if (m[3] == "4") npy_half_ = false;
  else if (m[3] == "2") npy_half_ = true;
  else return Status::InvalidArgument("'" + path_ + "': only float32 and float16 arrays are supported");
  if (header.find("'fortran_order': True") != std::string::npos) {
    return Status::InvalidArgument("'" + path_ + "': Fortran-order arrays are not supported");
  }
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\((\\d+),\\s*(\\d+)\\)"))) {
    return Status::InvalidArgument("'" + path_ + "': expected a 2-D array (rows, dim)");
  }
  rows_hint_ = std::stoull(m[1]);
  dim_ = uint32_t(std::stoul(m[2]));
  if (dim_ == 0) return Status::InvalidArgument("'" + path_ + "': dimension 0");
  const uint64_t want = uint64_t(std::ftell(f_)) + rows_hint_ * dim_ * (npy_half_ ? 2 : 4);
  if (FileSize(path_) < want) {  // found before anything is read: nothing partial
    return Status::InvalidArgument("'" + path_ + "' is truncated: its header promises " +
                                   std::to_string(rows_hint_) + " rows (" + std::to_string(want) +
                                   " bytes), the file has " + std::to_string(FileSize(path_)));
  }
  return Status::OK();
}

Status VecReader::ParseJsonlFirst() {
  if (!ReadLine(f_, &line_)) return Status::InvalidArgument("'" + path_ + "' is empty");
  have_line_ = true;
  try {
    auto j = nlohmann::json::parse(line_);
    if (!j.contains("vector") || !j["vector"].is_array() || j["vector"].empty()) {
      return Status::InvalidArgument(path_ + ": line 1 has no \"vector\" array");
    }
    dim_ = uint32_t(j["vector"].size());
  } catch (const nlohmann::json::exception& e) {
    return Status::InvalidArgument(path_ + ": line 1 is not JSON: " + e.what());
  }
  return Status::OK();
}

Result<bool> VecReader::ReadRow(VecBatch* out) {
  const std::string where = path_ + ": record " + std::to_string(row_);
  if (format_ == VecFormat::kJsonl) {
    if (!have_line_ && !ReadLine(f_, &line_)) return false;
    have_line_ = false;
    if (line_.empty()) return ReadRow(out);  // blank lines are allowed
    try {
      auto j = nlohmann::json::parse(line_);
      const auto& v = j.at("vector");
      if (!v.is_array() || v.size() != dim_) {
        return Status::InvalidArgument(where + " has dimension " + std::to_string(v.size()) +
                                       ", the first has " + std::to_string(dim_));
      }
      if (!j.contains("id")) return Status::InvalidArgument(where + " has no \"id\"");
      // get<uint64_t> would take -1 as 18446744073709551615.
      for (const char* field : {"id", "group"}) {
        if (j.contains(field) && (!j[field].is_number_unsigned() ||
                                  j[field].get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))) {
          return Status::InvalidArgument(where + " has " + field + " " + j[field].dump() +
                                         ": an integer in 0..2^63-1 is expected");
        }
      }
      out->ids.push_back(j["id"].get<uint64_t>());
      out->groups.push_back(j.value("group", uint64_t(0)));
      out->payloads.push_back(j.value("text", std::string()));
      for (const auto& x : v) out->vectors.push_back(x.get<float>());
    } catch (const nlohmann::json::exception& e) {
      return Status::InvalidArgument(where + " is not a valid record: " + e.what());
    }
    return true;
  }
  if (format_ == VecFormat::kNpy) {
    const size_t bytes = size_t(dim_) * (npy_half_ ? 2 : 4);
    std::vector<uint8_t> raw(bytes);
    size_t got = std::fread(raw.data(), 1, bytes, f_);
    if (got == 0) return false;
    if (got != bytes) return Status::InvalidArgument(where + " is truncated");
    size_t at = out->vectors.size();
    out->vectors.resize(at + dim_);
    if (npy_half_) {
      for (uint32_t j = 0; j < dim_; ++j) {
        uint16_t h;
        std::memcpy(&h, &raw[j * 2], 2);
        out->vectors[at + j] = HalfToFloat(h);
      }
    } else {
      std::memcpy(&out->vectors[at], raw.data(), bytes);
    }
    return true;
  }
  int32_t dim = 0;
  size_t got = std::fread(&dim, 1, 4, f_);
  if (got == 0 && std::feof(f_)) return false;
  if (got != 4) return Status::InvalidArgument(where + " is truncated");
  if (uint32_t(dim) != dim_) {
    return Status::InvalidArgument(where + " has dimension " + std::to_string(dim) +
                                   ", the file's first has " + std::to_string(dim_));
  }
  const size_t vb = format_ == VecFormat::kBvecs ? 1 : 4;
  std::vector<uint8_t> raw(size_t(dim_) * vb);
  if (std::fread(raw.data(), 1, raw.size(), f_) != raw.size()) {
    return Status::InvalidArgument(where + " is truncated");
  }
  size_t at = out->vectors.size();
  out->vectors.resize(at + dim_);
  float* dst = out->vectors.data() + at;
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
  return true;
}

Result<size_t> VecReader::Read(size_t max_rows, VecBatch* out) {
  if (format_ == VecFormat::kHdf5) return ReadHdf5(max_rows, out);
  size_t rows = 0;
  for (; rows < max_rows; ++rows) {
    MNEMO_ASSIGN_OR_RETURN(bool more, ReadRow(out));
    if (!more) break;
    ++row_;
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

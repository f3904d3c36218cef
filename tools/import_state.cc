#include "tools/import_state.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace mnemo::tools {

Result<ImportState> ImportState::For(const std::string& collection, const std::string& path,
                                     uint64_t start_id) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound("cannot open '" + path + "': " + std::strerror(errno));
  }
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  ImportState s;
  s.collection = collection;
  s.file = ec ? path : abs.lexically_normal().string();
  s.file_size = uint64_t(st.st_size);
  s.file_mtime_ns = int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.start_id = start_id;
  return s;
}

bool ImportState::SameImport(const ImportState& o) const {
  return collection == o.collection && file == o.file && file_size == o.file_size &&
         file_mtime_ns == o.file_mtime_ns && start_id == o.start_id;
}

Result<std::optional<ImportState>> LoadImportState(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return std::optional<ImportState>();
    return Status::IOError("cannot read '" + path + "': " + std::strerror(errno));
  }
  // One "key value" per line; the path comes last since it may hold spaces.
  ImportState s;
  int seen = 0;
  for (std::string line; std::getline(in, line);) {
    auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    std::string key = line.substr(0, sp), value = line.substr(sp + 1);
    try {
      if (key == "collection") s.collection = value, seen |= 1;
      else if (key == "file") s.file = value, seen |= 2;
      else if (key == "file_size") s.file_size = std::stoull(value), seen |= 4;
      else if (key == "file_mtime_ns") s.file_mtime_ns = std::stoll(value), seen |= 8;
      else if (key == "start_id") s.start_id = std::stoull(value), seen |= 16;
      else if (key == "rows") s.rows = std::stoull(value), seen |= 32;
    } catch (const std::exception&) {
      return Status::Corruption("import state '" + path + "': bad value in '" + line + "'");
    }
  }
  if (seen != 63) return Status::Corruption("import state '" + path + "' is incomplete");
  return std::optional<ImportState>(s);
}

Status SaveImportState(const std::string& path, const ImportState& s) {
  std::ostringstream text;
  text << "collection " << s.collection << "\nfile_size " << s.file_size << "\nfile_mtime_ns "
       << s.file_mtime_ns << "\nstart_id " << s.start_id << "\nrows " << s.rows << "\nfile "
       << s.file << "\n";
  const std::string tmp = path + ".tmp", bytes = text.str();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return Status::IOError("cannot write '" + tmp + "': " + std::strerror(errno));
  bool ok = ::write(fd, bytes.data(), bytes.size()) == ssize_t(bytes.size()) && ::fsync(fd) == 0;
  ok = ::close(fd) == 0 && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::IOError("cannot write '" + path + "': " + std::strerror(errno));
  }
  return Status::OK();
}

Status RemoveImportState(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::IOError("cannot remove '" + path + "': " + std::strerror(errno));
  }
  return Status::OK();
}

}  // namespace mnemo::tools

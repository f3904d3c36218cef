// mnemo: the command-line tool for a running mnemod.
//
//   mnemo [--addr HOST:PORT] [--api-key KEY] COMMAND ...
//   create NAME --dim D [--metric l2|ip|cosine] [--index SPEC] [--train-size N]
//          [--ef-construction N]
//   import NAME FILE [--format fvecs|bvecs|ivecs|npy|hdf5|jsonl] [--start-id N] [--batch N]
//          [--depth N] [--resume] [--state FILE]
//   search NAME QUERY_FILE [--k 10] [--nprobe N] [--ef N] [--group G] [--out FILE.ivecs]
//   get NAME ID...   delete NAME ID...   list   stats [NAME]   drop NAME   train NAME
//   backup DIR   restore DIR --data-dir DIR2
//   bench NAME QUERY_FILE --gt GT.ivecs [--clients N] [--seconds S] [--k 10] [--nprobe N] [--ef N]
//
// Exit codes: 0 success, 1 the operation failed (the server's or the file's
// message is printed), 2 bad usage.
#include <CLI/CLI.hpp>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>

#include "net/client.h"
#include "tools/describe.h"
#include "tools/import_state.h"
#include "tools/vector_file.h"

namespace mnemo::tools {
namespace {

using Clock = std::chrono::steady_clock;

int Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  return 1;
}

// Progress on a terminal: one line redrawn; otherwise a line every 5 s.
class Progress {
 public:
  explicit Progress(uint64_t total) : total_(total), tty_(isatty(STDERR_FILENO)) {}
  void Update(uint64_t done) {
    auto now = Clock::now();
    if (now - last_ < (tty_ ? std::chrono::milliseconds(200) : std::chrono::seconds(5))) return;
    last_ = now;
    double secs = Seconds();
    double rate = secs > 0 ? double(done) / secs : 0;
    double left = rate > 0 && total_ > done ? double(total_ - done) / rate : 0;
    if (total_ == 0) {  // the format does not tell how many rows there are
      std::fprintf(stderr, "%s%llu entries  %.0f/s%s", tty_ ? "\r" : "", (unsigned long long)done,
                   rate, tty_ ? "   " : "\n");
      return;
    }
    std::fprintf(stderr, "%s%llu/%llu entries  %.0f/s  %.0fs left%s", tty_ ? "\r" : "",
                 (unsigned long long)done, (unsigned long long)total_, rate, left,
                 tty_ ? "   " : "\n");
  }
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void Done() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  uint64_t total_;
  bool tty_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_ = Clock::now();
};

void PrintStats(const engine::CollectionStats& s) {
  std::printf("%s\n", DescribeCollection(s).c_str());
}

Result<std::unique_ptr<VecReader>> OpenFile(const std::string& file, const std::string& format) {
  MNEMO_ASSIGN_OR_RETURN(VecFormat f, FormatFor(file, format));
  return VecReader::Open(file, f);
}

struct ImportOptions {
  std::string format;
  uint64_t start_id = 0;
  size_t batch = 10000;
  size_t depth = 4;  // upserts in flight
  bool resume = false;
  std::string state_path;  // default: .mnemo-import-NAME.state in the working directory
};

// Where `import` left off: --resume's starting row, or 0.
Result<ImportState> StartingState(const std::string& name, const std::string& file,
                                  const ImportOptions& o) {
  MNEMO_ASSIGN_OR_RETURN(ImportState now, ImportState::For(name, file, o.start_id));
  if (!o.resume) return now;
  MNEMO_ASSIGN_OR_RETURN(auto saved, LoadImportState(o.state_path));
  if (!saved) {
    std::fprintf(stderr, "no import state in '%s': importing from the first row\n",
                 o.state_path.c_str());
    return now;
  }
  if (!saved->SameImport(now)) {
    return Status::FailedPrecondition(
        "'" + o.state_path + "' records an import of '" + saved->file + "' into '" +
        saved->collection + "' from id " + std::to_string(saved->start_id) +
        ", and that file has changed or is another import; run without --resume to start over");
  }
  return *saved;
}

// Streams the file to the daemon in batches, `depth` of them in flight, and
// records after each acknowledgement how many leading rows are stored.
int Import(net::Client& c, const std::string& name, const std::string& file,
           const ImportOptions& o) {
  auto stats = c.Stats(name);
  if (!stats.ok()) return Fail(stats.status());
  auto reader = OpenFile(file, o.format);
  if (!reader.ok()) return Fail(reader.status());
  if ((*reader)->dim() != stats->dim) {
    return Fail(Status::InvalidArgument("'" + file + "' has dimension " +
                                        std::to_string((*reader)->dim()) + ", collection '" +
                                        name + "' has " + std::to_string(stats->dim)));
  }
  auto state = StartingState(name, file, o);
  if (!state.ok()) return Fail(state.status());
  // Skip what an earlier run stored (read and dropped: formats are streams).
  VecBatch rows;
  for (uint64_t skipped = 0; skipped < state->rows;) {
    rows.clear();
    auto n = (*reader)->Read(size_t(std::min<uint64_t>(o.batch, state->rows - skipped)), &rows);
    if (!n.ok()) return Fail(n.status());
    if (*n == 0) return Fail(Status::FailedPrecondition("the import state is past the file's end"));
    skipped += *n;
  }
  if (state->rows > 0) {
    std::fprintf(stderr, "resuming after %llu rows already imported\n",
                 (unsigned long long)state->rows);
  }
  const uint64_t first = state->rows;
  Progress progress((*reader)->rows_hint() > first ? (*reader)->rows_hint() - first : 0);
  std::deque<size_t> in_flight;  // rows per upsert sent, oldest first
  uint64_t sent = first;
  auto fail_keeping_state = [&](Status st) {
    std::string m = st.message();
    if (state->rows > 0) {
      m += "; the first " + std::to_string(state->rows) +
           " rows are imported, and 'mnemo import --resume' continues after them";
    }
    return Fail(Status(st.code(), m));
  };
  // Receives acknowledgements until at most `pending` upserts are in flight.
  auto receive_until = [&](size_t pending) -> Status {
    while (in_flight.size() > pending) {
      MNEMO_RETURN_IF_ERROR(c.ReceiveUpsert().status());
      state->rows += in_flight.front();
      in_flight.pop_front();
      progress.Update(state->rows - first);
      MNEMO_RETURN_IF_ERROR(SaveImportState(o.state_path, *state));
    }
    return Status::OK();
  };
  for (;;) {
    rows.clear();
    auto n = (*reader)->Read(o.batch, &rows);
    if (!n.ok()) {
      Status st = receive_until(0);
      return fail_keeping_state(st.ok() ? n.status() : st);
    }
    if (*n == 0) break;
    std::vector<uint64_t> ids = rows.ids;
    if (ids.empty()) {
      ids.resize(*n);
      for (size_t i = 0; i < *n; ++i) ids[i] = o.start_id + sent + i;
    }
    std::vector<std::string_view> payloads(rows.payloads.begin(), rows.payloads.end());
    Status st = c.SendUpsert(name, ids, rows.vectors, rows.groups, payloads);
    if (!st.ok()) return fail_keeping_state(st);
    in_flight.push_back(*n);
    sent += *n;
    if (st = receive_until(o.depth - 1); !st.ok()) return fail_keeping_state(st);
  }
  if (Status st = receive_until(0); !st.ok()) return fail_keeping_state(st);
  progress.Done();
  if (Status st = RemoveImportState(o.state_path); !st.ok()) return Fail(st);
  const uint64_t done = state->rows - first;
  double secs = progress.Seconds();
  std::printf("imported %llu entries into '%s' in %.2fs (%.0f/s)\n", (unsigned long long)done,
              name.c_str(), secs, secs > 0 ? double(done) / secs : 0.0);
  return 0;
}

// Runs `mnemod --check --data-dir DIR`, which opens the store as the daemon
// would, prints its collections and closes it: the command-line tool links
// no engine (ARCHITECTURE.md). mnemod is looked for beside this program,
// then on the PATH.
Status CheckWithDaemon(const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path beside = ec ? fs::path() : self.parent_path() / "mnemod";
  const std::string program = !beside.empty() && fs::exists(beside, ec) ? beside.string() : "mnemod";
  std::vector<std::string> args = {program, "--check", "--data-dir", data_dir, "--log-level", "warn"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  pid_t pid = 0;
  if (int err = posix_spawnp(&pid, program.c_str(), nullptr, nullptr, argv.data(), environ); err != 0) {
    return Status::FailedPrecondition("cannot run '" + program + "' to check the restored store: " +
                                      std::strerror(err));
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return Status::Internal("waitpid: " + std::string(std::strerror(errno)));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return Status::OK();
  return Status::Corruption("the restored store does not open (mnemod --check failed; its message is above)");
}

// Copies a backup into a new data directory and opens it there, which
// checks it and rebuilds whatever index it must, before any daemon serves it.
int Restore(const std::string& backup, const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(backup, ec) || !fs::exists(fs::path(backup) / "CURRENT", ec)) {
    return Fail(Status::InvalidArgument("'" + backup + "' is not a mnemo backup (no CURRENT file)"));
  }
  if (fs::exists(data_dir, ec) && !fs::is_empty(data_dir, ec)) {
    return Fail(Status::InvalidArgument("'" + data_dir +
                                        "' is not empty; restore into a new directory "
                                        "(the daemon must not be running on it)"));
  }
  fs::create_directories(data_dir, ec);
  if (!ec) fs::copy(backup, data_dir, fs::copy_options::recursive, ec);
  if (ec) {
    fs::remove_all(data_dir, ec);
    return Fail(Status::IOError("cannot copy '" + backup + "' to '" + data_dir + "': " + ec.message()));
  }
  if (Status st = CheckWithDaemon(data_dir); !st.ok()) {
    std::error_code ignored;
    fs::remove_all(data_dir, ignored);
    return Fail(st);
  }
  std::printf("restored '%s' into '%s'\n", backup.c_str(), data_dir.c_str());
  return 0;
}

Result<std::vector<float>> ReadAll(const std::string& file, const std::string& format,
                                   uint32_t* dim) {
  MNEMO_ASSIGN_OR_RETURN(auto reader, OpenFile(file, format));
  VecBatch all;
  MNEMO_RETURN_IF_ERROR(reader->Read(SIZE_MAX, &all).status());
  *dim = reader->dim();
  return std::move(all.vectors);
}

// N clients send single queries round robin for S seconds.
int Bench(const std::string& addr, const std::string& key, const std::string& name,
          const std::string& file, const std::string& format, const std::string& gt_file,
          size_t clients, double seconds, const net::SearchOptions& o) {
  uint32_t dim = 0, gt_k = 0;
  auto queries = ReadAll(file, format, &dim);
  if (!queries.ok()) return Fail(queries.status());
  auto gt = ReadAll(gt_file, "ivecs", &gt_k);
  if (!gt.ok()) return Fail(gt.status());
  const size_t nq = queries->size() / dim;
  if (gt->size() / gt_k < nq || gt_k < o.k) {
    return Fail(Status::InvalidArgument("ground truth has " + std::to_string(gt->size() / gt_k) +
                                        " rows of " + std::to_string(gt_k) + " for " +
                                        std::to_string(nq) + " queries and k=" +
                                        std::to_string(o.k)));
  }
  std::vector<std::vector<int64_t>> found(nq);
  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<uint64_t> done{0};
  std::atomic<bool> failed{false};
  auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (size_t t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      auto c = net::Client::Connect(addr, key);
      if (!c.ok()) { failed = true; return; }
      std::vector<double> mine;
      for (size_t i = t; Clock::now() < deadline && !failed; i += clients) {
        size_t q = i % nq;
        auto s = Clock::now();
        auto r = (*c)->Search(name, std::span(*queries).subspan(q * dim, dim), o);
        mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
        if (!r.ok()) {
          std::fprintf(stderr, "error: %s\n", r.status().ToString().c_str());
          failed = true;
          return;
        }
        if (i < nq) found[q] = r->ids;
        done++;
      }
      std::lock_guard<std::mutex> lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  if (failed) return 1;
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  double hits = 0, asked = 0;
  for (size_t q = 0; q < nq; ++q) {
    if (found[q].empty()) continue;
    std::unordered_set<int64_t> truth;
    for (uint32_t j = 0; j < o.k; ++j) truth.insert(int64_t((*gt)[q * gt_k + j]));
    for (int64_t id : found[q]) hits += truth.count(id);
    asked += o.k;
  }
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) { return latencies.empty() ? 0.0 : latencies[size_t(p * (latencies.size() - 1))]; };
  std::printf("recall@%u %.4f  qps %.0f  p50 %.0fus  p99 %.0fus  (%llu queries, %zu clients, %.1fs)\n",
              o.k, asked > 0 ? hits / asked : 0.0, double(done) / secs, pct(0.5), pct(0.99),
              (unsigned long long)done.load(), clients, secs);
  return 0;
}

// Every option of every subcommand; each subcommand reads its own.
struct Args {
  std::string addr = "127.0.0.1:7070", api_key;
  std::string name, file, format, metric = "l2", index = "Flat", out, evict, gt;
  uint32_t dim = 0, k = 10, nprobe = 0, ef = 0;
  uint64_t capacity = 0, train_size = 0;
  uint32_t ef_construction = 0;
  std::optional<uint64_t> group;
  size_t clients = 1;
  double seconds = 10;
  std::vector<uint64_t> ids;
  std::string dir, data_dir;
  ImportOptions import;
  net::SearchOptions search() const { return {.k = k, .nprobe = nprobe, .ef = ef, .group = group}; }
};

int CreateCmd(net::Client& c, Args& a) {
  engine::CollectionConfig cc{a.name,     a.dim,   a.metric,     a.index,
                              a.capacity, a.evict, a.train_size, a.ef_construction};
  auto r = c.CreateCollection(cc);
  if (!r.ok()) return Fail(r.status());
  std::printf("created '%s' (dim %u, %s, %s)\n", a.name.c_str(), a.dim, a.metric.c_str(), a.index.c_str());
  return 0;
}

int ImportCmd(net::Client& c, Args& a) {
  if (a.import.batch == 0 || a.import.depth == 0) {
    std::fprintf(stderr, "--batch and --depth must be at least 1\n");
    return 2;
  }
  if (a.import.state_path.empty()) {
    std::string safe = a.name;
    for (char& ch : safe) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') ch = '_';
    }
    a.import.state_path = ".mnemo-import-" + safe + ".state";
  }
  return Import(c, a.name, a.file, a.import);
}

int SearchCmd(net::Client& c, Args& a) {
  uint32_t qdim = 0;
  auto q = ReadAll(a.file, a.format, &qdim);
  if (!q.ok()) return Fail(q.status());
  auto r = c.Search(a.name, *q, a.search());
  if (!r.ok()) return Fail(r.status());
  if (!a.out.empty()) {
    Status st = WriteIvecs(a.out, r->ids, r->n, r->k);
    if (!st.ok()) return Fail(st);
    std::printf("wrote %zu x %u ids to %s\n", r->n, r->k, a.out.c_str());
    return 0;
  }
  for (size_t i = 0; i < r->n; ++i) {
    for (uint32_t j = 0; j < r->k; ++j) {
      std::printf("%lld:%g%c", (long long)r->ids[i * r->k + j], r->distances[i * r->k + j],
                  j + 1 == r->k ? '\n' : ' ');
    }
  }
  return 0;
}

int GetCmd(net::Client& c, Args& a) {
  auto s = c.Stats(a.name);
  if (!s.ok()) return Fail(s.status());
  auto e = c.Get(a.name, a.ids);
  if (!e.ok()) return Fail(e.status());
  for (size_t i = 0; i < e->ids.size(); ++i) {
    std::printf("%llu group=%llu payload=%zu bytes vector=[", (unsigned long long)e->ids[i],
                (unsigned long long)e->groups[i], e->payloads[i].size());
    for (uint32_t j = 0; j < s->dim; ++j) {
      std::printf("%s%.9g", j ? ", " : "", e->vectors[i * s->dim + j]);
    }
    std::printf("]\n");
  }
  return 0;
}

int DeleteCmd(net::Client& c, Args& a) {
  auto n = c.Delete(a.name, a.ids);
  if (!n.ok()) return Fail(n.status());
  std::printf("deleted %llu entries\n", (unsigned long long)*n);
  return 0;
}

// `list`, and `stats` without a name.
int ListCmd(net::Client& c, Args&) {
  auto all = c.ListCollections();
  if (!all.ok()) return Fail(all.status());
  for (const auto& s : *all) PrintStats(s);
  return 0;
}

int StatsCmd(net::Client& c, Args& a) {
  if (a.name.empty()) return ListCmd(c, a);
  auto s = c.Stats(a.name);
  if (!s.ok()) return Fail(s.status());
  PrintStats(*s);
  return 0;
}

int DropCmd(net::Client& c, Args& a) {
  Status st = c.DropCollection(a.name);
  if (!st.ok()) return Fail(st);
  std::printf("dropped '%s'\n", a.name.c_str());
  return 0;
}

int BackupCmd(net::Client& c, Args& a) {
  std::error_code ec;
  auto abs = std::filesystem::absolute(a.dir, ec);
  const std::string dir = ec ? a.dir : abs.lexically_normal().string();
  Status st = c.Backup(dir);
  if (!st.ok()) return Fail(st);
  std::printf("backed up into '%s'\n", dir.c_str());
  return 0;
}

int TrainCmd(net::Client& c, Args& a) {
  Status st = c.Train(a.name);
  if (!st.ok()) return Fail(st);
  std::printf("trained '%s'\n", a.name.c_str());
  return 0;
}

// The subcommands that talk to the daemon over one connection.
using Command = int (*)(net::Client&, Args&);

void AddSearchOptions(CLI::App* cmd, Args& a) {
  cmd->add_option("name", a.name)->required();
  cmd->add_option("query_file", a.file)->required();
  cmd->add_option("--format", a.format, "query file format");
  cmd->add_option("--k", a.k, "neighbours per query")->capture_default_str();
  cmd->add_option("--nprobe", a.nprobe, "IVF lists to probe");
  cmd->add_option("--ef", a.ef, "HNSW efSearch");
}

int Main(int argc, char** argv) {
  CLI::App app{"mnemo: command-line tool for a mnemod daemon"};
  app.require_subcommand(1);
  Args a;
  app.add_option("--addr", a.addr, "daemon address")->capture_default_str();
  app.add_option("--api-key", a.api_key, "API key");
  std::vector<std::pair<CLI::App*, Command>> commands;

  auto* create = app.add_subcommand("create", "create a collection");
  create->add_option("name", a.name)->required();
  create->add_option("--dim", a.dim, "dimension")->required();
  create->add_option("--metric", a.metric, "l2, ip or cosine")->capture_default_str();
  create->add_option("--index", a.index, "FAISS factory string")->capture_default_str();
  create->add_option("--capacity", a.capacity, "maximum entries");
  create->add_option("--evict", a.evict, "fifo or lru");
  create->add_option("--train-size", a.train_size, "entries gathered before training");
  create->add_option("--ef-construction", a.ef_construction,
                     "HNSW: candidates kept while linking a new vector (default 64)")
      ->check(CLI::PositiveNumber);  // the daemon enforces the upper bound
  commands.emplace_back(create, CreateCmd);

  auto* import = app.add_subcommand("import", "import vectors from a file");
  import->add_option("name", a.name)->required();
  import->add_option("file", a.file)->required();
  import->add_option("--format", a.import.format, "fvecs, bvecs, ivecs, npy, hdf5 or jsonl (default: the extension)");
  import->add_option("--start-id", a.import.start_id, "id of the first row")->capture_default_str();
  import->add_option("--batch", a.import.batch, "entries per write")->capture_default_str();
  import->add_option("--depth", a.import.depth, "writes in flight")->capture_default_str();
  import->add_flag("--resume", a.import.resume, "continue an interrupted import of this file");
  import->add_option("--state", a.import.state_path, "where the import records its progress (default: .mnemo-import-NAME.state)");
  commands.emplace_back(import, ImportCmd);

  auto* search = app.add_subcommand("search", "search with the queries in a file");
  AddSearchOptions(search, a);
  search->add_option("--group", a.group, "only entries of this group");
  search->add_option("--out", a.out, "write result ids as ivecs");
  commands.emplace_back(search, SearchCmd);

  auto* bench = app.add_subcommand("bench", "recall, QPS and latency of concurrent clients");
  AddSearchOptions(bench, a);
  bench->add_option("--gt", a.gt, "ground truth ivecs")->required();
  bench->add_option("--clients", a.clients, "concurrent clients")->capture_default_str();
  bench->add_option("--seconds", a.seconds, "duration")->capture_default_str();

  auto* get = app.add_subcommand("get", "print entries");
  get->add_option("name", a.name)->required();
  get->add_option("ids", a.ids)->required();
  commands.emplace_back(get, GetCmd);
  auto* del = app.add_subcommand("delete", "delete entries");
  del->add_option("name", a.name)->required();
  del->add_option("ids", a.ids)->required();
  commands.emplace_back(del, DeleteCmd);
  commands.emplace_back(app.add_subcommand("list", "list collections"), ListCmd);
  auto* stats = app.add_subcommand("stats", "show statistics");
  stats->add_option("name", a.name);
  commands.emplace_back(stats, StatsCmd);
  auto* drop = app.add_subcommand("drop", "drop a collection");
  drop->add_option("name", a.name)->required();
  commands.emplace_back(drop, DropCmd);
  auto* train = app.add_subcommand("train", "train an index on the entries stored so far");
  train->add_option("name", a.name)->required();
  commands.emplace_back(train, TrainCmd);
  auto* backup = app.add_subcommand(
      "backup", "online copy of the daemon's store into DIR, on the daemon's machine");
  backup->add_option("dir", a.dir, "new directory (relative paths are made absolute here)")->required();
  commands.emplace_back(backup, BackupCmd);
  auto* restore = app.add_subcommand(
      "restore", "copy a backup into a new data directory for a stopped daemon (no daemon needed)");
  restore->add_option("dir", a.dir, "the backup")->required();
  restore->add_option("--data-dir", a.data_dir, "new data directory for mnemod")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*restore) return Restore(a.dir, a.data_dir);
  if (*bench) {
    return Bench(a.addr, a.api_key, a.name, a.file, a.format, a.gt, a.clients, a.seconds, a.search());
  }
  auto connected = net::Client::Connect(a.addr, a.api_key);
  if (!connected.ok()) return Fail(connected.status());
  for (const auto& [cmd, run] : commands) {
    if (*cmd) return run(**connected, a);
  }
  return 2;
}

}  // namespace
}  // namespace mnemo::tools

int main(int argc, char** argv) { return mnemo::tools::Main(argc, argv); }

// mnemo-local: the mnemo commands run in-process against an embedded store
// (--data-dir, default ./data). It is what the quick start uses until the
// daemon and the networked `mnemo` tool exist; the commands and flags are
// the ones SPEC.md gives `mnemo`, so scripts carry over.
//
// Exit codes: 0 success, 1 the operation failed, 2 bad usage.
#include <CLI/CLI.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>

#include "engine/engine.h"
#include "tests/test_util.h"
#include "tools/vector_file.h"

namespace mnemo::tools {
namespace {

using Clock = std::chrono::steady_clock;

int Fail(const Status& st) {
  std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
  return 1;
}

Result<std::unique_ptr<engine::Engine>> OpenEngine(const std::string& dir) {
  engine::EngineOptions o;
  o.data_dir = dir;
  return engine::Engine::Open(o);
}

// Progress on a terminal: one line redrawn; otherwise a line every 5 s.
class Progress {
 public:
  explicit Progress(uint64_t total) : total_(total), tty_(isatty(STDERR_FILENO)) {}
  void Update(uint64_t done) {
    auto now = Clock::now();
    if (now - last_ < (tty_ ? std::chrono::milliseconds(200) : std::chrono::seconds(5))) return;
    last_ = now;
    double secs = std::chrono::duration<double>(now - start_).count();
    double rate = secs > 0 ? double(done) / secs : 0;
    double left = rate > 0 && total_ > done ? double(total_ - done) / rate : 0;
    std::fprintf(stderr, "%s%llu/%llu entries  %.0f/s  %.0fs left%s",
                 tty_ ? "\r" : "", (unsigned long long)done, (unsigned long long)total_, rate, left,
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
  Clock::time_point last_{};
};

int Import(engine::Engine& eng, const std::string& name, const std::string& file,
           const std::string& format_name, uint64_t start_id, size_t batch) {
  auto c = eng.GetCollection(name);
  if (!c.ok()) return Fail(c.status());
  auto format = FormatFor(file, format_name);
  if (!format.ok()) return Fail(format.status());
  auto reader = VecReader::Open(file, *format);
  if (!reader.ok()) return Fail(reader.status());
  if ((*reader)->dim() != (*c)->dim()) {
    return Fail(Status::InvalidArgument("'" + file + "' has dimension " +
                                        std::to_string((*reader)->dim()) + ", collection '" +
                                        name + "' has " + std::to_string((*c)->dim())));
  }
  struct stat st {};
  stat(file.c_str(), &st);
  const size_t record = 4 + size_t((*reader)->dim()) * (*format == VecFormat::kBvecs ? 1 : 4);
  Progress progress(uint64_t(st.st_size) / record);
  std::vector<float> rows;
  uint64_t done = 0;
  for (;;) {
    rows.clear();
    auto n = (*reader)->Read(batch, &rows);
    if (!n.ok()) return Fail(Status(n.status().code(), n.status().message() + " (" +
                                    std::to_string(done) + " entries imported before it)"));
    if (*n == 0) break;
    auto ids = testing::Iota(*n, start_id + done);
    Status up = (*c)->Upsert({ids, rows});
    if (!up.ok()) return Fail(up);
    done += *n;
    progress.Update(done);
  }
  progress.Done();
  double secs = progress.Seconds();
  std::printf("imported %llu entries into '%s' in %.2fs (%.0f/s)\n", (unsigned long long)done,
              name.c_str(), secs, secs > 0 ? double(done) / secs : 0.0);
  return 0;
}

void PrintStats(const engine::CollectionStats& s) {
  std::printf("%s: dim=%u metric=%s index=%s count=%llu trained=%s storage_bytes=%llu "
              "index_memory_bytes=%llu\n",
              s.name.c_str(), s.dim, s.metric.c_str(), s.index.c_str(),
              (unsigned long long)s.count, s.trained ? "yes" : "no",
              (unsigned long long)s.storage_bytes, (unsigned long long)s.index_memory_bytes);
}

// Creates a collection of generated clustered vectors (if absent), imports
// them, and runs queries against brute force: proof the store works here.
int Quickstart(engine::Engine& eng, size_t n, uint32_t dim, const std::string& index) {
  auto data = testing::MakeClustered(n, 100, dim, 100, 2024);
  auto existing = eng.GetCollection("quickstart");
  std::shared_ptr<engine::Collection> c;
  if (existing.ok()) {
    c = *existing;
    std::printf("collection 'quickstart' already has %llu entries (reopened from disk)\n",
                (unsigned long long)c->Stats().count);
  } else {
    engine::CollectionConfig cc;
    cc.name = "quickstart";
    cc.dim = dim;
    cc.index = index;
    auto created = eng.CreateCollection(cc);
    if (!created.ok()) return Fail(created.status());
    c = *created;
  }
  Progress progress(n);
  for (size_t at = 0; at < n; at += 5000) {
    size_t m = std::min<size_t>(5000, n - at);
    auto ids = testing::Iota(m, at);
    Status st = c->Upsert({ids, std::span(data.base).subspan(at * dim, m * dim)});
    if (!st.ok()) return Fail(st);
    progress.Update(at + m);
  }
  progress.Done();
  std::printf("imported %zu generated vectors (dim %u) into 'quickstart' (%s) in %.2fs\n", n, dim,
              index.c_str(), progress.Seconds());
  auto r = c->Search({.queries = data.queries, .k = 10, .nprobe = 16, .ef = 64});
  if (!r.ok()) return Fail(r.status());
  auto truth = testing::BruteForce(data, 10);
  std::printf("query 0 -> ids:");
  for (int j = 0; j < 10; ++j) std::printf(" %lld", (long long)r->ids[j]);
  std::printf("\nrecall@10 over %zu queries against brute force: %.3f\n", data.q(),
              testing::RecallAtK(r->ids, truth, data.q(), 10));
  PrintStats(c->Stats());
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"mnemo-local: mnemo's commands against an embedded store, in-process"};
  app.require_subcommand(1);
  std::string data_dir = "./data";
  app.add_option("--data-dir", data_dir, "store directory")->capture_default_str();

  std::string name, file, format, metric = "l2", index = "Flat", out, evict;
  uint32_t dim = 0, k = 10, nprobe = 0, ef = 0;
  uint64_t start_id = 0, capacity = 0, train_size = 0;
  std::optional<uint64_t> group;
  size_t batch = 10000, sample_n = 20000;
  std::vector<uint64_t> ids;

  auto* create = app.add_subcommand("create", "create a collection");
  create->add_option("name", name)->required();
  create->add_option("--dim", dim, "dimension")->required();
  create->add_option("--metric", metric, "l2, ip or cosine")->capture_default_str();
  create->add_option("--index", index, "FAISS factory string")->capture_default_str();
  create->add_option("--capacity", capacity, "maximum entries");
  create->add_option("--evict", evict, "fifo or lru");
  create->add_option("--train-size", train_size, "entries gathered before training");

  auto* import = app.add_subcommand("import", "import vectors from a file");
  import->add_option("name", name)->required();
  import->add_option("file", file)->required();
  import->add_option("--format", format, "fvecs, bvecs or ivecs (default: from the extension)");
  import->add_option("--start-id", start_id, "id of the first row")->capture_default_str();
  import->add_option("--batch", batch, "entries per write")->capture_default_str();

  auto* search = app.add_subcommand("search", "search with the queries in a file");
  search->add_option("name", name)->required();
  search->add_option("query_file", file)->required();
  search->add_option("--format", format, "query file format");
  search->add_option("--k", k, "neighbours per query")->capture_default_str();
  search->add_option("--nprobe", nprobe, "IVF lists to probe");
  search->add_option("--ef", ef, "HNSW efSearch");
  search->add_option("--group", group, "only entries of this group");
  search->add_option("--out", out, "write result ids as ivecs");

  auto* get = app.add_subcommand("get", "print entries");
  get->add_option("name", name)->required();
  get->add_option("ids", ids)->required();
  auto* del = app.add_subcommand("delete", "delete entries");
  del->add_option("name", name)->required();
  del->add_option("ids", ids)->required();
  auto* list = app.add_subcommand("list", "list collections");
  auto* stats = app.add_subcommand("stats", "show statistics");
  stats->add_option("name", name);
  auto* drop = app.add_subcommand("drop", "drop a collection");
  drop->add_option("name", name)->required();
  auto* train = app.add_subcommand("train", "train an index on the entries stored so far");
  train->add_option("name", name)->required();
  auto* quick = app.add_subcommand("quickstart", "import a generated sample and query it");
  quick->add_option("--n", sample_n, "vectors")->capture_default_str();
  quick->add_option("--dim", dim, "dimension (default 64)");
  quick->add_option("--index", index, "FAISS factory string (default IVF256,Flat)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  auto opened = OpenEngine(data_dir);
  if (!opened.ok()) return Fail(opened.status());
  engine::Engine& eng = **opened;

  if (*create) {
    engine::CollectionConfig cc{name, dim, metric, index, capacity, evict, train_size};
    auto c = eng.CreateCollection(cc);
    if (!c.ok()) return Fail(c.status());
    std::printf("created '%s' (dim %u, %s, %s)\n", name.c_str(), dim, metric.c_str(), index.c_str());
  } else if (*import) {
    return Import(eng, name, file, format, start_id, batch);
  } else if (*search) {
    auto c = eng.GetCollection(name);
    if (!c.ok()) return Fail(c.status());
    auto fmt = FormatFor(file, format);
    if (!fmt.ok()) return Fail(fmt.status());
    auto reader = VecReader::Open(file, *fmt);
    if (!reader.ok()) return Fail(reader.status());
    std::vector<float> q;
    auto n = (*reader)->Read(SIZE_MAX, &q);
    if (!n.ok()) return Fail(n.status());
    auto r = (*c)->Search({.queries = q, .k = k, .nprobe = nprobe, .ef = ef, .group = group});
    if (!r.ok()) return Fail(r.status());
    if (!out.empty()) {
      Status st = WriteIvecs(out, r->ids, r->n, r->k);
      if (!st.ok()) return Fail(st);
      std::printf("wrote %zu x %u ids to %s\n", r->n, r->k, out.c_str());
    } else {
      for (size_t i = 0; i < r->n; ++i) {
        for (uint32_t j = 0; j < r->k; ++j) {
          std::printf("%lld:%g%c", (long long)r->ids[i * k + j], r->distances[i * k + j],
                      j + 1 == r->k ? '\n' : ' ');
        }
      }
    }
  } else if (*get) {
    auto c = eng.GetCollection(name);
    if (!c.ok()) return Fail(c.status());
    auto e = (*c)->Get(ids);
    if (!e.ok()) return Fail(e.status());
    for (size_t i = 0; i < e->ids.size(); ++i) {
      std::printf("%llu group=%llu payload=%zu bytes vector=[", (unsigned long long)e->ids[i],
                  (unsigned long long)e->groups[i], e->payloads[i].size());
      for (uint32_t j = 0; j < (*c)->dim(); ++j) {
        std::printf("%s%.9g", j ? ", " : "", e->vectors[i * (*c)->dim() + j]);
      }
      std::printf("]\n");
    }
  } else if (*del) {
    auto c = eng.GetCollection(name);
    if (!c.ok()) return Fail(c.status());
    auto n = (*c)->Delete(ids);
    if (!n.ok()) return Fail(n.status());
    std::printf("deleted %llu entries\n", (unsigned long long)*n);
  } else if (*list) {
    for (const auto& s : eng.ListCollections()) PrintStats(s);
  } else if (*stats) {
    if (name.empty()) {
      for (const auto& s : eng.ListCollections()) PrintStats(s);
    } else {
      auto c = eng.GetCollection(name);
      if (!c.ok()) return Fail(c.status());
      PrintStats((*c)->Stats());
    }
  } else if (*drop) {
    Status st = eng.DropCollection(name);
    if (!st.ok()) return Fail(st);
    std::printf("dropped '%s'\n", name.c_str());
  } else if (*train) {
    auto c = eng.GetCollection(name);
    if (!c.ok()) return Fail(c.status());
    Status st = (*c)->Train();
    if (!st.ok()) return Fail(st);
    std::printf("trained '%s'\n", name.c_str());
  } else if (*quick) {
    return Quickstart(eng, sample_n, dim ? dim : 64,
                      quick->count("--index") ? index : "IVF256,Flat");
  }
  Status closed = eng.Close();
  if (!closed.ok()) return Fail(closed);
  return 0;
}

}  // namespace
}  // namespace mnemo::tools

int main(int argc, char** argv) { return mnemo::tools::Main(argc, argv); }

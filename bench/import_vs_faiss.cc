// `mnemo import` of an fvecs file into a real mnemod against FAISS's own
// train + add of the same rows in this process, measured in one run:
//   rate ratio = FAISS's train+add time / mnemo import's time (both train
//   on the first train_size rows: mnemod's default, 39 per centroid), and
//   the peak resident memory of the mnemo process (VmHWM).
//
// Usage: import_vs_faiss [--n 1000000] [--dim 128] [--index IVF1024,PQ32]
#include <CLI/CLI.hpp>
#include <faiss/index_factory.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "net/client.h"
#include "tests/daemon_process.h"
#include "tests/test_util.h"

extern char** environ;

using namespace mnemo;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void WriteFvecs(const std::string& path, const std::vector<float>& x, uint32_t dim) {
  std::ofstream out(path, std::ios::binary);
  const int32_t d = int32_t(dim);
  for (size_t at = 0; at < x.size(); at += dim) {
    out.write(reinterpret_cast<const char*>(&d), 4);
    out.write(reinterpret_cast<const char*>(&x[at]), std::streamsize(dim * 4));
  }
}

// The child's peak resident size since its exec (VmHWM), in KiB. Its
// ru_maxrss would not do: posix_spawn runs the child in this process's
// address space until exec, and the kernel counts that in.
long PeakRssKib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Runs `argv` to the end; returns its exit status and peak RSS in KiB.
std::pair<int, long> RunChild(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return {-1, 0};
  int status = 0;
  long peak = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    peak = std::max(peak, PeakRssKib(pid));  // a zombie's status has no VmHWM
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, peak};
}

}  // namespace

int main(int argc, char** argv) {
  size_t n = 1000000;
  uint32_t dim = 128;
  std::string factory = "IVF1024,PQ32";
  CLI::App app{"mnemo import vs FAISS train+add"};
  app.add_option("--n", n, "rows");
  app.add_option("--dim", dim, "dimension");
  app.add_option("--index", factory, "FAISS factory string");
  CLI11_PARSE(app, argc, argv);
  setenv("OPENBLAS_NUM_THREADS", "1", 0);

  testing::TempDir dir;
  const std::string file = dir.Sub("base.fvecs");
  auto data = testing::MakeClustered(n, 0, dim, 1000, 21);
  WriteFvecs(file, data.base, dim);

  // FAISS: train on the rows mnemod will train on, then add everything.
  auto t0 = Clock::now();
  std::unique_ptr<faiss::Index> index(faiss::index_factory(int(dim), factory.c_str()));
  // mnemod's default sample: 39 points per centroid of the coarse quantizer.
  size_t train_rows = n;
  if (auto at = factory.find("IVF"); at != std::string::npos) {
    train_rows = std::min(n, size_t(39) * std::stoul(factory.substr(at + 3)));
  }
  index->train(faiss::Index::idx_t(train_rows), data.base.data());
  index->add(faiss::Index::idx_t(n), data.base.data());
  const double faiss_s = Seconds(t0);
  index.reset();
  std::vector<float>().swap(data.base);

  testing::DaemonProcess daemon(dir.Sub("data"));
  {
    auto c = net::Client::Connect(daemon.address());
    engine::CollectionConfig cc;
    cc.name = "bench";
    cc.dim = dim;
    cc.index = factory;
    if (!c.ok() || !(*c)->CreateCollection(cc).ok()) return std::fprintf(stderr, "create failed\n"), 1;
  }
  t0 = Clock::now();
  auto [rc, rss_kib] = RunChild({MNEMO_PATH, "--addr", daemon.address(), "import", "bench", file,
                                 "--state", dir.Sub("import.state")});
  const double import_s = Seconds(t0);
  if (rc != 0) return std::fprintf(stderr, "mnemo import exited %d\n", rc), 1;
  auto c = net::Client::Connect(daemon.address());
  auto stats = (*c)->Stats("bench");
  if (!stats.ok() || stats->count != n || !stats->trained) {
    return std::fprintf(stderr, "the collection does not hold the file\n"), 1;
  }
  std::printf("%zu x %u into %s, training on %zu rows\n", n, dim, factory.c_str(), train_rows);
  std::printf("FAISS train+add %.1f s (%.0f rows/s); mnemo import %.1f s (%.0f rows/s)\n", faiss_s,
              double(n) / faiss_s, import_s, double(n) / import_s);
  std::printf("rate ratio (import / FAISS) %.2f (target >= 0.7); mnemo peak RSS %.0f MB "
              "(target < 200)\n",
              faiss_s / import_s, double(rss_kib) / 1024);
  return 0;
}

// mnemod's network path against FAISS used in-process, on the same data and
// index, measured side by side in one run:
//   (a) QPS of --clients concurrent clients each sending single queries over
//       loopback to a real mnemod process, divided by FAISS's QPS searching
//       all queries as one batch in this process with the same cores;
//   (b) one client's p50 single-query latency over loopback minus FAISS's p50
//       single-query time in-process.
// mnemod keeps Flat and HNSW arrays on huge pages (common/huge_pages.h),
// which FAISS in a process does not by itself; (a) is also printed against
// a copy of the in-process index on huge pages, so that the two searches
// differ only by the serving.
//
// Cores. The ratio is about the server: how much of FAISS's batched
// throughput mnemod keeps once queries arrive one by one over TCP. So by
// default mnemod and the in-process FAISS get the same cores (--server-cpus,
// the first half of this machine's) and the client threads get the rest
// (--client-cpus), as they would on the model hosts that send the queries.
// --shared puts everything on every core instead; then the clients' own
// syscalls come out of FAISS's budget, and the ratio says so.
//
// Usage: net_vs_faiss [--n 100000] [--dim 128] [--queries 2000] [--clients 32]
//        [--index "Flat;IVF1024,Flat;HNSW32"] [--nprobe 16] [--ef 64]
//        [--server-cpus LIST --client-cpus LIST | --shared] [--mnemod-flags "..."]
//        [--rounds 5] [--min-round-ms 500]
#include <CLI/CLI.hpp>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/clone_index.h>
#include <faiss/index_factory.h>
#include <dlfcn.h>
#include <omp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <thread>

#include "common/cpu_set.h"
#include "common/huge_pages.h"
#include "index/random_reads.h"
#include "net/client.h"
#include "tests/daemon_process.h"
#include "tests/test_util.h"

using namespace mnemo;
using Clock = std::chrono::steady_clock;

namespace {

double Micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double P50(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

struct Config {
  size_t n = 100000, dim = 128, queries = 2000, clients = 32;
  uint32_t k = 10, nprobe = 16, ef = 64;
  std::string indexes = "Flat;IVF1024,Flat;HNSW32";
  std::string server_cpus, client_cpus, mnemod_flags;
  bool shared = false;
  int rounds = 5;
  double min_round_ms = 500;  // a round lasts this long at least (see NetRound)
};

std::string CpuList(const std::vector<int>& cpus) {
  std::string s;
  for (int c : cpus) s += (s.empty() ? "" : ",") + std::to_string(c);
  return s;
}

// A sum and a count from mnemod's /metrics, e.g. queries per FAISS call.
std::pair<double, double> SumAndCount(const std::string& http, const std::string& histogram,
                                      const std::string& labels = "") {
  std::string text = testing::HttpGet(http, "/metrics");
  auto value = [&](const std::string& name) {
    auto at = text.find("\n" + name + labels + " ");
    return at == std::string::npos ? 0.0
                                   : std::stod(text.substr(at + name.size() + labels.size() + 2));
  };
  return {value(histogram + "_sum"), value(histogram + "_count")};
}

double MeanBetween(std::pair<double, double> before, std::pair<double, double> after) {
  return (after.first - before.first) / std::max(1.0, after.second - before.second);
}

// CPU seconds each named thread group of a process has used (from
// /proc/PID/task/*/stat: comm, utime + stime), e.g. {"mnemo-work": 3.2}.
std::map<std::string, double> ThreadCpu(pid_t pid) {
  std::map<std::string, double> out;
  const double tick = double(sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(
           "/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;
    const auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::string name = line.substr(open + 1, close - open - 1);
    if (name.rfind("rocksdb", 0) == 0) name = "rocksdb";
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stod(field);
      if (i == 15) stime = std::stod(field);
    }
    out[name] += (utime + stime) / tick;
  }
  return out;
}

// Seconds the given CPUs spent in each state of /proc/stat since boot:
// idle (idle + iowait), irq (irq + softirq: on loopback, a send does the
// receiver's TCP work there), steal (taken by the hypervisor).
std::map<std::string, double> CpuStates(const std::vector<int>& cpus) {
  std::map<std::string, double> out;
  const double tick = double(sysconf(_SC_CLK_TCK));
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("cpu", 0) != 0 || line.size() < 4 || !isdigit(static_cast<unsigned char>(line[3]))) continue;
    std::istringstream fields(line.substr(3));
    int cpu;
    double user, nice, system, idle, iowait, irq, softirq, steal;
    if (!(fields >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq >> steal)) continue;
    if (std::find(cpus.begin(), cpus.end(), cpu) == cpus.end()) continue;
    out["idle"] += (idle + iowait) / tick;
    out["irq"] += (irq + softirq) / tick;
    out["steal"] += steal / tick;
  }
  return out;
}

// Puts what a search of `index` reads at random on huge pages, as mnemod's
// VectorIndex does.
void AdviseHugePages(const faiss::Index& index) {
  for (const auto& array : index::RandomlyReadArrays(index)) mnemo::AdviseHugePages(array.data, array.bytes);
}

// The BLAS kernel FAISS's flat searches run on. OpenBLAS picks it by the
// CPU's model number, and on a virtual CPU it does not know it may fall back
// to a far older one: on the 16-core GPU hosts it picked Cooperlake on some
// and Prescott (SSE3) on others, where the in-process flat batch ran 3.3x
// slower (1081 against 3567 QPS with OPENBLAS_CORETYPE=SkylakeX) and
// mnemod's flat batches of 2-3 queries hardly slower, which made (a) 1.67
// instead of 0.52. The header prints it, so that flat runs on different
// kernels are not compared. Looked up at run time: another BLAS lacks it.
using BlasCoreName = char* (*)();
std::string BlasKernel() {
  auto name = reinterpret_cast<BlasCoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return name != nullptr ? std::string("OpenBLAS ") + name() : "not OpenBLAS";
}

constexpr const char* kBatchQueries = "mnemo_search_batch_queries";
constexpr const char* kRequestSeconds = "mnemo_request_duration_seconds";
constexpr const char* kQueueSeconds = "mnemo_search_queue_seconds";
constexpr const char* kCallSeconds = "mnemo_search_call_seconds";
constexpr const char* kSearchLabel = "{op=\"search\"}";

// (b) is measured twice: with a client that sleeps until its reply comes and
// with one that polls for it this long first.
constexpr std::chrono::microseconds kClientBusyPoll{1000};

struct Row {
  double faiss_qps = 0, faiss_32_qps = 0, net_qps = 0, faiss_p50 = 0, net_p50 = 0, batch = 0;
  std::vector<double> round_a;  // net / faiss_all of each round, the two measured back to back
  // The same against a copy of the in-process index on huge pages, as
  // mnemod keeps its Flat and HNSW arrays (common/huge_pages.h).
  double faiss_huge_qps = 0;
  std::vector<double> round_a_huge;
  double polled_p50 = 0;  // net_p50 from a client that polls for its reply
  double faiss_mean = 0, call_mean = 0;  // us per single query: in-process, mnemod's search call
  double server_us = 0;  // mean time in mnemod per single query of (b), arrival to reply
  std::map<std::string, double> cores;  // mnemod's busy cores by thread name during (a)
  std::map<std::string, double> server_cpu_states;  // cores of the server CPUs idle, in irq, stolen during (a)
  double loaded_server_us = 0;  // mean time in mnemod per query of (a), arrival to reply
  double loaded_queue_us = 0;   // ...of which waiting in the batcher
};


std::unique_ptr<faiss::Index> BuildFaiss(const Config& cfg, const std::string& factory,
                                         const testing::Dataset& data) {
  std::unique_ptr<faiss::Index> index(faiss::index_factory(int(cfg.dim), factory.c_str()));
  if (!index->is_trained) index->train(faiss::Index::idx_t(cfg.n), data.base.data());
  index->add(faiss::Index::idx_t(cfg.n), data.base.data());
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index.get())) ivf->nprobe = cfg.nprobe;
  if (auto* h = dynamic_cast<faiss::IndexHNSW*>(index.get())) h->hnsw.efSearch = int(cfg.ef);
  return index;
}

// Loads the data into the daemon through the wire; false, having said why, on failure.
bool Load(const Config& cfg, const std::string& factory, const testing::Dataset& data,
          const std::string& address) {
  auto loader = net::Client::Connect(address);
  if (!loader.ok()) return std::fprintf(stderr, "%s\n", loader.status().ToString().c_str()), false;
  engine::CollectionConfig cc;
  cc.name = "bench";
  cc.dim = uint32_t(cfg.dim);
  cc.index = factory;
  cc.train_size = cfg.n;  // train on every row, as the in-process FAISS does
  if (auto s = (*loader)->CreateCollection(cc); !s.ok())
    return std::fprintf(stderr, "%s\n", s.status().ToString().c_str()), false;
  for (size_t at = 0; at < cfg.n; at += 10000) {
    size_t m = std::min<size_t>(10000, cfg.n - at);
    auto ids = testing::Iota(m, at);
    auto s = (*loader)->Upsert("bench", ids, std::span(data.base).subspan(at * cfg.dim, m * cfg.dim));
    if (!s.ok()) return std::fprintf(stderr, "%s\n", s.status().ToString().c_str()), false;
  }
  return true;
}

// One round of (a) over the network: every client sends its share of the
// queries one by one, round and round, until the round has lasted
// --min-round-ms; each client stops at its first reply after that. The
// clients then stop together, within one query each, and the QPS is that of
// --clients clients at work: with whole passes, clients whose share searches
// faster would stop earlier, and the round's tail would run with fewer
// clients. Returns the QPS, or 0 when a search failed.
double NetRound(const Config& cfg, const testing::Dataset& data, const std::string& address,
                const std::vector<int>& client_cpus) {
  const size_t d = cfg.dim;
  const net::SearchOptions opts{.k = cfg.k, .nprobe = cfg.nprobe, .ef = cfg.ef};
  std::atomic<size_t> failed{0};
  std::vector<std::unique_ptr<net::Client>> clients;
  for (size_t t = 0; t < cfg.clients; ++t) {
    auto c = net::Client::Connect(address);
    if (!c.ok()) return 0;
    clients.push_back(std::move(*c));
  }
  auto t0 = Clock::now();
  std::atomic<size_t> done{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < cfg.clients; ++t) {
    threads.emplace_back([&, t] {
      if (!client_cpus.empty() && !PinThisThread(client_cpus).ok()) failed++;
      const auto deadline = t0 + std::chrono::microseconds(int64_t(cfg.min_round_ms * 1e3));
      for (size_t q = t % cfg.queries; Clock::now() < deadline; q += cfg.clients) {
        if (q >= cfg.queries) q = t % cfg.queries;
        if (!clients[t]->Search("bench", std::span(data.queries).subspan(q * d, d), opts).ok())
          failed++;
        done++;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double qps = double(done) / (Micros(Clock::now() - t0) / 1e6);
  return failed ? 0 : qps;
}

// Builds FAISS here and the same index in a fresh mnemod, then measures them
// in alternation: --rounds rounds of (a), and (b) query by query, so that
// drift on a noisy machine hits both sides alike. Medians are reported.
bool Measure(const Config& cfg, const std::string& factory, const testing::Dataset& data,
             const std::vector<int>& server_cpus, const std::vector<int>& client_cpus, Row* row) {
  const size_t d = cfg.dim;
  auto index = BuildFaiss(cfg, factory, data);
  std::unique_ptr<faiss::Index> huge(faiss::clone_index(index.get()));
  AdviseHugePages(*huge);
  testing::TempDir dir;
  testing::DaemonProcess daemon(dir.path() + "/data", cfg.mnemod_flags);
  if (!Load(cfg, factory, data, daemon.address())) return false;

  std::vector<float> dist(cfg.queries * cfg.k);
  std::vector<faiss::Index::idx_t> labels(cfg.queries * cfg.k);
  std::vector<double> faiss_all, faiss_32, net, faiss_huge;
  const auto before = SumAndCount(daemon.http_address(), kBatchQueries);
  double net_seconds = 0;
  std::map<std::string, double> states;
  std::map<std::string, double> cpu;
  const auto served_before = SumAndCount(daemon.http_address(), kRequestSeconds, kSearchLabel);
  const auto queued_before = SumAndCount(daemon.http_address(), kQueueSeconds);
  // Whole passes over the queries until a round lasts --min-round-ms.
  auto timed = [&](auto&& pass) {
    const auto t0 = Clock::now();
    size_t passes = 0;
    do {
      pass();
      passes++;
    } while (Micros(Clock::now() - t0) < cfg.min_round_ms * 1e3);
    return double(passes * cfg.queries) / (Micros(Clock::now() - t0) / 1e6);
  };
  // All the queries as one batch.
  auto one_batch = [&](const faiss::Index& searched) {
    return timed([&] {
      searched.search(faiss::Index::idx_t(cfg.queries), data.queries.data(), cfg.k, dist.data(),
                      labels.data());
    });
  };
  for (int r = 0; r < cfg.rounds; ++r) {
    faiss_huge.push_back(one_batch(*huge));
    faiss_all.push_back(one_batch(*index));
    faiss_32.push_back(timed([&] {
      for (size_t at = 0; at < cfg.queries; at += cfg.clients) {
        size_t m = std::min(cfg.clients, cfg.queries - at);
        index->search(faiss::Index::idx_t(m), &data.queries[at * d], cfg.k, dist.data(),
                      labels.data());
      }
    }));
    const auto cpu_before = ThreadCpu(daemon.pid());
    const auto states_before = CpuStates(server_cpus);
    const auto t0 = Clock::now();
    net.push_back(NetRound(cfg, data, daemon.address(), client_cpus));
    net_seconds += Micros(Clock::now() - t0) / 1e6;
    for (const auto& [state, seconds] : CpuStates(server_cpus)) {
      states[state] += seconds - states_before.at(state);
    }
    for (const auto& [name, seconds] : ThreadCpu(daemon.pid())) {
      auto it = cpu_before.find(name);
      cpu[name] += seconds - (it == cpu_before.end() ? 0 : it->second);
    }
    if (net.back() == 0) return std::fprintf(stderr, "searches over the network failed\n"), false;
  }
  const auto after = SumAndCount(daemon.http_address(), kBatchQueries);
  row->faiss_qps = P50(faiss_all);
  row->faiss_32_qps = P50(faiss_32);
  row->net_qps = P50(net);
  for (size_t r = 0; r < net.size(); ++r) row->round_a.push_back(net[r] / faiss_all[r]);
  std::sort(row->round_a.begin(), row->round_a.end());
  row->faiss_huge_qps = P50(faiss_huge);
  for (size_t r = 0; r < net.size(); ++r) row->round_a_huge.push_back(net[r] / faiss_huge[r]);
  row->batch = MeanBetween(before, after);
  for (const auto& [name, seconds] : cpu) row->cores[name] = seconds / net_seconds;
  for (const auto& [state, seconds] : states) row->server_cpu_states[state] = seconds / net_seconds;
  row->loaded_queue_us =
      1e6 * MeanBetween(queued_before, SumAndCount(daemon.http_address(), kQueueSeconds));
  row->loaded_server_us =
      1e6 * MeanBetween(served_before, SumAndCount(daemon.http_address(), kRequestSeconds, kSearchLabel));

  // (b): single queries, one at a time, alternating query by query between
  // in-process on this thread and over the network from a client thread (a
  // sleeping and a polling client, in turns first), so that the machine's
  // drift hits every side alike. The network side asks a query from the
  // other half of the set, so that it does not find the lists the
  // in-process search just read in the caches.
  std::vector<double> faiss_us, net_us, polled_us;
  auto client = net::Client::Connect(daemon.address());
  auto polling = net::Client::Connect(daemon.address(), "", kClientBusyPoll);
  if (!client.ok() || !polling.ok()) return std::fprintf(stderr, "cannot connect\n"), false;
  const net::SearchOptions opts{.k = cfg.k, .nprobe = cfg.nprobe, .ef = cfg.ef};
  const size_t singles = std::min<size_t>(cfg.queries, 1000);
  const auto server_before = SumAndCount(daemon.http_address(), kRequestSeconds, kSearchLabel);
  const auto call_before = SumAndCount(daemon.http_address(), kCallSeconds);
  std::atomic<bool> ok{true};
  std::atomic<size_t> due{0};  // the network side's next step is due-1; 0: none yet
  std::atomic<size_t> finished{0};
  std::thread remote([&] {
    if (!client_cpus.empty() && !PinThisThread(client_cpus).ok()) ok = false;
    for (size_t i = 0; i < singles; ++i) {
      while (due.load() <= i) std::this_thread::yield();
      const size_t q = (i + singles / 2) % singles;
      std::pair<net::Client*, std::vector<double>*> sides[2] = {{client->get(), &net_us},
                                                                {polling->get(), &polled_us}};
      if (i % 2) std::swap(sides[0], sides[1]);
      for (auto [c, us] : sides) {
        auto s = Clock::now();
        if (!c->Search("bench", std::span(data.queries).subspan(q * d, d), opts).ok()) ok = false;
        us->push_back(Micros(Clock::now() - s));
      }
      finished = i + 1;
    }
  });
  for (size_t i = 0; i < singles; ++i) {
    auto s = Clock::now();
    index->search(1, &data.queries[i * d], cfg.k, dist.data(), labels.data());
    faiss_us.push_back(Micros(Clock::now() - s));
    due = i + 1;
    while (finished.load() <= i) std::this_thread::yield();
  }
  remote.join();
  if (!ok) return std::fprintf(stderr, "single-query searches failed\n"), false;
  row->faiss_p50 = P50(faiss_us);
  row->net_p50 = P50(net_us);
  row->polled_p50 = P50(polled_us);
  row->faiss_mean = std::accumulate(faiss_us.begin(), faiss_us.end(), 0.0) / double(faiss_us.size());
  row->call_mean = 1e6 * MeanBetween(call_before, SumAndCount(daemon.http_address(), kCallSeconds));
  row->server_us =
      1e6 * MeanBetween(server_before, SumAndCount(daemon.http_address(), kRequestSeconds, kSearchLabel));
  return daemon.Signal(SIGTERM) == 0 || (std::fprintf(stderr, "mnemod did not exit 0\n"), false);
}

int Run(Config cfg) {
  // Split the cores: the server (mnemod and in-process FAISS) and the clients.
  std::vector<int> all = AllowedCpus(), server_cpus = all, client_cpus;
  if (!cfg.shared) {
    if (!cfg.server_cpus.empty() || !cfg.client_cpus.empty()) {
      auto s = ParseCpuList(cfg.server_cpus), c = ParseCpuList(cfg.client_cpus);
      if (!s.ok() || !c.ok()) {
        std::fprintf(stderr, "give both --server-cpus and --client-cpus as lists like 0-3,6\n");
        return 2;
      }
      server_cpus = *s;
      client_cpus = *c;
    } else if (all.size() >= 2) {
      server_cpus.assign(all.begin(), all.begin() + all.size() / 2);
      client_cpus.assign(all.begin() + all.size() / 2, all.end());
    }
  }
  // This thread runs FAISS and spawns mnemod, which inherits the mask and
  // OMP_NUM_THREADS; the client threads move themselves to client_cpus.
  if (auto s = PinThisThread(server_cpus); !s.ok()) return std::fprintf(stderr, "%s\n", s.ToString().c_str()), 2;
  omp_set_num_threads(int(server_cpus.size()));
  setenv("OMP_NUM_THREADS", std::to_string(server_cpus.size()).c_str(), 1);
  setenv("OPENBLAS_NUM_THREADS", "1", 0);

  auto data = testing::MakeClustered(cfg.n, cfg.queries, uint32_t(cfg.dim), 1000, 11);
  std::printf("data: %zu x %zu, %zu queries, k=%u, %zu clients; server+FAISS on CPUs %s, "
              "clients on %s\n",
              cfg.n, cfg.dim, cfg.queries, cfg.k, cfg.clients, CpuList(server_cpus).c_str(),
              client_cpus.empty() ? "the same CPUs (--shared)" : CpuList(client_cpus).c_str());
  std::printf("BLAS: %s (set OPENBLAS_CORETYPE where it names an older CPU than this one)\n",
              BlasKernel().c_str());
  std::printf("%-14s | %9s %9s %9s %6s %6s | %9s %9s %7s %7s | %5s\n", "index", "faiss_all",
              "faiss_32", "net_qps", "(a)", "(a)_32", "faiss_p50", "net_p50", "(b)_us", "in_srv",
              "batch");
  std::printf("  medians of --rounds alternating rounds; faiss_all: one batch of all queries;\n"
              "  faiss_32: batches of --clients queries (the most that many single-query clients offer);\n"
              "  (a) = net_qps / faiss_all, (a)_32 = net_qps / faiss_32; (b) = net_p50 - faiss_p50 (us);\n"
              "  in_srv: mean us a query of (b) (both clients) spent in mnemod, arrival to reply (the rest is the wire);\n"
              "  batch: queries per FAISS call mnemod made during (a)\n");
  std::stringstream list(cfg.indexes);
  for (std::string factory; std::getline(list, factory, ';');) {
    Row row;
    if (!Measure(cfg, factory, data, server_cpus, client_cpus, &row)) return 1;
    std::printf("%-14s | %9.0f %9.0f %9.0f %6.3f %6.3f | %9.1f %9.1f %7.1f %7.1f | %5.1f\n",
                factory.c_str(), row.faiss_qps, row.faiss_32_qps, row.net_qps,
                row.net_qps / row.faiss_qps, row.net_qps / row.faiss_32_qps, row.faiss_p50,
                row.net_p50, row.net_p50 - row.faiss_p50, row.server_us, row.batch);
    std::printf("  (a) round by round (net / faiss_all of rounds run back to back): median %.3f, min %.3f, max %.3f; sorted:",
                P50(row.round_a), row.round_a.front(), row.round_a.back());
    for (double r : row.round_a) std::printf(" %.3f", r);
    std::printf("\n");
    std::printf("  (a) against FAISS with the same arrays on huge pages as mnemod's (one batch, %.0f QPS): %.3f,"
                " round by round median %.3f\n",
                row.faiss_huge_qps, row.net_qps / row.faiss_huge_qps, P50(row.round_a_huge));
    std::printf("  (b) from a client that polls for its reply (busy_poll %lld us): net_p50 %.1f, (b) %.1f us\n",
                static_cast<long long>(kClientBusyPoll.count()), row.polled_p50,
                row.polled_p50 - row.faiss_p50);
    std::printf("  (b) the search itself, mean us per single query: in-process %.1f, in mnemod %.1f;"
                " the rest, net_p50 - mnemod's: %.1f us\n",
                row.faiss_mean, row.call_mean, row.net_p50 - row.call_mean);
    std::printf("  during (a): %.0f us per query in mnemod (%.0f queued), %.0f us per query and client in all;",
                row.loaded_server_us, row.loaded_queue_us, 1e6 * double(cfg.clients) / row.net_qps);
    std::printf(" mnemod's busy cores:");
    for (const auto& [name, cores] : row.cores) std::printf(" %s %.2f", name.c_str(), cores);
    std::printf("; the server CPUs' cores");
    for (const auto& [state, cores] : row.server_cpu_states) std::printf(" %s %.2f", state.c_str(), cores);
    std::printf("\n");
    // Rate per core apart from how many cores search: what the workers get
    // done beside what FAISS's own threads get done.
    if (auto it = row.cores.find("mnemo-work"); it != row.cores.end() && it->second > 0) {
      const double worker = row.net_qps / it->second;
      const double faiss_thread = row.faiss_qps / double(server_cpus.size());
      std::printf("  during (a): QPS per busy worker core %.0f, in-process QPS per core %.0f (ratio %.3f)\n",
                  worker, faiss_thread, worker / faiss_thread);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"mnemod's network path vs in-process FAISS"};
  app.add_option("--n", cfg.n, "base vectors");
  app.add_option("--dim", cfg.dim, "dimension");
  app.add_option("--queries", cfg.queries, "queries");
  app.add_option("--clients", cfg.clients, "concurrent clients for (a)");
  app.add_option("--index", cfg.indexes, "';'-separated FAISS factory strings");
  app.add_option("--nprobe", cfg.nprobe, "IVF lists probed");
  app.add_option("--ef", cfg.ef, "HNSW efSearch");
  app.add_option("--min-round-ms", cfg.min_round_ms,
                 "repeat passes over the queries until a round lasts this long")->capture_default_str();
  app.add_option("--server-cpus", cfg.server_cpus, "CPUs for mnemod and in-process FAISS");
  app.add_option("--client-cpus", cfg.client_cpus, "CPUs for the client threads");
  app.add_option("--rounds", cfg.rounds, "alternating rounds of (a); medians are printed");
  app.add_flag("--shared", cfg.shared, "server and clients share every CPU");
  app.add_option("--mnemod-flags", cfg.mnemod_flags, "extra mnemod flags");
  CLI11_PARSE(app, argc, argv);
  return Run(cfg);
}

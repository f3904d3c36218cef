// The daemon's network path against FAISS used in-process, on the same data
// and index, measured side by side in one run:
//   (a) QPS of --clients concurrent clients each sending single queries over
//       loopback, divided by FAISS's QPS searching all queries as one batch;
//   (b) one client's p50 single-query latency over loopback minus FAISS's p50
//       single-query time in-process.
// The server is mnemo's own (net/server.h) on 127.0.0.1, in this process.
//
// Usage: net_vs_faiss [--n 100000] [--dim 128] [--queries 2000] [--clients 32]
//        [--index "Flat;IVF1024,Flat;HNSW32"] [--nprobe 16] [--ef 64]
#include <CLI/CLI.hpp>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <thread>

#include "engine/engine.h"
#include "net/client.h"
#include "net/metrics.h"
#include "net/server.h"
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
};

int Run(const Config& cfg) {
  auto data = testing::MakeClustered(cfg.n, cfg.queries, uint32_t(cfg.dim), 1000, 11);
  const size_t d = cfg.dim;
  std::printf("data: %zu x %zu, %zu queries, k=%u, %zu clients, %u cores\n", cfg.n, d,
              cfg.queries, cfg.k, cfg.clients, std::thread::hardware_concurrency());
  std::printf("%-14s | %9s %9s %9s %6s %6s | %9s %9s %7s | %5s\n", "index", "faiss_all",
              "faiss_32", "net_qps", "(a)", "(a)_32", "faiss_p50", "net_p50", "(b)_us", "batch");
  std::printf("  faiss_all: one batch of all queries; faiss_32: batches of --clients queries;\n"
              "  (a) = net_qps / faiss_all, (a)_32 = net_qps / faiss_32; (b) = net_p50 - faiss_p50 (us);\n"
              "  batch: queries per FAISS call the server made during (a)\n");
  std::stringstream list(cfg.indexes);
  for (std::string factory; std::getline(list, factory, ';');) {
    testing::TempDir dir;
    auto eng = std::move(engine::Engine::Open(testing::OptionsFor(dir.path()))).value();
    engine::CollectionConfig cc;
    cc.name = "bench";
    cc.dim = uint32_t(d);
    cc.index = factory;
    cc.train_size = cfg.n;
    auto c = std::move(eng->CreateCollection(cc)).value();
    for (size_t at = 0; at < cfg.n; at += 50000) {
      size_t m = std::min<size_t>(50000, cfg.n - at);
      auto ids = testing::Iota(m, at);
      if (!c->Upsert({ids, std::span(data.base).subspan(at * d, m * d)}).ok()) return 1;
    }
    std::unique_ptr<faiss::Index> direct(faiss::index_factory(int(d), factory.c_str()));
    if (!direct->is_trained) direct->train(faiss::Index::idx_t(cfg.n), data.base.data());
    direct->add(faiss::Index::idx_t(cfg.n), data.base.data());
    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(direct.get())) ivf->nprobe = cfg.nprobe;
    if (auto* h = dynamic_cast<faiss::IndexHNSW*>(direct.get())) h->hnsw.efSearch = int(cfg.ef);

    std::vector<float> dist(cfg.queries * cfg.k);
    std::vector<faiss::Index::idx_t> labels(cfg.queries * cfg.k);
    // (b) in-process first, before any server thread exists.
    const size_t single = std::min<size_t>(cfg.queries, 1000);
    std::vector<double> faiss_us, net_us;
    for (size_t q = 0; q < single; ++q) {
      auto s = Clock::now();
      direct->search(1, &data.queries[q * d], cfg.k, dist.data(), labels.data());
      faiss_us.push_back(Micros(Clock::now() - s));
    }
    // (a) FAISS: all queries as one batch, and in batches of `clients`
    // queries, the most that many single-query clients can offer at once.
    double faiss_batch_s = 1e9, faiss_clients_s = 1e9;
    for (int r = 0; r < 3; ++r) {
      auto t0 = Clock::now();
      direct->search(faiss::Index::idx_t(cfg.queries), data.queries.data(), cfg.k, dist.data(),
                     labels.data());
      faiss_batch_s = std::min(faiss_batch_s, Micros(Clock::now() - t0) / 1e6);
      t0 = Clock::now();
      for (size_t at = 0; at < cfg.queries; at += cfg.clients) {
        size_t m = std::min(cfg.clients, cfg.queries - at);
        direct->search(faiss::Index::idx_t(m), &data.queries[at * d], cfg.k, dist.data(),
                       labels.data());
      }
      faiss_clients_s = std::min(faiss_clients_s, Micros(Clock::now() - t0) / 1e6);
    }

    net::Metrics metrics;
    net::ServerOptions so;
    so.listen = "127.0.0.1:0";
    net::Server server(eng.get(), &metrics, so);
    if (!server.Start().ok()) return 1;

    auto batch_stats = [&] {
      std::string text = metrics.Render(*eng);
      auto value = [&](const std::string& name) {
        auto at = text.find("\n" + name + " ");
        return at == std::string::npos ? 0.0 : std::stod(text.substr(at + name.size() + 2));
      };
      return std::pair{value("mnemo_search_batch_queries_sum"),
                       value("mnemo_search_batch_queries_count")};
    };
    const auto before = batch_stats();
    // (a) the network: each client sends its share of the queries, one by one.
    std::atomic<size_t> failed{0};
    auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (size_t t = 0; t < cfg.clients; ++t) {
      threads.emplace_back([&, t] {
        auto client = net::Client::Connect(server.address());
        if (!client.ok()) { failed++; return; }
        for (size_t q = t; q < cfg.queries; q += cfg.clients) {
          auto r = (*client)->Search("bench", std::span(data.queries).subspan(q * d, d),
                                     {.k = cfg.k, .nprobe = cfg.nprobe, .ef = cfg.ef});
          if (!r.ok()) failed++;
        }
      });
    }
    for (auto& t : threads) t.join();
    const double net_s = Micros(Clock::now() - t0) / 1e6;
    const auto after = batch_stats();
    // Average queries per FAISS call during (a).
    const double batch = (after.first - before.first) / std::max(1.0, after.second - before.second);
    if (failed) {
      std::fprintf(stderr, "%zu searches failed\n", failed.load());
      return 1;
    }
    // (b) one client over loopback, one query at a time.
    auto client = std::move(net::Client::Connect(server.address())).value();
    for (size_t q = 0; q < single; ++q) {
      auto s = Clock::now();
      auto r = client->Search("bench", std::span(data.queries).subspan(q * d, d),
                              {.k = cfg.k, .nprobe = cfg.nprobe, .ef = cfg.ef});
      net_us.push_back(Micros(Clock::now() - s));
      if (!r.ok()) return 1;
    }
    const double fq = double(cfg.queries) / faiss_batch_s, nq = double(cfg.queries) / net_s;
    const double fcq = double(cfg.queries) / faiss_clients_s;
    const double fp = P50(faiss_us), np50 = P50(net_us);
    std::printf("%-14s | %9.0f %9.0f %9.0f %6.3f %6.3f | %9.1f %9.1f %7.1f | %5.1f\n",
                factory.c_str(), fq, fcq, nq, nq / fq, nq / fcq, fp, np50, np50 - fp, batch);
    std::fflush(stdout);
    server.Stop();
    server.Wait();
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
  CLI11_PARSE(app, argc, argv);
  return Run(cfg);
}

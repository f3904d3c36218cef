// Engine against FAISS used directly, on the same generated data and factory
// string, measured side by side in one run (this machine's absolute speed
// drifts; the ratios are what to read).
//
//   build ratio  = FAISS (train + add) time / engine durable build time
//                  (create + upserts acknowledged in the write-ahead log,
//                  training included), both training on the same rows;
//   search ratio = engine QPS / FAISS QPS for the same batch of queries and
//                  search parameters (best of --repeats, interleaved).
//
// Usage: engine_vs_faiss [--n 100000] [--dim 128] [--queries 1000]
//        [--index "Flat;IVF1024,Flat;IVF1024,PQ16;HNSW32"] [--batch 10000]
#include <CLI/CLI.hpp>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_factory.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "engine/engine.h"
#include "tests/test_util.h"

using namespace mnemo;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

struct Config {
  size_t n = 100000, dim = 128, queries = 1000, batch = 10000, repeats = 5;
  uint32_t k = 10, nprobe = 16, ef = 64;
  std::string indexes = "Flat;IVF1024,Flat;IVF1024,PQ16;HNSW32";
};

int Run(const Config& cfg) {
  auto data = testing::MakeClustered(cfg.n, cfg.queries, uint32_t(cfg.dim), 1000, 7);
  auto truth = testing::BruteForce(data, cfg.k);
  std::printf("data: %zu x %zu clustered, %zu queries, k=%u, nprobe=%u, ef=%u, batch=%zu\n",
              cfg.n, cfg.dim, cfg.queries, cfg.k, cfg.nprobe, cfg.ef, cfg.batch);
  std::printf("%-14s %9s %9s %7s | %10s %10s %7s | %7s %7s\n", "index", "faiss_s", "engine_s",
              "build", "faiss_qps", "engine_qps", "search", "r@10_f", "r@10_e");
  std::stringstream list(cfg.indexes);
  for (std::string factory; std::getline(list, factory, ';');) {
    testing::TempDir dir;
    engine::EngineOptions options = testing::OptionsFor(dir.path());
    auto eng = std::move(engine::Engine::Open(options)).value();
    engine::CollectionConfig cc;
    cc.name = "bench";
    cc.dim = uint32_t(cfg.dim);
    cc.index = factory;

    // Both train on the same leading rows: as many as the engine gathers.
    std::unique_ptr<faiss::Index> direct(faiss::index_factory(int(cfg.dim), factory.c_str()));
    size_t train_rows = 0;
    if (!direct->is_trained) {
      auto probe = std::move(index::VectorIndex::Create({uint32_t(cfg.dim), index::Metric::kL2,
                                                         factory})).value();
      train_rows = std::min(cfg.n, (probe->min_training_vectors() + cfg.batch - 1) /
                                       cfg.batch * cfg.batch);
      cc.train_size = train_rows;
    }

    auto t0 = Clock::now();
    if (train_rows) direct->train(faiss::Index::idx_t(train_rows), data.base.data());
    direct->add(faiss::Index::idx_t(cfg.n), data.base.data());
    const double faiss_build = Seconds(t0);

    t0 = Clock::now();
    auto c = std::move(eng->CreateCollection(cc)).value();
    for (size_t at = 0; at < cfg.n; at += cfg.batch) {
      size_t m = std::min(cfg.batch, cfg.n - at);
      auto ids = testing::Iota(m, at);
      Status st = c->Upsert({ids, std::span(data.base).subspan(at * cfg.dim, m * cfg.dim)});
      if (!st.ok()) {
        std::fprintf(stderr, "upsert failed: %s\n", st.ToString().c_str());
        return 1;
      }
    }
    const double engine_build = Seconds(t0);

    if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(direct.get())) ivf->nprobe = cfg.nprobe;
    if (auto* h = dynamic_cast<faiss::IndexHNSW*>(direct.get())) h->hnsw.efSearch = int(cfg.ef);
    std::vector<float> dist(cfg.queries * cfg.k);
    std::vector<faiss::Index::idx_t> labels(cfg.queries * cfg.k);
    std::vector<int64_t> engine_ids;
    double best_faiss = 1e9, best_engine = 1e9;
    for (size_t r = 0; r < cfg.repeats; ++r) {
      t0 = Clock::now();
      direct->search(faiss::Index::idx_t(cfg.queries), data.queries.data(), cfg.k, dist.data(),
                     labels.data());
      best_faiss = std::min(best_faiss, Seconds(t0));
      t0 = Clock::now();
      auto res = c->Search({.queries = data.queries, .k = cfg.k, .nprobe = cfg.nprobe,
                            .ef = cfg.ef});
      best_engine = std::min(best_engine, Seconds(t0));
      if (!res.ok()) {
        std::fprintf(stderr, "search failed: %s\n", res.status().ToString().c_str());
        return 1;
      }
      engine_ids = std::move(res->ids);
    }
    double recall_f = testing::RecallAtK(std::vector<int64_t>(labels.begin(), labels.end()),
                                         truth, cfg.queries, cfg.k);
    double recall_e = testing::RecallAtK(engine_ids, truth, cfg.queries, cfg.k);
    std::printf("%-14s %9.3f %9.3f %7.3f | %10.0f %10.0f %7.3f | %7.4f %7.4f\n",
                factory.c_str(), faiss_build, engine_build, faiss_build / engine_build,
                double(cfg.queries) / best_faiss, double(cfg.queries) / best_engine,
                best_faiss / best_engine, recall_f, recall_e);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"mnemo engine vs FAISS: build and search ratios on the same data"};
  app.add_option("--n", cfg.n, "base vectors");
  app.add_option("--dim", cfg.dim, "dimension");
  app.add_option("--queries", cfg.queries, "queries per search batch");
  app.add_option("--batch", cfg.batch, "entries per engine upsert");
  app.add_option("--repeats", cfg.repeats, "search repetitions (best is kept)");
  app.add_option("--index", cfg.indexes, "';'-separated FAISS factory strings");
  app.add_option("--nprobe", cfg.nprobe, "IVF lists probed");
  app.add_option("--ef", cfg.ef, "HNSW efSearch");
  CLI11_PARSE(app, argc, argv);
  return Run(cfg);
}

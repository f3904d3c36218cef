// One HNSW query per call, the way a server searches single queries as they
// arrive: FAISS's IndexHNSW::search against mnemo's VectorIndex (which runs
// such calls through HnswSearchHere, index/hnsw_search.h), on the same graph,
// one thread, interleaved rounds, for several index sizes. FAISS gives every
// call a fresh visited table of one byte per vector, so its per-call cost
// grows with the index; the ratio shows what that costs at each size.
//
// Usage: hnsw_lone_query [--sizes 100000,1000000] [--dim 16] [--m 8]
//        [--ef 32] [--queries 2000] [--rounds 5]
#include <CLI/CLI.hpp>
#include <faiss/IndexHNSW.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <sstream>

#include "index/vector_index.h"

using namespace mnemo;
using Clock = std::chrono::steady_clock;

namespace {

struct Config {
  std::string sizes = "100000,1000000";
  size_t dim = 16, queries = 2000;
  int m = 8, ef = 32, rounds = 5;
  uint32_t k = 10;
};

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

int Run(const Config& cfg) {
  std::printf("HNSW%d, dim %zu, ef %d, k %u: microseconds per single-query call on one thread,\n"
              "medians of %d interleaved rounds of %zu queries\n",
              cfg.m, cfg.dim, cfg.ef, cfg.k, cfg.rounds, cfg.queries);
  std::printf("%10s | %10s %10s | %6s\n", "vectors", "faiss_us", "mnemo_us", "faiss/mnemo");
  std::stringstream list(cfg.sizes);
  for (std::string item; std::getline(list, item, ',');) {
    const size_t n = std::stoul(item), d = cfg.dim;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    std::vector<float> base(n * d), queries(cfg.queries * d);
    for (auto& v : base) v = normal(rng);
    for (auto& v : queries) v = normal(rng);
    faiss::IndexHNSWFlat faiss_index(int(d), cfg.m);
    faiss_index.add(faiss::Index::idx_t(n), base.data());
    faiss_index.hnsw.efSearch = cfg.ef;
    // The same graph in mnemo's index.
    faiss::VectorIOWriter writer;
    faiss::write_index(&faiss_index, &writer);
    auto mnemo_index = index::VectorIndex::Deserialize(
        {uint32_t(d), index::Metric::kL2, "HNSW" + std::to_string(cfg.m)},
        std::string_view(reinterpret_cast<const char*>(writer.data.data()), writer.data.size()));
    if (!mnemo_index.ok()) return std::fprintf(stderr, "%s\n", mnemo_index.status().ToString().c_str()), 1;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    index::SearchParams p;
    p.k = cfg.k;
    p.ef = uint32_t(cfg.ef);
    p.threads = 1;
    std::vector<float> dist(cfg.k), dist2(cfg.k);
    std::vector<faiss::Index::idx_t> labels(cfg.k);
    std::vector<int64_t> slots(cfg.k);
    std::vector<double> faiss_us, mnemo_us;
    size_t differ = 0;
    for (int r = 0; r < cfg.rounds; ++r) {
      auto t0 = Clock::now();
      for (size_t q = 0; q < cfg.queries; ++q)
        faiss_index.search(1, &queries[q * d], cfg.k, dist.data(), labels.data());
      auto t1 = Clock::now();
      for (size_t q = 0; q < cfg.queries; ++q)
        if (!(*mnemo_index)->Search(1, &queries[q * d], p, dist2.data(), slots.data()).ok()) differ++;
      auto t2 = Clock::now();
      faiss_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / double(cfg.queries));
      mnemo_us.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count() / double(cfg.queries));
      // The last query of the round, both ways: the same answer.
      if (!std::equal(labels.begin(), labels.end(), slots.begin())) differ++;
    }
    omp_set_num_threads(saved);
    const double f = Median(faiss_us), m = Median(mnemo_us);
    std::printf("%10zu | %10.1f %10.1f | %6.2f%s\n", n, f, m, f / m,
                differ ? "  (ANSWERS DIFFER)" : "");
    std::fflush(stdout);
    if (differ) return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"HNSW single-query calls: FAISS's search against mnemo's"};
  app.add_option("--sizes", cfg.sizes, "','-separated index sizes")->capture_default_str();
  app.add_option("--dim", cfg.dim, "dimension")->capture_default_str();
  app.add_option("--m", cfg.m, "HNSW neighbours per node")->capture_default_str();
  app.add_option("--ef", cfg.ef, "efSearch")->capture_default_str();
  app.add_option("--queries", cfg.queries, "queries per round")->capture_default_str();
  app.add_option("--rounds", cfg.rounds, "interleaved rounds; medians are printed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return Run(cfg);
}

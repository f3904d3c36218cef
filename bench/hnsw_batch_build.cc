// HNSW graphs added in batches (what an import or a stream of upserts does)
// against one add of every row (FAISS's one-shot build), by efConstruction:
// recall@10 at several efSearch and the build time, on clustered data, all
// in one run. mnemo's VectorIndex builds its graphs with
// index::kDefaultEfConstruction unless a collection says otherwise; this is
// the measurement behind that default.
//
// Usage: hnsw_batch_build [--n 100000] [--dim 128] [--m 32] [--batch 10000]
//        [--efc 40,64,128] [--ef 64,128] [--queries 500]
#include <CLI/CLI.hpp>
#include <faiss/IndexHNSW.h>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <sstream>

#include "index/vector_index.h"
#include "tests/test_util.h"

using namespace mnemo;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<int> Ints(const std::string& list) {
  std::vector<int> out;
  std::stringstream in(list);
  for (std::string item; std::getline(in, item, ',');) out.push_back(std::stoi(item));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"HNSW built in batches against one-shot, by efConstruction"};
  size_t n = 100000, queries = 500, batch = 10000;
  uint32_t dim = 128;
  int m = 32;
  std::string efcs = "40,64,128", efs = "64,128";
  app.add_option("--n", n);
  app.add_option("--dim", dim);
  app.add_option("--m", m);
  app.add_option("--batch", batch);
  app.add_option("--efc", efcs);
  app.add_option("--ef", efs);
  app.add_option("--queries", queries);
  CLI11_PARSE(app, argc, argv);
  const uint32_t k = 10;
  auto data = testing::MakeClustered(n, queries, dim, 100, 1);
  auto truth = testing::BruteForce(data, k);
  std::printf("HNSW%d, %zu x %u clustered, %zu queries, %d OpenMP threads\n", m, n, dim, queries,
              omp_get_max_threads());
  std::printf("%5s %8s %8s | %s\n", "efC", "adds", "build_s", "recall@10 by efSearch");
  for (int efc : Ints(efcs)) {
    for (size_t step : {n, batch}) {
      index::IndexSpec spec{dim, index::Metric::kL2, "HNSW" + std::to_string(m), uint32_t(efc)};
      auto idx = index::VectorIndex::Create(spec);
      if (!idx.ok()) {
        std::fprintf(stderr, "%s\n", idx.status().ToString().c_str());
        return 1;
      }
      auto start = Clock::now();
      for (size_t at = 0; at < n; at += step) {
        size_t rows = std::min(step, n - at);
        auto st = (*idx)->Add(rows, &data.base[at * dim], nullptr, int64_t(at));
        if (!st.ok()) {
          std::fprintf(stderr, "%s\n", st.ToString().c_str());
          return 1;
        }
      }
      double secs = std::chrono::duration<double>(Clock::now() - start).count();
      std::printf("%5d %8zu %8.1f |", efc, (n + step - 1) / step, secs);
      for (int ef : Ints(efs)) {
        std::vector<float> d(queries * k);
        std::vector<int64_t> found(queries * k);
        index::SearchParams p;
        p.k = k;
        p.ef = uint32_t(ef);
        auto st = (*idx)->Search(queries, data.queries.data(), p, d.data(), found.data());
        if (!st.ok()) return 1;
        std::printf("  ef %d: %.3f", ef, testing::RecallAtK(found, truth, queries, k));
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  }
}

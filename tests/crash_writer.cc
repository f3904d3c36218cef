// Helper process for crash_test: opens the engine in argv[1], upserts
// batches of argv[4] entries into a collection with index argv[2], starting
// at batch argv[3], and prints each batch number once it is acknowledged.
// It runs until killed.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/engine.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: crash_writer DIR INDEX FIRST_BATCH BATCH_SIZE\n");
    return 2;
  }
  using namespace mnemo::engine;
  EngineOptions options;
  options.data_dir = argv[1];
  auto engine = Engine::Open(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "open: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  auto c = (*engine)->GetCollection("crash");
  if (!c.ok()) {
    CollectionConfig config;
    config.name = "crash";
    config.dim = 8;
    config.index = argv[2];
    config.train_size = 1000;  // trains after 5 batches: kills land on both sides
    c = (*engine)->CreateCollection(config);
    if (!c.ok()) {
      std::fprintf(stderr, "create: %s\n", c.status().ToString().c_str());
      return 1;
    }
  }
  const uint64_t batch_size = std::strtoull(argv[4], nullptr, 10);
  for (uint64_t b = std::strtoull(argv[3], nullptr, 10);; ++b) {
    std::vector<uint64_t> ids(batch_size);
    std::vector<float> v(batch_size * 8);
    for (uint64_t i = 0; i < batch_size; ++i) {
      ids[i] = b * batch_size + i;
      for (int j = 0; j < 8; ++j) v[i * 8 + j] = float((ids[i] * 7 + j * 13) % 101);
    }
    auto st = (*c)->Upsert({ids, v});
    if (!st.ok()) {
      std::fprintf(stderr, "upsert: %s\n", st.ToString().c_str());
      return 1;
    }
    std::printf("%llu\n", static_cast<unsigned long long>(b));
    std::fflush(stdout);
  }
}

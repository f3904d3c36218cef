// libFuzzer target: arbitrary bytes as one request frame, through the same
// RequestHandler the server uses, against a real engine in a temporary
// directory. Whatever the bytes, the handler must answer exactly once with a
// reply that verifies, and must not crash (ASan checks memory safety).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "net/metrics.h"
#include "net/protocol.h"
#include "net/request_handler.h"
#include "engine/search_batcher.h"

namespace {

struct World {
  std::string dir;
  std::unique_ptr<mnemo::engine::Engine> engine;
  mnemo::net::Metrics metrics;
  std::unique_ptr<mnemo::engine::SearchBatcher> batcher;
  std::unique_ptr<mnemo::net::RequestHandler> handler;

  World() {
    char tmpl[] = "/tmp/mnemo-fuzz-XXXXXX";
    dir = mkdtemp(tmpl);
    mnemo::engine::EngineOptions o;
    o.data_dir = dir;
    o.max_batch = 4096;  // keep single inputs cheap
    o.backup_root = dir;  // a fuzzed Backup must not write outside
    engine = std::move(mnemo::engine::Engine::Open(o)).value();
    // Collections the seed frames name, so that inputs reach the engine.
    for (auto [name, index] : {std::pair{"docs", "Flat"}, std::pair{"hnsw", "HNSW8"}}) {
      mnemo::engine::CollectionConfig c;
      c.name = name;
      c.dim = 4;
      c.index = index;
      (void)engine->CreateCollection(c);
    }
    (void)engine->CreateKvSpace({"kv", 2, 1, 4, "f16", 8, "int4:2", 1 << 16, 0});
    batcher = std::make_unique<mnemo::engine::SearchBatcher>(
        mnemo::engine::SearchBatcher::Options{}, mnemo::engine::SearchExecutor{}, &metrics);
    handler = std::make_unique<mnemo::net::RequestHandler>(engine.get(), batcher.get(), &metrics);
  }
  ~World() {
    handler.reset();
    engine.reset();
    std::filesystem::remove_all(dir);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* world = new World();  // lives for the whole run
  // The input as a frame's FlatBuffer; then once more with the same bytes as
  // its attachment too (PutKv reads KV layers from there).
  for (bool attach : {false, true}) {
    auto frame = std::make_shared<mnemo::net::InFrame>();
    frame->body.assign(data, data + size);
    if (attach) {
      frame->attachment = mnemo::net::Buffer::Acquire(size);
      if (size > 0) std::memcpy(frame->attachment.data(), data, size);
    }
    int replies = 0;
    world->handler->Handle(frame, [&](mnemo::net::Reply reply) {
      ++replies;
      auto v = mnemo::net::VerifyResponse(std::string_view(
          reinterpret_cast<const char*>(reply.body.data()), reply.body.size()));
      if (!v.ok()) std::abort();
    });
    if (replies != 1) std::abort();  // searches run inline when nothing else is batching
  }
  return 0;
}

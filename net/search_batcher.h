// SearchBatcher: gathers searches that arrive concurrently for the same
// collection and parameters into one FAISS call, so that many clients each
// sending one query get the throughput of a batched search.
//
// Batching is opportunistic: while a batch of a key runs, later arrivals
// queue, and when it finishes they run together as the next batch. A lone
// client therefore waits for nothing. With a window > 0 the first search of
// a batch also waits up to `window` for company (trading latency for larger
// batches); a batch never exceeds max_queries.
//
// Thread-safe. Submit runs the batch on the calling thread when no batch of
// its key is running; completions are called on whichever thread ran the
// batch, exactly once per Submit.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "engine/collection.h"
#include "net/metrics.h"

namespace mnemo::net {

class SearchBatcher {
 public:
  struct Options {
    std::chrono::microseconds window{0};
    size_t max_queries = 256;
  };
  using Done = std::function<void(Result<engine::SearchResult>)>;

  SearchBatcher(Options options, Metrics* metrics) : options_(options), metrics_(metrics) {}

  // `request.queries` must stay valid until `done` is called; request must
  // have passed collection->ValidateSearch.
  void Submit(std::shared_ptr<engine::Collection> collection, const engine::SearchRequest& request,
              Done done);

 private:
  struct Item {
    engine::SearchRequest request;
    Done done;
  };
  // Searches that may share one FAISS call.
  using Key = std::tuple<engine::Collection*, uint32_t, uint32_t, uint32_t, bool, uint64_t>;
  struct Queue {
    std::shared_ptr<engine::Collection> collection;
    std::vector<Item> items;
    bool running = false;
  };

  void RunLoop(const Key& key);
  void RunBatch(engine::Collection& collection, std::vector<Item>& batch);

  const Options options_;
  Metrics* const metrics_;
  std::mutex mu_;
  std::map<Key, Queue> queues_;  // guarded by mu_
};

}  // namespace mnemo::net

// SearchBatcher: gathers searches that arrive concurrently for the same
// collection and parameters into one FAISS call, so that many clients each
// sending one query get the throughput of a batched search.
//
// Batching is opportunistic: while a batch of a key runs, later arrivals
// queue, and when it finishes they run together as the next batch. Before a
// batch starts from idle it waits a window for company: `window_fraction` of
// the key's previous batch run time, at most `max_window` (with
// window_fraction 0, always max_window), or until as many searches wait as
// the previous batch had, whichever comes first. A flat search that costs
// 5 ms then waits up to 250 us for the other clients, which doubles its
// throughput under many clients; a lone client starts at once. A batch never
// exceeds max_queries.
//
// Where a batch starts: with `schedule` unset, Submit spins out the window
// and runs the batch on the calling thread. A server passes a `schedule`
// that posts to its I/O loop instead (a timer for the window), so that the
// batch starts only after every request that arrived in the same round of
// socket reads has joined it: one I/O thread then gathers batches with no
// other thread and no lock handoff.
//
// Thread-safe. Completions are called on whichever thread ran the batch,
// exactly once per Submit.
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
    std::chrono::microseconds max_window{1000};
    double window_fraction = 0.05;
    size_t max_queries = 256;
    // Runs a task after a delay (0: soon), elsewhere than the caller.
    std::function<void(std::chrono::microseconds, std::function<void()>)> schedule;
  };
  using Done = std::function<void(Result<engine::SearchResult>)>;

  SearchBatcher(Options options, Metrics* metrics)
      : options_(std::move(options)), metrics_(metrics) {}

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
    bool running = false;   // a batch runs, or one is about to start
    bool waiting = false;   // ...after the window, unless company comes first
    uint64_t wait_id = 0;   // which scheduled start may still run
  };
  struct LastRun {
    std::chrono::microseconds took{0};
    size_t searches = 1;
  };

  std::chrono::microseconds WindowLocked(const Key& key) const;
  size_t CompanyLocked(const Key& key) const;
  void StartAfterWindow(const Key& key, uint64_t wait_id);
  void SpinWindow(const Key& key, std::chrono::microseconds window);
  void RunLoop(const Key& key);
  void RunBatch(engine::Collection& collection, std::vector<Item>& batch);

  const Options options_;
  Metrics* const metrics_;
  std::mutex mu_;
  std::map<Key, Queue> queues_;  // guarded by mu_
  // The last batch's run time per key, for the window; a hint only (the
  // collection pointer in a key is never dereferenced). Guarded by mu_.
  std::map<Key, LastRun> last_run_;
  uint64_t next_wait_id_ = 0;  // guarded by mu_
};

}  // namespace mnemo::net

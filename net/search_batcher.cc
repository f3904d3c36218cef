#include "net/search_batcher.h"

#include <algorithm>
#include <thread>

namespace mnemo::net {

using Clock = std::chrono::steady_clock;

void SearchBatcher::Submit(std::shared_ptr<engine::Collection> collection,
                           const engine::SearchRequest& request, Done done) {
  Key key{collection.get(), request.k, request.nprobe, request.ef, request.group.has_value(),
          request.group.value_or(0)};
  std::chrono::microseconds window{0};
  uint64_t wait_id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Queue& q = queues_[key];
    if (!q.collection) q.collection = collection;
    q.items.push_back({request, std::move(done)});
    const bool enough = q.items.size() >= CompanyLocked(key);
    if (q.waiting) {
      if (!enough) return;
      q.waiting = false;  // company came before the window ended: start now
    } else if (q.running) {
      return;  // the running loop will take it
    } else {
      q.running = true;
      window = enough ? std::chrono::microseconds(0) : WindowLocked(key);
      if (window.count() > 0 && options_.schedule) {
        q.waiting = true;
        q.wait_id = wait_id = ++next_wait_id_;
      }
    }
  }
  if (!options_.schedule) {
    SpinWindow(key, window);
    RunLoop(key);
  } else if (wait_id != 0) {
    options_.schedule(window, [this, key, wait_id] { StartAfterWindow(key, wait_id); });
  } else {
    options_.schedule(std::chrono::microseconds(0), [this, key] { RunLoop(key); });
  }
}

void SearchBatcher::StartAfterWindow(const Key& key, uint64_t wait_id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = queues_.find(key);
    if (it == queues_.end() || !it->second.waiting || it->second.wait_id != wait_id) return;
    it->second.waiting = false;
  }
  RunLoop(key);
}

std::chrono::microseconds SearchBatcher::WindowLocked(const Key& key) const {
  if (options_.window_fraction <= 0) return options_.max_window;
  auto it = last_run_.find(key);
  if (it == last_run_.end()) return std::chrono::microseconds(0);
  auto scaled = std::chrono::microseconds(
      int64_t(double(it->second.took.count()) * options_.window_fraction));
  return std::min(scaled, options_.max_window);
}

size_t SearchBatcher::CompanyLocked(const Key& key) const {
  auto it = last_run_.find(key);
  return it == last_run_.end() ? 1 : std::min(it->second.searches, options_.max_queries);
}

void SearchBatcher::SpinWindow(const Key& key, std::chrono::microseconds window) {
  const auto deadline = Clock::now() + window;
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queues_[key].items.size() >= CompanyLocked(key)) return;
    }
    std::this_thread::yield();
  }
}

void SearchBatcher::RunLoop(const Key& key) {
  for (;;) {
    std::vector<Item> batch;
    std::shared_ptr<engine::Collection> collection;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = queues_.find(key);
      Queue& q = it->second;
      if (q.items.empty()) {
        queues_.erase(it);  // nothing waits: forget the key (and the collection)
        return;
      }
      size_t queries = 0, take = 0;
      const uint32_t dim = q.collection->dim();
      while (take < q.items.size() &&
             (take == 0 || queries + q.items[take].request.queries.size() / dim <=
                               options_.max_queries)) {
        queries += q.items[take].request.queries.size() / dim;
        ++take;
      }
      batch.assign(std::make_move_iterator(q.items.begin()),
                   std::make_move_iterator(q.items.begin() + take));
      q.items.erase(q.items.begin(), q.items.begin() + take);
      collection = q.collection;
    }
    const auto start = Clock::now();
    RunBatch(*collection, batch);
    const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
    std::lock_guard<std::mutex> lock(mu_);
    if (last_run_.size() > 4096) last_run_.clear();  // keys of dropped collections
    last_run_[key] = {took, batch.size()};
  }
}

void SearchBatcher::RunBatch(engine::Collection& collection, std::vector<Item>& batch) {
  const uint32_t dim = collection.dim();
  if (batch.size() == 1) {
    metrics_->RecordSearchBatch(batch[0].request.queries.size() / dim);
    batch[0].done(collection.Search(batch[0].request));
    return;
  }
  std::vector<float> queries;
  for (const Item& item : batch) {
    queries.insert(queries.end(), item.request.queries.begin(), item.request.queries.end());
  }
  engine::SearchRequest merged = batch[0].request;
  merged.queries = queries;
  metrics_->RecordSearchBatch(queries.size() / dim);
  auto result = collection.Search(merged);
  if (!result.ok()) {
    for (Item& item : batch) item.done(result.status());
    return;
  }
  const uint32_t k = result->k;
  size_t row = 0;
  for (Item& item : batch) {
    const size_t n = item.request.queries.size() / dim;
    engine::SearchResult part;
    part.n = n;
    part.k = k;
    part.distances.assign(result->distances.begin() + row * k,
                          result->distances.begin() + (row + n) * k);
    part.ids.assign(result->ids.begin() + row * k, result->ids.begin() + (row + n) * k);
    row += n;
    item.done(std::move(part));
  }
}

}  // namespace mnemo::net

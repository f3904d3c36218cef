#include "net/search_batcher.h"

#include <thread>

namespace mnemo::net {

void SearchBatcher::Submit(std::shared_ptr<engine::Collection> collection,
                           const engine::SearchRequest& request, Done done) {
  Key key{collection.get(), request.k, request.nprobe, request.ef, request.group.has_value(),
          request.group.value_or(0)};
  {
    std::lock_guard<std::mutex> lock(mu_);
    Queue& q = queues_[key];
    if (!q.collection) q.collection = collection;
    q.items.push_back({request, std::move(done)});
    if (q.running) return;  // the running loop will take it
    q.running = true;
  }
  RunLoop(key);
}

void SearchBatcher::RunLoop(const Key& key) {
  if (options_.window.count() > 0) {
    // Give concurrent searches a moment to join the first batch.
    auto deadline = std::chrono::steady_clock::now() + options_.window;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (queues_[key].items.size() >= options_.max_queries) break;
      }
      std::this_thread::yield();
    }
  }
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
    RunBatch(*collection, batch);
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

#include "engine/search_batcher.h"

#include <algorithm>
#include <thread>

namespace mnemo::engine {

namespace {
// Tells the submitting threads apart; shared by its searches, so that a
// thread started later never passes for one that has ended.
thread_local auto this_submitter = std::make_shared<SearchBatcher::Submitter>();
// A puller with none of its own searches waiting looks at the queues (under
// the lock) only to steal, and then at most every steal_after / 4: idle
// pullers, one per core, would otherwise take the lock a million times a
// second each while a search waits, and slow down those submitting and taking.
thread_local const SearchBatcher* steal_look_of = nullptr;
thread_local std::chrono::steady_clock::time_point next_steal_look;

SearchBatcher::Options Checked(SearchBatcher::Options o) {
  o.max_batches = std::max<size_t>(o.max_batches, 1);
  if (o.pull_ways == 0) o.pull_ways = o.max_batches;
  return o;
}
}  // namespace

SearchBatcher::Options SearchBatcher::Options::ForServer(size_t workers, bool pull_on_io,
                                                         std::chrono::microseconds busy_poll) const {
  Options o = *this;
  if (o.max_batches == 0) o.max_batches = pull_on_io ? 1 : workers;
  if (o.pull_ways == 0) o.pull_ways = workers;
  if (o.linger.count() == 0) o.linger = busy_poll;
  if (pull_on_io) o.pull = true;
  return o;
}

SearchBatcher::SearchBatcher(Options options, SearchExecutor executor, SearchListener* listener)
    : options_(Checked(std::move(options))), executor_(std::move(executor)), listener_(listener) {}

void SearchBatcher::Submit(std::shared_ptr<Collection> collection,
                           const SearchRequest& request, Done done) {
  Key key{collection.get(), request.k, request.nprobe, request.ef, request.group.has_value(),
          request.group.value_or(0)};
  std::chrono::microseconds window{0};
  uint64_t wait_id = 0;
  bool pulled, wake = false;
  {
    MutexLock lock(&mu_);
    Queue& q = queues_[key];
    if (!q.collection) {
      q.collection = collection;
      q.pulled = options_.pull && !collection->batching_saves_work();
    }
    pulled = q.pulled;
    q.items.push_back({request, std::move(done), Clock::now(), pulled ? this_submitter : nullptr});
    const bool enough = q.items.size() >= CompanyLocked(key);
    arrivals_.fetch_add(1, std::memory_order_release);
    if (pulled) {
      // Sequentially consistent, as the sleeper's count and its look at
      // this one: either it sees the search or this thread sees it asleep.
      this_submitter->waiting.fetch_add(1, std::memory_order_relaxed);
      const size_t waiting = pullable_.fetch_add(1) + 1;
      // A puller takes its own next; more, or a worker's, need another.
      wake = waiting > 1 || !this_submitter->pulls.load(std::memory_order_relaxed);
    } else if (q.waiting) {
      if (!enough) return;
      q.waiting = false;  // company came before the window ended: start now
    } else if (q.lingering > 0 || q.running >= options_.max_batches) {
      return;  // a running loop will take it
    } else {
      q.running++;
      starting_++;
      window = enough ? std::chrono::microseconds(0) : WindowLocked(key);
      if (window.count() > 0 && executor_.schedule) {
        q.waiting = true;
        q.wait_id = wait_id = ++next_wait_id_;
      }
    }
  }
  if (pulled) {
    if (wake && executor_.wake) executor_.wake();
    return;
  }
  if (!executor_.schedule) {
    SpinWindow(key, window);
    Launch(key);
  } else if (wait_id != 0) {
    executor_.schedule(window, [this, key, wait_id] { StartAfterWindow(key, wait_id); });
  } else {
    executor_.schedule(std::chrono::microseconds(0), [this, key] { Launch(key); });
  }
}

void SearchBatcher::StartAfterWindow(const Key& key, uint64_t wait_id) {
  {
    MutexLock lock(&mu_);
    auto it = queues_.find(key);
    if (it == queues_.end() || !it->second.waiting || it->second.wait_id != wait_id) return;
    it->second.waiting = false;
  }
  Launch(key);
}

bool SearchBatcher::RunPulled() {
  if (!this_submitter->pulls.load(std::memory_order_relaxed)) {
    this_submitter->pulls.store(true, std::memory_order_relaxed);
  }
  if (pullable() == 0) return false;
  const auto now = Clock::now();
  if (this_submitter->waiting.load(std::memory_order_relaxed) == 0 && steal_look_of == this &&
      now < next_steal_look) {
    return false;
  }
  Key key;
  std::vector<Item> batch;
  std::shared_ptr<Collection> collection;
  bool alone;
  {
    MutexLock lock(&mu_);
    auto it = ReadyLocked(now);
    if (it == queues_.end()) {
      steal_look_of = this;
      next_steal_look = now + options_.steal_after / 4;
      return false;
    }
    key = last_pulled_ = it->first;
    batch = TakePulledLocked(it->second, now);
    collection = it->second.collection;
    it->second.pulling++;
    alone = in_flight_++ == 0 && it->second.items.empty() && pullable() == 0;
  }
  const auto start = Clock::now();
  RunBatch(*collection, batch, alone ? 0 : options_.offload_threads);
  MutexLock lock(&mu_);
  RecordRunLocked(key, start, batch.size());
  in_flight_--;
  Queue& q = queues_.at(key);
  if (--q.pulling == 0 && q.running == 0 && q.items.empty()) queues_.erase(key);
  return true;
}

std::map<SearchBatcher::Key, SearchBatcher::Queue>::iterator SearchBatcher::ReadyLocked(
    Clock::time_point now) {
  // Keys in turn, starting after the last one taken: a busy key cannot
  // starve the others.
  auto start = queues_.upper_bound(last_pulled_);
  for (size_t i = 0; i < queues_.size(); ++i, ++start) {
    if (start == queues_.end()) start = queues_.begin();
    const Queue& q = start->second;
    if (!q.pulled) continue;
    for (const Item& item : q.items) {
      if (MayTake(item, now)) return start;
    }
  }
  return queues_.end();
}

bool SearchBatcher::MayTake(const Item& item, Clock::time_point now) const {
  // A worker's search (a large one, read whole on the pool) is anyone's.
  return item.origin == this_submitter || !item.origin->pulls.load(std::memory_order_relaxed) ||
         now - item.queued >= options_.steal_after;
}

std::vector<SearchBatcher::Item> SearchBatcher::TakePulledLocked(Queue& q, Clock::time_point now) {
  const size_t waiting = q.items.size();
  const size_t share = (waiting + options_.pull_ways - 1) / options_.pull_ways;
  std::vector<Item> batch;
  auto take = [&](auto&& wanted) {
    for (auto it = q.items.begin(); it != q.items.end() && batch.size() < share;) {
      if (!wanted(*it)) {
        ++it;
        continue;
      }
      it->origin->waiting.fetch_sub(1, std::memory_order_relaxed);
      batch.push_back(std::move(*it));
      it = q.items.erase(it);
    }
  };
  take([](const Item& item) { return item.origin == this_submitter; });
  if (batch.empty()) take([&](const Item& item) { return MayTake(item, now); });
  pullable_.fetch_sub(batch.size());
  return batch;
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
      MutexLock lock(&mu_);
      if (queues_[key].items.size() >= CompanyLocked(key)) return;
    }
    std::this_thread::yield();
  }
}

void SearchBatcher::Launch(const Key& key) {
  bool offload;
  {
    MutexLock lock(&mu_);
    starting_--;
    offload = executor_.offload && (in_flight_ > 0 || starting_ > 0);
    in_flight_++;
  }
  if (!offload) return RunLoop(key, 0);
  Offload(key);
}

void SearchBatcher::Offload(const Key& key) {
  executor_.offload([this, key] { RunLoop(key, options_.offload_threads); });
}

void SearchBatcher::RunLoop(const Key& key, uint32_t threads) {
  for (;;) {
    std::vector<Item> batch;
    std::shared_ptr<Collection> collection;
    size_t helpers = 0;
    {
      MutexLock lock(&mu_);
      Queue& q = queues_.at(key);
      // A loop on the I/O loop that finds other batches in flight moves to
      // the pool, so that its I/O thread goes back to reading.
      if (threads == 0 && executor_.offload && (in_flight_ > 1 || starting_ > 0) &&
          !q.items.empty()) {
        lock.unlock();
        Offload(key);
        return;
      }
      if (q.items.empty() && (threads == 0 || !LingerLocked(key))) {
        // This loop ends; the last one of the key forgets it (and the collection).
        if (--q.running == 0 && q.pulling == 0) queues_.erase(key);
        in_flight_--;
        return;
      }
      batch = TakeBatchLocked(key, &collection, &helpers);
      in_flight_ += helpers;
    }
    for (size_t i = 0; i < helpers; ++i) Offload(key);
    const auto start = Clock::now();
    RunBatch(*collection, batch, threads);
    MutexLock lock(&mu_);
    RecordRunLocked(key, start, batch.size());
  }
}

void SearchBatcher::RecordRunLocked(const Key& key, Clock::time_point start, size_t searches) {
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  if (last_run_.size() > 4096) last_run_.clear();  // keys of dropped collections
  last_run_[key] = {took, searches};
}

bool SearchBatcher::LingerLocked(const Key& key) {
  if (options_.linger.count() <= 0) return false;
  queues_.at(key).lingering++;
  const auto deadline = Clock::now() + options_.linger;
  for (;;) {
    const uint64_t seen = arrivals_.load(std::memory_order_acquire);
    mu_.unlock();  // the caller's MutexLock still owns it: taken back below
    // Poll without the lock until any search arrives (of any key), then look.
    while (arrivals_.load(std::memory_order_acquire) == seen && Clock::now() < deadline) {
      std::this_thread::yield();
    }
    mu_.lock();
    Queue& q = queues_.at(key);
    if (!q.items.empty() || Clock::now() >= deadline) {
      q.lingering--;
      return !q.items.empty();
    }
  }
}

std::vector<SearchBatcher::Item> SearchBatcher::TakeBatchLocked(
    const Key& key, std::shared_ptr<Collection>* collection, size_t* helpers) {
  auto it = queues_.find(key);
  Queue& q = it->second;
  *helpers = 0;
  // A loop takes its share of what waits, as if max_batches loops split it,
  // and starts helpers for the rest while loops are to spare: a backlog
  // spreads over the cores instead of running as one call on one thread.
  const size_t waiting = q.items.size();
  const size_t ways = executor_.offload ? std::min(waiting, options_.max_batches) : 1;
  const size_t share = (waiting + ways - 1) / ways;
  size_t queries = 0, take = 0;
  const uint32_t dim = q.collection->dim();
  while (take < share &&
         (take == 0 ||
          queries + q.items[take].request.queries.size() / dim <= options_.max_queries)) {
    queries += q.items[take].request.queries.size() / dim;
    ++take;
  }
  std::vector<Item> batch(std::make_move_iterator(q.items.begin()),
                          std::make_move_iterator(q.items.begin() + take));
  q.items.erase(q.items.begin(), q.items.begin() + take);
  if (!q.items.empty() && executor_.offload) {
    *helpers = std::min(options_.max_batches - q.running, (q.items.size() + share - 1) / share);
  }
  q.running += *helpers;
  *collection = q.collection;
  return batch;
}

Result<SearchResult> SearchBatcher::TimedSearch(Collection& collection,
                                                       const SearchRequest& request) {
  const auto start = Clock::now();
  auto result = collection.SearchValidated(request);
  if (listener_) listener_->OnSearchCall(std::chrono::duration<double>(Clock::now() - start).count());
  return result;
}

void SearchBatcher::RunBatch(Collection& collection, std::vector<Item>& batch,
                             uint32_t threads) {
  const uint32_t dim = collection.dim();
  const auto now = Clock::now();
  if (listener_) {
    for (const Item& item : batch) {
      listener_->OnSearchWait(std::chrono::duration<double>(now - item.queued).count());
    }
  }
  if (batch.size() == 1) {
    if (listener_) listener_->OnSearchBatch(batch[0].request.queries.size() / dim);
    batch[0].request.threads = threads;
    batch[0].done(TimedSearch(collection, batch[0].request));
    return;
  }
  std::vector<float> queries;
  for (const Item& item : batch) {
    queries.insert(queries.end(), item.request.queries.begin(), item.request.queries.end());
  }
  SearchRequest merged = batch[0].request;
  merged.queries = queries;
  merged.threads = threads;
  if (listener_) listener_->OnSearchBatch(queries.size() / dim);
  auto result = TimedSearch(collection, merged);
  if (!result.ok()) {
    for (Item& item : batch) item.done(result.status());
    return;
  }
  const uint32_t k = result->k;
  size_t row = 0;
  for (Item& item : batch) {
    const size_t n = item.request.queries.size() / dim;
    SearchResult part;
    part.n = n;
    part.k = k;
    part.distances.assign(result->distances.begin() + row * k,
                          result->distances.begin() + (row + n) * k);
    part.ids.assign(result->ids.begin() + row * k, result->ids.begin() + (row + n) * k);
    row += n;
    item.done(std::move(part));
  }
}

}  // namespace mnemo::engine

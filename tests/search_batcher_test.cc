// SearchBatcher with a manual scheduler: when batches start, what they
// gather, and that every search gets its own answer.
#include "engine/search_batcher.h"

#include <gtest/gtest.h>

#include <deque>
#include <future>
#include <thread>

#include "net/metrics.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::Iota;
using mnemo::testing::MakeClustered;
using mnemo::testing::TempDir;
using std::chrono::microseconds;

// Records scheduled tasks; the test decides when they run.
struct ManualScheduler {
  struct Task {
    microseconds delay;
    std::function<void()> run;
  };
  std::deque<Task> tasks;
  SearchExecutor With(SearchExecutor e = {}) {
    e.schedule = [this](microseconds delay, std::function<void()> run) {
      tasks.push_back({delay, std::move(run)});
    };
    return e;
  }
  void RunNext() {
    auto t = std::move(tasks.front());
    tasks.pop_front();
    t.run();
  }
};

// Records offloaded tasks, as ManualScheduler does scheduled ones.
struct ManualPool {
  std::deque<std::function<void()>> tasks;
  SearchExecutor With(SearchExecutor e = {}) {
    e.offload = [this](std::function<void()> run) { tasks.push_back(std::move(run)); };
    return e;
  }
  void RunAll() {
    while (!tasks.empty()) {
      auto t = std::move(tasks.front());
      tasks.pop_front();
      t();
    }
  }
};

class SearchBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = std::move(Engine::Open(mnemo::testing::OptionsFor(dir_.path()))).value();
    CollectionConfig cc;
    cc.name = "c";
    cc.dim = 8;
    collection_ = std::move(engine_->CreateCollection(cc)).value();
    ASSERT_TRUE(collection_->Upsert({Iota(data_.n()), data_.base}).ok());
  }

  // Query q of the data set, k = 3.
  SearchRequest RequestFor(size_t q) {
    SearchRequest r;
    r.queries = std::span(data_.queries).subspan(q * 8, 8);
    r.k = 3;
    return r;
  }

  // Submits query q; its answer lands in answers_[q], then `then` runs
  // (still inside the batch).
  void Submit(SearchBatcher& b, size_t q, std::function<void()> then = [] {}) {
    b.Submit(collection_, RequestFor(q), [this, q, then](Result<SearchResult> res) {
      ASSERT_TRUE(res.ok()) << res.status().ToString();
      answers_[q] = res->ids;
      then();
    });
  }

  // Query 0 runs alone; its completion (the batch still running) submits
  // queries 1..n, which the running loop then takes: the key's last batch
  // had n searches.
  void Prime(SearchBatcher& b, ManualScheduler& s, size_t n) {
    Submit(b, 0, [this, &b, n] {
      for (size_t q = 1; q <= n; ++q) Submit(b, q);
    });
    ASSERT_EQ(s.tasks.size(), 1u);
    s.RunNext();
  }

  std::vector<int64_t> Alone(size_t q) { return collection_->Search(RequestFor(q))->ids; }

  TempDir dir_;
  mnemo::testing::Dataset data_ = MakeClustered(2000, 64, 8, 10, 5);
  std::unique_ptr<Engine> engine_;
  std::shared_ptr<Collection> collection_;
  std::map<size_t, std::vector<int64_t>> answers_;
  net::Metrics metrics_;
};

TEST_F(SearchBatcherTest, SearchesThatArriveWhileABatchRunsShareTheNextCall) {
  ManualScheduler s;
  SearchBatcher b({}, s.With(), &metrics_);
  Prime(b, s, 10);  // q0 alone, then q1..q10 in one call
  EXPECT_TRUE(s.tasks.empty());  // one batch of a key at a time: the loop took them
  ASSERT_EQ(answers_.size(), 11u);
  for (size_t q = 0; q <= 10; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_count 2\n"), std::string::npos);
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_sum 11\n"), std::string::npos);
}

TEST_F(SearchBatcherTest, SearchesReadInOneRoundShareOneCallAndGetTheirOwnAnswers) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.window_fraction = 0;  // a fixed window: the timer is always scheduled
  SearchBatcher b(o, s.With(), &metrics_);
  Prime(b, s, 10);  // the last batch had 10: the next start waits for 10
  for (size_t q = 11; q < 21; ++q) Submit(b, q);
  ASSERT_EQ(s.tasks.size(), 2u);  // the window's timer, then the start when the 10th came
  EXPECT_GT(s.tasks[0].delay.count(), 0);
  EXPECT_EQ(s.tasks[1].delay.count(), 0);
  EXPECT_EQ(answers_.size(), 11u);  // nothing runs on the submitting thread
  s.RunNext();  // the stale timer starts nothing
  EXPECT_EQ(answers_.size(), 11u);
  s.RunNext();
  ASSERT_EQ(answers_.size(), 21u);
  for (size_t q = 11; q < 21; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_count 3\n"), std::string::npos);
}

TEST_F(SearchBatcherTest, BatchesNeverExceedMaxQueries) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.max_queries = 4;
  SearchBatcher b(o, s.With(), &metrics_);
  Prime(b, s, 9);  // q0 alone, then 4 + 4 + 1
  ASSERT_EQ(answers_.size(), 10u);
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_count 4\n"), std::string::npos);
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_sum 10\n"), std::string::npos);
}

TEST_F(SearchBatcherTest, NextBatchWaitsAWindowUntilAsManyAsLastTimeHaveCome) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.window_fraction = 1.0;  // wait as long as the last batch took...
  o.max_window = microseconds(5'000'000);  // ...up to 5 s: never reached here
  SearchBatcher b(o, s.With(), &metrics_);
  Prime(b, s, 3);  // a batch of 3
  ASSERT_EQ(answers_.size(), 4u);

  Submit(b, 4);  // alone: waits a window for company
  ASSERT_EQ(s.tasks.size(), 1u);
  EXPECT_GT(s.tasks[0].delay.count(), 0);
  Submit(b, 5);
  EXPECT_EQ(s.tasks.size(), 1u);  // still waiting
  Submit(b, 6);  // as many as last time: start now
  ASSERT_EQ(s.tasks.size(), 2u);
  EXPECT_EQ(s.tasks[1].delay.count(), 0);
  s.RunNext();  // the window's timer fires first: it must not start a batch
  EXPECT_EQ(answers_.size(), 4u);
  s.RunNext();
  ASSERT_EQ(answers_.size(), 7u);
  for (size_t q = 4; q < 7; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
}

TEST_F(SearchBatcherTest, WindowEndsTheWaitWhenCompanyDoesNotCome) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.window_fraction = 0;  // always the fixed window
  o.max_window = microseconds(300);
  SearchBatcher b(o, s.With(), &metrics_);
  Prime(b, s, 2);  // a batch of 2
  Submit(b, 3);  // waits 300 us for a second search that never comes
  ASSERT_EQ(s.tasks.size(), 1u);
  EXPECT_EQ(s.tasks[0].delay.count(), 300);
  EXPECT_EQ(answers_.size(), 3u);
  s.RunNext();
  ASSERT_EQ(answers_.size(), 4u);
  EXPECT_EQ(answers_[3], Alone(3));
}

TEST_F(SearchBatcherTest, WithoutASchedulerTheSubmitterRunsTheBatch) {
  SearchBatcher b({}, {}, &metrics_);
  Submit(b, 7);
  ASSERT_EQ(answers_.size(), 1u);
  EXPECT_EQ(answers_[7], Alone(7));
}

// A second I/O thread starts a batch of the same key while the first batch
// runs: it goes to the pool, and the first loop, on finding it in flight,
// hands what is left to the pool too.
TEST_F(SearchBatcherTest, ABatchThatStartsWhileAnotherRunsGoesToThePool) {
  ManualScheduler s;
  ManualPool pool;
  SearchBatcher::Options o;
  o.max_batches = 2;
  SearchBatcher b(o, pool.With(s.With()), &metrics_);
  Submit(b, 0, [&] {
    // Still inside the first batch: two more arrive, and a second start
    // runs (as another I/O thread would run it).
    Submit(b, 1);
    ASSERT_EQ(s.tasks.size(), 1u);  // a second start: max_batches is 2
    Submit(b, 2);
    EXPECT_EQ(s.tasks.size(), 1u);  // no third: the cap
    s.RunNext();
    EXPECT_EQ(pool.tasks.size(), 1u);  // it went to the pool, not this thread
  });
  ASSERT_EQ(s.tasks.size(), 1u);
  s.RunNext();  // the first batch runs on the "I/O thread": nothing else searches
  EXPECT_EQ(answers_.size(), 1u);  // the rest waits for the pool
  EXPECT_EQ(pool.tasks.size(), 2u);  // the first loop handed off too
  pool.RunAll();
  ASSERT_EQ(answers_.size(), 3u);
  for (size_t q = 0; q < 3; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
  // Once the loops end, nothing searches: a new batch runs where it starts.
  Submit(b, 3);
  ASSERT_EQ(s.tasks.size(), 1u);
  s.RunNext();
  EXPECT_TRUE(pool.tasks.empty());
  EXPECT_EQ(answers_[3], Alone(3));
}

// Searches of one round of reads, more loops allowed than there are
// searches: each gets a start, and none runs on the I/O thread, which would
// hold the others back (with one I/O thread, all of them).
TEST_F(SearchBatcherTest, StartsOfOneRoundAllGoToThePool) {
  ManualScheduler s;
  ManualPool pool;
  SearchBatcher::Options o;
  o.max_batches = 4;
  SearchBatcher b(o, pool.With(s.With()), &metrics_);
  for (size_t q = 0; q < 3; ++q) Submit(b, q);
  ASSERT_EQ(s.tasks.size(), 3u);
  while (!s.tasks.empty()) s.RunNext();
  EXPECT_TRUE(answers_.empty());
  EXPECT_EQ(pool.tasks.size(), 3u);
  pool.RunAll();
  ASSERT_EQ(answers_.size(), 3u);
  for (size_t q = 0; q < 3; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
}

// Six searches queue behind a running batch while three loops of the key
// exist: the loop that takes them takes its share (two, as if three loops
// split six), not all six into one call on one thread.
TEST_F(SearchBatcherTest, ABacklogIsSplitIntoShares) {
  ManualScheduler s;
  ManualPool pool;
  SearchBatcher::Options o;
  o.max_batches = 3;
  SearchBatcher b(o, pool.With(s.With()), &metrics_);
  Submit(b, 0, [&] {
    for (size_t q = 1; q <= 6; ++q) Submit(b, q);  // two starts, then the cap
    EXPECT_EQ(s.tasks.size(), 2u);
  });
  s.RunNext();
  // With two starts due, the first loop handed the rest to the pool; the
  // starts follow it there. Shares: 2, 2, 1, 1.
  EXPECT_EQ(pool.tasks.size(), 1u);
  while (!s.tasks.empty()) s.RunNext();
  EXPECT_EQ(pool.tasks.size(), 3u);
  pool.RunAll();
  ASSERT_EQ(answers_.size(), 7u);
  for (size_t q = 0; q <= 6; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
  const std::string text = metrics_.Render(*engine_);
  EXPECT_NE(text.find("mnemo_search_batch_queries_bucket{le=\"2\"} 5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mnemo_search_batch_queries_count 5\n"), std::string::npos) << text;
}

// A pool loop whose queue ran dry polls for a while: the next search is
// taken by it, with no new start (no pool thread to wake).
TEST_F(SearchBatcherTest, ALingeringPoolLoopTakesTheNextSearch) {
  SearchBatcher::Options o;
  o.max_batches = 2;
  o.linger = std::chrono::seconds(2);
  std::mutex mu;
  std::vector<std::thread> pool_threads;
  SearchExecutor pool;
  pool.offload = [&](std::function<void()> run) {
    std::lock_guard<std::mutex> lock(mu);
    pool_threads.emplace_back(std::move(run));
  };
  SearchBatcher b(o, pool, &metrics_);
  auto search = [&](size_t q, std::function<void()> then = [] {}) {
    auto answer = std::make_shared<std::promise<std::vector<int64_t>>>();
    auto got = answer->get_future();
    b.Submit(collection_, RequestFor(q), [answer, then](Result<SearchResult> res) {
      answer->set_value(res.ok() ? res->ids : std::vector<int64_t>{});
      then();
    });
    return got;
  };
  // q0 runs inline on its own thread and holds its loop until released, so
  // that the next start goes to the pool.
  std::promise<void> release, running;
  std::shared_future<void> released = release.get_future().share();
  std::future<std::vector<int64_t>> first;
  std::thread holder([&] {
    first = search(0, [&running, released] {
      running.set_value();
      released.wait();
    });
  });
  running.get_future().wait();
  auto second = search(1);
  ASSERT_EQ(second.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(second.get(), Alone(1));
  auto third = search(2);  // the pool loop still lingers: it takes this one
  ASSERT_EQ(third.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(third.get(), Alone(2));
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(pool_threads.size(), 1u);
  }
  release.set_value();
  holder.join();
  EXPECT_EQ(first.get(), Alone(0));
  for (auto& t : pool_threads) t.join();
}

TEST_F(SearchBatcherTest, ConcurrentSubmittersOnRealThreadsAllGetTheirAnswers) {
  // A pool of real threads and no I/O loop: every submitter may start a
  // batch, up to 3 at once, and the loops race over one queue.
  SearchBatcher::Options o;
  o.max_batches = 3;
  std::mutex mu;
  std::vector<std::thread> pool_threads;
  SearchExecutor pool;
  pool.offload = [&](std::function<void()> run) {
    std::lock_guard<std::mutex> lock(mu);
    pool_threads.emplace_back(std::move(run));
  };
  SearchBatcher b(o, pool, &metrics_);
  std::map<size_t, std::vector<int64_t>> got;
  std::vector<std::thread> submitters;
  for (size_t t = 0; t < 4; ++t) {
    submitters.emplace_back([&, t] {
      for (size_t q = t; q < 64; q += 4) {
        std::promise<std::vector<int64_t>> answer;
        b.Submit(collection_, RequestFor(q), [&](Result<SearchResult> res) {
          answer.set_value(res.ok() ? res->ids : std::vector<int64_t>{});
        });
        auto ids = answer.get_future().get();
        std::lock_guard<std::mutex> lock(mu);
        got[q] = std::move(ids);
      }
    });
  }
  for (auto& t : submitters) t.join();
  for (;;) {  // offloaded loops may still be finishing
    std::vector<std::thread> done;
    {
      std::lock_guard<std::mutex> lock(mu);
      done.swap(pool_threads);
    }
    if (done.empty()) break;
    for (auto& t : done) t.join();
  }
  ASSERT_EQ(got.size(), 64u);
  for (size_t q = 0; q < 64; ++q) EXPECT_EQ(got[q], Alone(q)) << q;
}

// Pulled searches (an HNSW index, whose batches save no work): Submit only queues them; RunPulled runs
// them on the caller's thread, its own searches first, a share at a time.
class PulledSearchTest : public SearchBatcherTest {
 protected:
  void SetUp() override {
    SearchBatcherTest::SetUp();
    CollectionConfig cc;
    cc.name = "graph";
    cc.dim = 8;
    cc.index = "HNSW16";
    graph_ = std::move(engine_->CreateCollection(cc)).value();
    ASSERT_TRUE(graph_->Upsert({Iota(data_.n()), data_.base}).ok());
  }
  void SubmitGraph(SearchBatcher& b, size_t q) {
    b.Submit(graph_, RequestFor(q), [this, q](Result<SearchResult> res) {
      ASSERT_TRUE(res.ok()) << res.status().ToString();
      answers_[q] = res->ids;
    });
  }
  std::vector<int64_t> GraphAlone(size_t q) { return graph_->Search(RequestFor(q))->ids; }
  std::shared_ptr<Collection> graph_;
};

TEST_F(PulledSearchTest, SubmitQueuesAndRunPulledTakesAShareAtATime) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.pull = true;
  o.max_batches = 2;  // a puller takes half of what waits
  SearchBatcher b(o, s.With(), &metrics_);
  for (size_t q = 0; q < 3; ++q) SubmitGraph(b, q);
  EXPECT_TRUE(s.tasks.empty());  // nothing scheduled: the searches wait for a puller
  EXPECT_EQ(b.pullable(), 3u);
  EXPECT_TRUE(answers_.empty());
  ASSERT_TRUE(b.RunPulled());  // 2 of 3
  EXPECT_EQ(b.pullable(), 1u);
  EXPECT_EQ(answers_.size(), 2u);
  ASSERT_TRUE(b.RunPulled());
  EXPECT_FALSE(b.RunPulled());
  ASSERT_EQ(answers_.size(), 3u);
  for (size_t q = 0; q < 3; ++q) EXPECT_EQ(answers_[q], GraphAlone(q)) << q;
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_count 2\n"), std::string::npos);

  // A collection whose batches save work (Flat) is not pulled: it starts as before.
  Submit(b, 5);
  EXPECT_EQ(b.pullable(), 0u);
  ASSERT_EQ(s.tasks.size(), 1u);
  s.RunNext();
  EXPECT_EQ(answers_[5], Alone(5));
}

TEST_F(PulledSearchTest, PullWaysSharesPulledSearchesWhateverMaxBatches) {
  // A server's setting: one flat batch at a time, pulled searches shared
  // over its threads.
  ManualScheduler s;
  SearchBatcher::Options o;
  o.pull = true;
  o.max_batches = 1;
  o.pull_ways = 3;  // a puller takes a third of what waits
  SearchBatcher b(o, s.With(), &metrics_);
  for (size_t q = 0; q < 3; ++q) SubmitGraph(b, q);
  ASSERT_TRUE(b.RunPulled());
  EXPECT_EQ(b.pullable(), 2u);
  EXPECT_EQ(answers_.size(), 1u);

  // Flat searches: one start for both, as max_batches is 1.
  Submit(b, 5);
  Submit(b, 6);
  ASSERT_EQ(s.tasks.size(), 1u);
  s.RunNext();
  EXPECT_EQ(answers_[5], Alone(5));
  EXPECT_EQ(answers_[6], Alone(6));
  while (b.RunPulled()) {
  }
  ASSERT_EQ(answers_.size(), 5u);
  for (size_t q = 0; q < 3; ++q) EXPECT_EQ(answers_[q], GraphAlone(q)) << q;
}

TEST_F(PulledSearchTest, AnotherPullersSearchesAreTakenOnlyAfterStealAfter) {
  SearchBatcher::Options o;
  o.pull = true;
  o.steal_after = std::chrono::hours(1);
  int woken = 0;
  SearchExecutor waker;
  waker.wake = [&] { woken++; };
  SearchBatcher never(o, waker, &metrics_);
  std::thread([&] {
    EXPECT_FALSE(never.RunPulled());  // a puller (an I/O thread)...
    SubmitGraph(never, 0);           // ...that will take this itself: no one is woken
  }).join();
  EXPECT_EQ(woken, 0);
  EXPECT_EQ(never.pullable(), 1u);
  EXPECT_FALSE(never.RunPulled());  // its thread is busy for all we know
  EXPECT_TRUE(answers_.empty());
  std::thread([&] {
    EXPECT_FALSE(never.RunPulled());
    SubmitGraph(never, 1);
    EXPECT_TRUE(never.RunPulled());  // its own, and only that
  }).join();
  EXPECT_EQ(woken, 1);  // two waited when it submitted: one more puller could help
  EXPECT_EQ(answers_[1], GraphAlone(1));
  EXPECT_EQ(answers_.count(0), 0u);
  EXPECT_EQ(never.pullable(), 1u);

  // A thread that never pulls (a worker, which reads large searches whole):
  // its search is anyone's at once, and an idle puller is woken for it.
  SearchBatcher worker_fed(o, waker, &metrics_);
  std::thread([&] { SubmitGraph(worker_fed, 2); }).join();
  EXPECT_EQ(woken, 2);  // though it was the only one waiting
  EXPECT_TRUE(worker_fed.RunPulled());
  EXPECT_EQ(answers_[2], GraphAlone(2));

  o.steal_after = microseconds(0);
  SearchBatcher at_once(o, waker, &metrics_);
  std::thread([&] {
    EXPECT_FALSE(at_once.RunPulled());
    SubmitGraph(at_once, 3);
  }).join();
  EXPECT_TRUE(at_once.RunPulled());
  EXPECT_EQ(answers_[3], GraphAlone(3));
}

TEST_F(PulledSearchTest, PullersOnRealThreadsAllGetTheirAnswers) {
  SearchBatcher::Options o;
  o.pull = true;
  o.max_batches = 4;
  o.steal_after = microseconds(20);
  SearchBatcher b(o, {}, &metrics_);
  std::mutex mu;
  std::map<size_t, std::vector<int64_t>> got;
  std::vector<std::thread> pullers;
  for (size_t t = 0; t < 4; ++t) {
    pullers.emplace_back([&, t] {
      for (size_t q = t; q < 64; q += 4) {
        std::promise<std::vector<int64_t>> answer;
        auto ids = answer.get_future();
        b.Submit(graph_, RequestFor(q), [&](Result<SearchResult> res) {
          answer.set_value(res.ok() ? res->ids : std::vector<int64_t>{});
        });
        // Pull until this answer is in (it may run on another puller).
        while (ids.wait_for(std::chrono::seconds(0)) != std::future_status::ready) b.RunPulled();
        std::lock_guard<std::mutex> lock(mu);
        got[q] = ids.get();
      }
    });
  }
  for (auto& t : pullers) t.join();
  while (b.RunPulled()) {
  }
  ASSERT_EQ(got.size(), 64u);
  for (size_t q = 0; q < 64; ++q) EXPECT_EQ(got[q], GraphAlone(q)) << q;
  EXPECT_EQ(b.pullable(), 0u);
}

}  // namespace
}  // namespace mnemo::engine

// SearchBatcher with a manual scheduler: when batches start, what they
// gather, and that every search gets its own answer.
#include "net/search_batcher.h"

#include <gtest/gtest.h>

#include <deque>

#include "tests/test_util.h"

namespace mnemo::net {
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
  SearchBatcher::Options With(SearchBatcher::Options o) {
    o.schedule = [this](microseconds delay, std::function<void()> run) {
      tasks.push_back({delay, std::move(run)});
    };
    return o;
  }
  void RunNext() {
    auto t = std::move(tasks.front());
    tasks.pop_front();
    t.run();
  }
};

class SearchBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = std::move(engine::Engine::Open(mnemo::testing::OptionsFor(dir_.path()))).value();
    engine::CollectionConfig cc;
    cc.name = "c";
    cc.dim = 8;
    collection_ = std::move(engine_->CreateCollection(cc)).value();
    ASSERT_TRUE(collection_->Upsert({Iota(data_.n()), data_.base}).ok());
  }

  // Submits query q; its answer lands in answers_[q].
  void Submit(SearchBatcher& b, size_t q) {
    engine::SearchRequest r;
    r.queries = std::span(data_.queries).subspan(q * 8, 8);
    r.k = 3;
    b.Submit(collection_, r, [this, q](Result<engine::SearchResult> res) {
      ASSERT_TRUE(res.ok()) << res.status().ToString();
      answers_[q] = res->ids;
    });
  }

  std::vector<int64_t> Alone(size_t q) {
    engine::SearchRequest r;
    r.queries = std::span(data_.queries).subspan(q * 8, 8);
    r.k = 3;
    return collection_->Search(r)->ids;
  }

  TempDir dir_;
  mnemo::testing::Dataset data_ = MakeClustered(2000, 64, 8, 10, 5);
  std::unique_ptr<engine::Engine> engine_;
  std::shared_ptr<engine::Collection> collection_;
  std::map<size_t, std::vector<int64_t>> answers_;
  Metrics metrics_;
};

TEST_F(SearchBatcherTest, SearchesReadInOneRoundShareOneCallAndGetTheirOwnAnswers) {
  ManualScheduler s;
  SearchBatcher b(s.With({}), &metrics_);
  for (size_t q = 0; q < 10; ++q) Submit(b, q);
  ASSERT_EQ(s.tasks.size(), 1u);  // one start, scheduled by the first search
  EXPECT_EQ(s.tasks[0].delay.count(), 0);  // no history: no window
  EXPECT_TRUE(answers_.empty());  // nothing runs on the submitting thread
  s.RunNext();
  ASSERT_EQ(answers_.size(), 10u);
  for (size_t q = 0; q < 10; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_count 1\n"), std::string::npos);
}

TEST_F(SearchBatcherTest, BatchesNeverExceedMaxQueries) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.max_queries = 4;
  SearchBatcher b(s.With(o), &metrics_);
  for (size_t q = 0; q < 10; ++q) Submit(b, q);
  s.RunNext();  // the loop runs 4 + 4 + 2
  ASSERT_EQ(answers_.size(), 10u);
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_count 3\n"), std::string::npos);
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_search_batch_queries_sum 10\n"), std::string::npos);
}

TEST_F(SearchBatcherTest, NextBatchWaitsAWindowUntilAsManyAsLastTimeHaveCome) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.window_fraction = 1.0;  // wait as long as the last batch took...
  o.max_window = microseconds(5'000'000);  // ...up to 5 s: never reached here
  SearchBatcher b(s.With(o), &metrics_);
  for (size_t q = 0; q < 3; ++q) Submit(b, q);
  s.RunNext();  // a batch of 3
  ASSERT_EQ(answers_.size(), 3u);

  Submit(b, 3);  // alone: waits a window for company
  ASSERT_EQ(s.tasks.size(), 1u);
  EXPECT_GT(s.tasks[0].delay.count(), 0);
  Submit(b, 4);
  EXPECT_EQ(s.tasks.size(), 1u);  // still waiting
  Submit(b, 5);  // as many as last time: start now
  ASSERT_EQ(s.tasks.size(), 2u);
  EXPECT_EQ(s.tasks[1].delay.count(), 0);
  s.RunNext();  // the window's timer fires first: it must not start a batch
  EXPECT_EQ(answers_.size(), 3u);
  s.RunNext();
  ASSERT_EQ(answers_.size(), 6u);
  for (size_t q = 3; q < 6; ++q) EXPECT_EQ(answers_[q], Alone(q)) << q;
}

TEST_F(SearchBatcherTest, WindowEndsTheWaitWhenCompanyDoesNotCome) {
  ManualScheduler s;
  SearchBatcher::Options o;
  o.window_fraction = 0;  // always the fixed window
  o.max_window = microseconds(300);
  SearchBatcher b(s.With(o), &metrics_);
  Submit(b, 0);  // no history: starts at once even with a window
  Submit(b, 1);
  ASSERT_EQ(s.tasks.size(), 1u);
  EXPECT_EQ(s.tasks[0].delay.count(), 0);
  s.RunNext();  // a batch of 2
  Submit(b, 2);  // waits 300 us for a second search that never comes
  ASSERT_EQ(s.tasks.size(), 1u);
  EXPECT_EQ(s.tasks[0].delay.count(), 300);
  s.RunNext();
  ASSERT_EQ(answers_.size(), 3u);
  EXPECT_EQ(answers_[2], Alone(2));
}

TEST_F(SearchBatcherTest, WithoutASchedulerTheSubmitterRunsTheBatch) {
  SearchBatcher b({}, &metrics_);
  Submit(b, 7);
  ASSERT_EQ(answers_.size(), 1u);
  EXPECT_EQ(answers_[7], Alone(7));
}

}  // namespace
}  // namespace mnemo::net

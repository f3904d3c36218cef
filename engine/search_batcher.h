// SearchBatcher: gathers searches that arrive concurrently for the same
// collection and parameters into one FAISS call, so that many clients each
// sending one query get the throughput of a batched search.
//
// Words used below:
//   key        the collection and parameters (k, nprobe, ef, group) that
//              searches must share to share a FAISS call.
//   window     how long a batch that could start waits for company.
//   company    the searches a batch expects: as many as the key's previous
//              batch had; once that many wait, the window ends early.
//   loop       a thread running a key's batches one after another until the
//              key's queue is empty (RunLoop).
//   linger     how long a pool loop whose queue ran dry polls for more
//              before it ends, to spare the next search a thread wake-up.
//   pulled     searches that batching does not speed up (HNSW, IVF, SQ):
//              never gathered; threads take them between their other work
//              (RunPulled).
//   pull ways  a puller takes 1/pull_ways of what waits of a key.
//   steal      a puller taking another thread's pulled search, allowed once
//              it waited steal_after.
//
// Batching is opportunistic: while the batches of a key run, later arrivals
// queue, and a finishing batch takes them together as its next batch. Before
// a batch starts it waits a window for company: `window_fraction` of the
// key's previous batch run time, at most `max_window` (with window_fraction
// 0, always max_window), or until as many searches wait as the previous
// batch had, whichever comes first. A flat search that costs 5 ms then waits
// up to 250 us for the other clients, which doubles its throughput under
// many clients; a lone client starts at once. A batch never exceeds
// max_queries.
//
// Concurrency: up to `max_batches` batches of one key run at once. With one,
// a server alternates between searching and answering (the clients of a
// batch are on the wire while the next one gathers); with more, a batch
// gathers and runs while the previous one's clients are away, and a backlog
// is split over idle loops rather than run as one call on one thread: that
// is what keeps many cores busy.
//
// Where a batch runs (SearchExecutor): with `schedule` unset, Submit spins out the window and
// runs the batch on the calling thread. A server passes a `schedule` that
// defers to its I/O loop instead (a timer for the window), so that the batch
// starts only after every request that arrived in the same round of socket
// reads has joined it; a batch that is alone (no other batch of any key runs
// or is about to start) then runs right there, which costs a lone client no
// thread hand-off. Any other batch goes to `offload`, when set (a compute
// pool, so that the I/O threads keep reading), and asks FAISS for
// `offload_threads` OpenMP threads: its parallelism comes from the batches
// beside it.
//
// Pulled searches (Options::pull): searches that batching does not speed
// up (HNSW, IVF, SQ) are not gathered or scheduled at all. Submit queues
// them, and threads that call RunPulled between their other work (a
// server's I/O threads, one per core) take them, their own first, a share
// of what waits at a time. Every core then reads, searches and answers,
// and a search costs no thread hop.
//
// Thread-safe. Completions are called on whichever thread ran the batch,
// exactly once per Submit, unless the batcher is destroyed with pulled
// searches that no thread took.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "common/mutex.h"
#include "common/thread_annotations.h"
#include "engine/collection.h"

namespace mnemo::engine {

// How a server runs what the batcher does not run on the submitting thread.
// Every part is optional; see the class comment for what each one's absence
// means. The functions are called from any thread and must not block.
struct SearchExecutor {
  // Runs a task after a delay (0: soon, after the work already due on the
  // calling thread's event loop), elsewhere than on the caller's stack.
  std::function<void(std::chrono::microseconds, std::function<void()>)> schedule;
  // Runs a task on a compute pool; unset: batches run where they start.
  std::function<void(std::function<void()>)> offload;
  // A pulled search was queued that its submitting thread will not take
  // next (more than one waits, or the thread never pulls): wake an idle
  // puller.
  std::function<void()> wake;
};

// What the batcher reports of its work (a server's metrics). Called on the
// threads that run batches, concurrently; must be cheap and thread-safe.
class SearchListener {
 public:
  virtual ~SearchListener() = default;
  // The number of queries one FAISS call served.
  virtual void OnSearchBatch(size_t queries) = 0;
  // How long one search waited in the batcher before its FAISS call began.
  virtual void OnSearchWait(double seconds) = 0;
  // How long one batch's search call (FAISS and the id mapping) took.
  virtual void OnSearchCall(double seconds) = 0;
};

class SearchBatcher {
 public:
  struct Options {
    std::chrono::microseconds max_window{1000};
    double window_fraction = 0.05;
    size_t max_queries = 256;
    size_t max_batches = 0;  // per key, at once (0: 1)
    // Pulled searches: a puller takes 1/pull_ways of what waits of a key
    // (0: 1/max_batches; a Server: one way per worker thread).
    size_t pull_ways = 0;
    uint32_t offload_threads = 1;  // FAISS's OpenMP threads in an offloaded batch
    // A pool loop whose queue ran dry polls this long for more before it
    // ends: the next search then starts without waking a pool thread, which
    // costs tens of microseconds on virtual machines. 0: end at once.
    std::chrono::microseconds linger{0};
    // Pulling: searches of collections whose batches save no work
    // (Collection::batching_saves_work false) are only queued by Submit
    // and run by RunPulled (see above). Such a search costs 0.1-1 ms, a few
    // times what handing it to another thread and back costs on a virtual
    // machine. Other searches start as above.
    bool pull = false;
    // A puller takes the searches its own thread submitted (their replies
    // then go out without a thread hop); another thread's only after they
    // waited this long (their thread is busy with a batch).
    std::chrono::microseconds steal_after{50};

    // These options with a server's defaults filled in where they are 0:
    // `workers` pool threads; with `pull_on_io`, searches that batching does
    // not speed up are pulled by the I/O threads, and the gathered (flat)
    // batches of a collection run one at a time, so that each has every
    // core (VectorIndex splits it by rows, reading the rows once for all the
    // queries that wait); else a batch per worker. Pool loops linger as
    // long as the I/O threads busy-poll.
    Options ForServer(size_t workers, bool pull_on_io, std::chrono::microseconds busy_poll) const;
  };
  using Done = std::function<void(Result<SearchResult>)>;
  struct Submitter {  // a thread that submits pulled searches
    std::atomic<bool> pulls{false};     // it has called RunPulled
    std::atomic<size_t> waiting{0};     // its pulled searches not yet taken
  };

  // `listener` may be null; not owned, must outlive the batcher.
  SearchBatcher(Options options, SearchExecutor executor, SearchListener* listener);

  // `request.queries` must stay valid until `done` is called; request must
  // have passed collection->ValidateSearch (the batcher does not scan the
  // queries again).
  void Submit(std::shared_ptr<Collection> collection, const SearchRequest& request, Done done);

  // Runs one batch of pulled searches, if any may be taken (see
  // Options::steal_after); true when it ran one. Keys are taken in turn. A
  // batch that runs alone (nothing else queued or running) may use every
  // core, as SearchRequest::threads 0 does.
  bool RunPulled();
  // Pulled searches queued and not yet taken (a hint: it changes as other
  // threads submit and take).
  size_t pullable() const { return pullable_.load(); }

 private:
  struct Item {
    SearchRequest request;
    Done done;
    std::chrono::steady_clock::time_point queued;
    std::shared_ptr<Submitter> origin;  // pulled: the submitting thread's (its puller takes it first)
  };
  // Searches that may share one FAISS call.
  using Key = std::tuple<Collection*, uint32_t, uint32_t, uint32_t, bool, uint64_t>;
  struct Queue {
    std::shared_ptr<Collection> collection;
    std::vector<Item> items;
    size_t running = 0;     // batch loops of this key, the waiting start included
    size_t pulling = 0;     // RunPulled batches of this key running
    bool pulled = false;    // its searches are pulled (see Options::pull)
    size_t lingering = 0;   // ...of which poll for more (see Options::linger)
    bool waiting = false;   // one start waits out its window, unless company comes first
    uint64_t wait_id = 0;   // which scheduled start may still run
  };
  using Clock = std::chrono::steady_clock;
  struct LastRun {
    std::chrono::microseconds took{0};
    size_t searches = 1;
  };

  std::chrono::microseconds WindowLocked(const Key& key) const REQUIRES(mu_);
  size_t CompanyLocked(const Key& key) const REQUIRES(mu_);
  void StartAfterWindow(const Key& key, uint64_t wait_id);
  void SpinWindow(const Key& key, std::chrono::microseconds window);
  // Runs the key's batches here, or on the offload pool when another batch runs.
  void Launch(const Key& key);
  // Runs a loop of `key` on the pool.
  void Offload(const Key& key);
  // mu_ held: the next pulled key (after last_pulled_) that has a search
  // this thread may take.
  std::map<Key, Queue>::iterator ReadyLocked(Clock::time_point now) REQUIRES(mu_);
  bool MayTake(const Item& item, Clock::time_point now) const;
  // mu_ held: this thread's share of q's searches (see Options::steal_after).
  std::vector<Item> TakePulledLocked(Queue& q, Clock::time_point now) REQUIRES(mu_);
  // Runs batches of `key` until its queue is empty; `threads` as in SearchRequest.
  void RunLoop(const Key& key, uint32_t threads);
  // With mu_ held (it lets go of it while it polls) and the key's queue
  // empty: false once the loop should end (it is then no longer counted);
  // true when searches came while it polled.
  bool LingerLocked(const Key& key) REQUIRES(mu_);
  // The next batch of `key`, whose queue must not be empty; `helpers`:
  // loops to start beside this one for what it leaves.
  std::vector<Item> TakeBatchLocked(const Key& key, std::shared_ptr<Collection>* collection,
                                    size_t* helpers) REQUIRES(mu_);
  void RunBatch(Collection& collection, std::vector<Item>& batch, uint32_t threads);
  // mu_ held: a batch of `key` that started at `start` has just run, for
  // the key's next window and company (see WindowLocked, CompanyLocked).
  void RecordRunLocked(const Key& key, Clock::time_point start, size_t searches) REQUIRES(mu_);
  // The search of a validated request, its time reported to the listener.
  Result<SearchResult> TimedSearch(Collection& collection,
                                           const SearchRequest& request);

  const Options options_;
  const SearchExecutor executor_;
  SearchListener* const listener_;
  Mutex mu_;
  std::map<Key, Queue> queues_ GUARDED_BY(mu_);
  // The last batch's run time per key, for the window; a hint only (the
  // collection pointer in a key is never dereferenced). Guarded by mu_.
  std::map<Key, LastRun> last_run_ GUARDED_BY(mu_);
  uint64_t next_wait_id_ GUARDED_BY(mu_) = 0;
  size_t in_flight_ GUARDED_BY(mu_) = 0;  // batch loops running, all keys
  size_t starting_ GUARDED_BY(mu_) = 0;   // starts not yet launched, all keys
  std::atomic<uint64_t> arrivals_{0};  // searches submitted, polled by lingering loops
  std::atomic<size_t> pullable_{0};    // items in the queues of pulled keys
  Key last_pulled_ GUARDED_BY(mu_){};  // the key RunPulled took last
};

}  // namespace mnemo::engine

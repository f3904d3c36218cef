// Server: mnemo's wire protocol over TCP (Boost.Asio).
//
// Threading: `io_threads` threads do all socket I/O, each with its own
// io_context and its share of the connections; each connection's handlers
// run on its own strand, so a connection needs no locks. With search_on_io,
// searches that batching does not speed up (all but Flat's) run on the I/O
// thread that read them, between its
// reads and writes, or on an idle one (SearchBatcher's pulled searches).
// Other searches are batched (SearchBatcher): a batch starts once the reads
// due in the current I/O round have joined it, and runs on the I/O thread
// when nothing else searches (a lone query costs no thread hand-off), or on
// the compute pool beside the batches already running (up to
// batching.max_batches per collection; by default, with search_on_io, one:
// a flat batch that runs alone is split by rows over every core, see
// VectorIndex::Search; else one per worker thread).
// Every other request executes on the compute pool (`worker_threads`) and
// posts its reply back to the connection's strand.
//
// A connection reads frames continuously (clients may pipeline) up to
// `max_inflight` unanswered requests, and writes replies strictly in request
// order. A frame whose header exceeds max_frame_bytes or max_attachment_bytes gets an error
// reply and the connection is closed (the stream cannot be resynchronized);
// a frame that fails verification gets an error reply and the connection
// goes on. Connections idle for idle_timeout are closed.
//
// Stop() stops accepting, lets every request already read finish and be
// answered, then closes the connections; Wait() returns once all threads
// are done. Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "engine/engine.h"
#include "net/key_ring.h"
#include "net/metrics.h"
#include "net/operations.h"
#include "net/protocol.h"
#include "engine/search_batcher.h"

namespace mnemo::net {

struct ServerOptions {
  std::string listen = "127.0.0.1:7070";  // port 0 picks a free port
  // One I/O thread gathers the largest batches and switches no context; a
  // few more keep the syscalls of many connections off one core.
  // 0: one per core with search_on_io, else one per 8 cores (1 to 4).
  size_t io_threads = 0;
  // 0: one per core but one with search_on_io, else one per core not taken
  // by an I/O thread; at least 1.
  size_t worker_threads = 0;
  uint32_t max_frame_bytes = kDefaultMaxFrameBytes;            // a frame's FlatBuffer
  uint32_t max_attachment_bytes = kDefaultMaxAttachmentBytes;  // and its attachment
  size_t max_connections = 1024;
  size_t max_inflight = 256;  // unanswered requests per connection
  std::chrono::seconds idle_timeout{300};
  // An I/O thread that runs out of work keeps polling this long before it
  // sleeps in epoll: a request arriving meanwhile skips the wake-up, which
  // costs tens of microseconds on virtual machines. 0 disables. Search
  // loops on the pool linger as long (unless batching.linger says otherwise).
  std::chrono::microseconds busy_poll{50};
  // Searches whose batches save no work (HNSW, IVF, SQ: all but Flat) run on the I/O
  // threads, one per core by default, each taking the searches it read
  // (engine::SearchBatcher::Options::pull): no core is kept for I/O alone and a
  // search costs no thread hop. Other searches are gathered into batches
  // on the workers (Flat's); the I/O threads then mostly sleep. False: all searches
  // go to the workers beside `io_threads` I/O threads (one per 8 cores).
  bool search_on_io = true;
  engine::SearchBatcher::Options batching;
  // API keys every request must present; nullptr: none needed. Not owned.
  const KeyRing* keys = nullptr;
  // Tests only: handlers that replace the operations table's
  // (RequestHandler::OverrideForTesting), e.g. one that throws.
  std::vector<std::pair<wire::Request, Handler>> handler_overrides;
};

class Server {
 public:
  // engine and metrics are not owned and must outlive the server.
  Server(engine::Engine* engine, Metrics* metrics, ServerOptions options);
  ~Server();

  // Binds and starts serving; IOError when the address cannot be bound.
  Status Start();
  // The address actually bound ("127.0.0.1:34567").
  std::string address() const;
  void Stop();
  void Wait();

 private:
  friend class Connection;
  class Impl;
  std::unique_ptr<Impl> impl_;
};

class Connection;

}  // namespace mnemo::net

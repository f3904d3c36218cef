#include "net/server.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <pthread.h>
#include <set>
#include <thread>

#include <utility>  // before Boost 1.74 Asio, whose awaitable.hpp misses it in C++20
#include <boost/asio.hpp>
#include <spdlog/spdlog.h>

#include "common/cpu_set.h"
#include "common/host_port.h"
#include "common/mutex.h"
#include "net/request_handler.h"

namespace mnemo::net {

namespace asio = boost::asio;
using asio::ip::tcp;

class Connection;

namespace {
// Names the calling thread once (top -H, perf and /proc show it).
void NameThisThread(const char* name) {
  thread_local bool named = false;
  if (named) return;
  named = true;
  pthread_setname_np(pthread_self(), name);
}
}  // namespace

class Server::Impl {
 public:
  Impl(engine::Engine* engine, Metrics* metrics, ServerOptions options)
      : options_(std::move(options)),
        metrics_(metrics),
        io_threads_(options_.io_threads      ? options_.io_threads
                    : options_.search_on_io ? UsableCores()
                                            : std::clamp<size_t>(UsableCores() / 8, 1, 4)),
        // One thread per core in all: a worker that shares its core with an
        // I/O thread delays the replies of every connection on that thread.
        // With search_on_io, the I/O threads sleep while the workers run the
        // costly searches.
        workers_(options_.worker_threads ? options_.worker_threads
                 : options_.search_on_io ? std::max<size_t>(1, UsableCores() - 1)
                                         : std::max<size_t>(1, UsableCores() - std::min(UsableCores(), io_threads_))),
        batcher_(options_.batching.ForServer(workers_, options_.search_on_io, options_.busy_poll),
                 Executor(), metrics),
        handler_(engine, &batcher_, metrics, options_.keys),
        pool_(workers_),
        ios_(MakeContexts(io_threads_)),
        acceptor_(*ios_[0]) {
    for (auto& io : ios_) keep_running_.emplace_back(asio::make_work_guard(*io));
    for (const auto& [type, handler] : options_.handler_overrides) {
      handler_.OverrideForTesting(type, handler);
    }
    sleeping_ = std::make_unique<std::atomic<bool>[]>(ios_.size());
  }

  Status Start();
  void Stop();
  void Wait();
  std::string address() const { return address_; }

  // Called by connections.
  void Forget(Connection* c);
  const ServerOptions& options() const { return options_; }
  RequestHandler& handler() { return handler_; }
  // Runs `task` on the compute pool.
  void PostToPool(std::function<void()> task) {
    asio::post(pool_, [task = std::move(task)] {
      NameThisThread("mnemo-work");
      task();
    });
  }
  Metrics& metrics() { return *metrics_; }
  // The I/O context of the next connection (round robin).
  asio::io_context& NextIo() { return *ios_[next_io_.fetch_add(1, std::memory_order_relaxed) % ios_.size()]; }

 private:
  void Accept();
  void RunIo(size_t i);  // I/O thread i's loop
  // Waits in epoll for I/O thread i's next handler (a socket, a reply or
  // WakeOne's no-op); false once its context has stopped.
  bool Sleep(size_t i);
  static std::vector<std::unique_ptr<asio::io_context>> MakeContexts(size_t n) {
    std::vector<std::unique_ptr<asio::io_context>> v;
    for (size_t i = 0; i < n; ++i) v.push_back(std::make_unique<asio::io_context>(1));
    return v;
  }
  // The I/O context the calling thread runs; the first one elsewhere.
  asio::io_context& CurrentIo() { return current_io_ ? *current_io_ : *ios_[0]; }
  static thread_local asio::io_context* current_io_;
  // search_on_io: a search waits that its own I/O thread will not take
  // next; an I/O thread asleep in epoll gets a no-op to wake it.
  void WakeOne() {
    if (asleep_.load() == 0) return;  // see Sleep
    for (size_t i = 0; i < ios_.size(); ++i) {
      bool expected = true;
      if (sleeping_[i].compare_exchange_strong(expected, false)) {
        asleep_.fetch_sub(1, std::memory_order_acq_rel);
        asio::post(*ios_[i], [] {});
        return;
      }
    }
  }

  // The batcher's executor: batches start on the I/O loop after the reads
  // already due, or on a timer when there is a window, and run beside other
  // batches on the compute pool; with search_on_io a queued pulled search
  // wakes a sleeping I/O thread (see SearchBatcher).
  engine::SearchExecutor Executor() {
    engine::SearchExecutor e;
    e.offload = [this](std::function<void()> task) { PostToPool(std::move(task)); };
    if (options_.search_on_io) e.wake = [this] { WakeOne(); };
    e.schedule = [this](std::chrono::microseconds delay, std::function<void()> task) {
      // Deferred, not posted: the task queues behind this round's reads on
      // this thread and wakes no other.
      if (delay.count() <= 0) return asio::defer(CurrentIo(), std::move(task));
      auto timer = std::make_shared<asio::steady_timer>(CurrentIo(), delay);
      timer->async_wait([timer, task = std::move(task)](const boost::system::error_code&) { task(); });
    };
    return e;
  }

  const ServerOptions options_;
  Metrics* const metrics_;
  const size_t io_threads_;
  const size_t workers_;  // compute pool threads
  engine::SearchBatcher batcher_;
  RequestHandler handler_;
  asio::thread_pool pool_;
  // One context per I/O thread, each connection on one: a context run by
  // several threads hands its events from the thread in epoll to the others.
  std::vector<std::unique_ptr<asio::io_context>> ios_;
  std::atomic<size_t> next_io_{0};
  std::unique_ptr<std::atomic<bool>[]> sleeping_;  // per I/O thread, search_on_io
  std::atomic<size_t> asleep_{0};
  // Keep every context running (one may have no connection yet) until Stop.
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  std::string address_;
  std::atomic<bool> stopping_{false};
  Mutex mu_;
  std::set<std::shared_ptr<Connection>> connections_ GUARDED_BY(mu_);
};

// One client connection. Owns itself through shared_from_this; all its
// members are touched only on its strand.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // `socket` must be on `io`.
  Connection(Server::Impl* server, asio::io_context& io, tcp::socket socket)
      : server_(server),
        strand_(asio::make_strand(io)),
        socket_(std::move(socket)),
        idle_(strand_) {}

  void Start() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      self->MarkRead();
      self->ArmIdleTimer(self->server_->options().idle_timeout);
      self->Read();
    });
  }

  // Stop reading; close once every request read so far is answered (a
  // put_kv whose layers are still arriving gives up, storing nothing).
  void Shutdown() {
    asio::dispatch(strand_, [self = shared_from_this()] {
      self->closing_ = true;
      self->EndStream();
      self->MaybeClose();
    });
  }

  // An error reply, then close: for connections refused at accept.
  void RejectAndClose(const Status& status) {
    asio::dispatch(strand_, [self = shared_from_this(), status] {
      self->closing_ = true;
      self->Enqueue()->Add(ErrorResponse(0, status));
      self->Flush();
    });
  }

 private:
  // One request's place in the reply order. Most replies are one frame; a
  // streamed get_kv's parts are written as they come, the slot kept at its
  // place until the last.
  struct Slot {
    std::deque<Reply> replies;  // ready, not yet written
    bool complete = false;      // the last frame is in `replies` or written
    uint8_t header[FrameHeader::kBytes];
    void Add(Reply reply) {
      complete = !reply.more;
      replies.push_back(std::move(reply));
    }
  };

  Slot* Enqueue() {
    slots_.emplace_back();
    return &slots_.back();
  }

  // The idle timer is armed once and re-armed only when it fires: a read
  // just stamps last_read_ (re-arming a timer per request costs a cancelled
  // handler and often a timerfd update on the I/O thread).
  void ArmIdleTimer(std::chrono::steady_clock::duration after) {
    idle_.expires_after(after);
    idle_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec) return;  // cancelled
      const auto timeout = self->server_->options().idle_timeout;
      const auto quiet = std::chrono::steady_clock::now() - self->last_read_;
      if (quiet >= timeout && self->slots_.empty() && !self->writing_) {
        spdlog::debug("closing idle connection");
        self->Close();
      } else {
        self->ArmIdleTimer(quiet >= timeout ? timeout : timeout - quiet);
      }
    });
  }

  void MarkRead() { last_read_ = std::chrono::steady_clock::now(); }

  // Reads whatever the socket has into buffer_ and dispatches every complete
  // frame in it: one syscall serves many pipelined or small requests.
  void Read() {
    if (reading_attachment_) return;  // its completion reads on
    if (closing_ || slots_.size() >= server_->options().max_inflight) {
      read_paused_ = !closing_;
      return;
    }
    if (buffer_.size() - filled_ < kReadChunk) buffer_.resize(filled_ + kReadChunk);
    socket_.async_read_some(
        asio::buffer(buffer_.data() + filled_, buffer_.size() - filled_),
        asio::bind_executor(strand_, [self = shared_from_this()](
                                         const boost::system::error_code& ec, size_t n) {
          if (ec) return self->OnReadEnd(ec);
          if (self->closing_) return self->MaybeClose();  // stopping
          self->filled_ += n;
          self->MarkRead();
          if (self->ParseFrames()) self->Read();
        }));
  }

  // Dispatches the complete frames at the front of buffer_; false when the
  // connection must close (a frame over the size limits) or an attachment is
  // being read (its completion goes on from there).
  bool ParseFrames() {
    const auto& o = server_->options();
    size_t at = 0;
    std::shared_ptr<InFrame> partial;  // a frame whose attachment is still on its way
    size_t partial_have = 0;
    while (filled_ - at >= FrameHeader::kBytes) {
      const FrameHeader h = FrameHeader::DecodeFrom(&buffer_[at]);
      if (h.body > o.max_frame_bytes || h.body == 0 || h.attachment > o.max_attachment_bytes) {
        RejectFrame(h);
        return false;
      }
      const size_t avail = filled_ - at - FrameHeader::kBytes;
      if (avail < h.body) {
        // Incomplete: make room for the whole FlatBuffer and read on.
        if (buffer_.size() < FrameHeader::kBytes + h.body) buffer_.resize(FrameHeader::kBytes + h.body);
        break;
      }
      const uint8_t* body = &buffer_[at + FrameHeader::kBytes];
      auto in = std::make_shared<InFrame>();
      in->body.assign(body, body + h.body);
      at += FrameHeader::kBytes + h.body;
      if (h.attachment > 0) {
        // Nothing of an attachment is buffered for a request its key does
        // not allow (a client without a key could otherwise make the daemon
        // hold a gigabyte): it is answered and the connection closed.
        if (Status st = server_->handler().Admit(*in); !st.ok()) {
          RefuseAttachment(*in, st);
          return false;
        }
        // Attachments (megabytes of KV layers) go to their own buffer; what
        // is not read yet is read straight into it.
        in->attachment = Buffer::Acquire(h.attachment);
        const size_t have = std::min<size_t>(avail - h.body, h.attachment);
        std::memcpy(in->attachment.data(), body + h.body, have);
        at += have;
        if (have < h.attachment) {
          partial = std::move(in);
          partial_have = have;
          break;
        }
      }
      Dispatch(std::move(in));
      if (closing_) return false;
    }
    if (at > 0) {
      std::memmove(buffer_.data(), buffer_.data() + at, filled_ - at);
      filled_ -= at;
    }
    if (buffer_.size() > kMaxIdleBuffer && filled_ < kReadChunk) {
      buffer_.resize(kReadChunk);  // give back what a huge frame needed
      buffer_.shrink_to_fit();
    }
    if (partial) {
      // A put_kv starts now and appends each layer as it lands; anything
      // else waits for its whole attachment.
      if (RequestHandler::CanStream(*partial)) {
        partial->progress = std::make_shared<AttachmentProgress>(partial_have);
        streaming_ = partial->progress;
        Dispatch(partial);
        if (closing_) {
          EndStream();
          return false;
        }
      }
      ReadAttachment(std::move(partial), partial_have);
      return false;
    }
    return true;
  }

  // Reads the rest of `in`'s attachment; a streamed one (in->progress) in
  // steps, reporting each, the others in one go and then dispatched.
  void ReadAttachment(std::shared_ptr<InFrame> in, size_t have) {
    reading_attachment_ = true;
    const size_t step = in->progress ? std::min(kStreamStep, in->attachment.size() - have)
                                     : in->attachment.size() - have;
    auto next = asio::buffer(in->attachment.data() + have, step);
    asio::async_read(socket_, next, TransferAllAtOnce(),
                     asio::bind_executor(strand_, [self = shared_from_this(), in, have](
                                                      const boost::system::error_code& ec, size_t n) mutable {
                       if (ec || self->closing_) {
                         self->reading_attachment_ = false;
                         self->EndStream();
                         return ec ? self->OnReadEnd(ec) : self->MaybeClose();
                       }
                       self->MarkRead();
                       const size_t now_have = have + n;
                       if (in->progress) in->progress->Advance(now_have);
                       if (now_have < in->attachment.size()) return self->ReadAttachment(std::move(in), now_have);
                       self->reading_attachment_ = false;
                       if (in->progress) {
                         self->streaming_.reset();
                       } else {
                         self->Dispatch(std::move(in));
                         if (self->closing_) return;
                       }
                       if (self->ParseFrames()) self->Read();
                     }));
  }

  // A streamed attachment that will not complete: its request gives up.
  void EndStream() {
    if (streaming_) streaming_->Fail();
    streaming_.reset();
  }

  void RefuseAttachment(const InFrame& in, const Status& st) {
    const uint64_t id = in.verified != nullptr ? in.verified->request_id() : 0;
    const wire::Request type = in.verified != nullptr ? in.verified->request_type() : wire::Request::NONE;
    Enqueue()->Add(ErrorResponse(
        id, Status(st.code(), st.message() + "; its attachment was not read, closing the connection")));
    closing_ = true;
    server_->metrics().RecordRequest(type, true, 0);
    Flush();
  }

  void RejectFrame(const FrameHeader& h) {
    const auto& o = server_->options();
    Enqueue()->Add(ErrorResponse(
        0, Status::InvalidArgument(
               h.attachment > o.max_attachment_bytes
                   ? "attachment of " + std::to_string(h.attachment) + " bytes is over the limit of " +
                         std::to_string(o.max_attachment_bytes) + "; closing the connection"
                   : "frame of " + std::to_string(h.body) + " bytes is outside 1.." +
                         std::to_string(o.max_frame_bytes) + "; closing the connection")));
    closing_ = true;
    server_->metrics().RecordRequest(wire::Request::NONE, true, 0);
    Flush();
  }

  // Requests run in arrival order where it matters: a request waits until
  // every earlier non-search request of this connection has finished, so a
  // pipelined write is applied after the writes before it, and a search sees
  // them. Searches run on this strand (short and batched: that saves two
  // thread hops per query); everything else runs on the compute pool.
  void Dispatch(std::shared_ptr<InFrame> frame) {
    Slot* slot = Enqueue();
    // A streamed put_kv was verified by CanStream; it runs ordered.
    const bool search = !frame->progress && RequestHandler::Classify(*frame) == Runs::kSearch;
    Pending p{search, std::move(frame), slot};
    if (ordered_running_ == 0 && held_.empty()) return Run(std::move(p));
    held_.push_back(std::move(p));
  }

  struct Pending {
    bool search;
    std::shared_ptr<const InFrame> body;
    Slot* slot;
  };

  void Run(Pending p) {
    // Keeps io_context::run alive until the reply is back on the strand.
    auto work = asio::make_work_guard(strand_);
    const bool ordered = !p.search;
    auto done = [self = shared_from_this(), slot = p.slot, work,
                 ordered](Reply reply) mutable {
      // Inline when the request ran on this strand; posted from the pool.
      asio::dispatch(self->strand_, [self, slot, reply = std::move(reply), work, ordered]() mutable {
        slot->Add(std::move(reply));
        if (ordered && slot->complete) {
          self->ordered_running_--;
          self->Release();
        }
        self->Flush();
      });
    };
    if (p.search) return server_->handler().Handle(p.body, std::move(done));
    ordered_running_++;
    server_->PostToPool([self = shared_from_this(), body = std::move(p.body),
                         done = std::move(done)]() mutable {
      self->server_->handler().Handle(body, std::move(done));
    });
  }

  // Starts held requests, in order, up to and including the next ordered one.
  void Release() {
    while (ordered_running_ == 0 && !held_.empty()) {
      Pending p = std::move(held_.front());
      held_.pop_front();
      Run(std::move(p));
    }
  }

  // Writes the answered prefix of the slot queue, in order. Each reply is
  // first written right here, without blocking: a reply the socket takes
  // whole (nearly every search reply) then costs one send and no handler
  // round trip; what it does not take is written asynchronously.
  void Flush() {
    while (!writing_ && !slots_.empty() && !slots_.front().replies.empty()) {
      Slot& s = slots_.front();
      const Reply& r = s.replies.front();
      FrameHeader{uint32_t(r.body.size()), uint32_t(r.attachment.size())}.EncodeTo(s.header);
      std::array<asio::const_buffer, 3> bufs = {
          asio::buffer(s.header), asio::buffer(r.body.data(), r.body.size()),
          asio::buffer(r.attachment.data(), r.attachment.size())};
      boost::system::error_code ec;
      size_t sent = socket_.write_some(bufs, ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        ec.clear();
        sent = 0;
      }
      if (!ec && sent < asio::buffer_size(bufs)) {
        for (auto& b : bufs) {
          const size_t skip = std::min(sent, b.size());
          b += skip;
          sent -= skip;
        }
        writing_ = true;
        asio::async_write(socket_, bufs, TransferAllAtOnce(),
                          asio::bind_executor(strand_, [self = shared_from_this()](
                                                           const boost::system::error_code& ec, size_t) {
                            self->writing_ = false;
                            self->Written(ec);
                            self->Flush();
                          }));
        return;
      }
      Written(ec);
    }
    MaybeClose();
  }

  // The front reply is written (or failed to be: `ec`).
  void Written(const boost::system::error_code& ec) {
    Slot& front = slots_.front();
    front.replies.pop_front();
    if (front.complete && front.replies.empty()) {
      slots_.pop_front();  // std::deque keeps other slots in place
    }
    if (ec) {
      write_failed_ = true;
      closing_ = true;
    }
    if (read_paused_ && !closing_) {
      read_paused_ = false;
      if (ParseFrames()) Read();
    }
  }

  void OnReadEnd(const boost::system::error_code& ec) {
    if (ec != asio::error::eof && ec != asio::error::operation_aborted &&
        ec != asio::error::connection_reset) {
      spdlog::debug("read ended: {}", ec.message());
    }
    closing_ = true;
    MaybeClose();
  }

  void MaybeClose() {
    if (!closing_) return;
    // Answers still owed are written first, unless the peer is gone.
    bool owed = !slots_.empty() && !write_failed_;
    if (owed || writing_) return;
    if (!slots_.empty()) {
      // Write failed: drop ready replies; pending ones will find the socket
      // closed and are dropped in Flush.
      while (!slots_.empty() && slots_.front().complete) slots_.pop_front();
      if (!slots_.empty()) return;
    }
    Close();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    EndStream();
    boost::system::error_code ignored;
    idle_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    server_->Forget(this);
  }

  Server::Impl* const server_;
  asio::strand<asio::io_context::executor_type> strand_;
  tcp::socket socket_;
  asio::steady_timer idle_;
  std::chrono::steady_clock::time_point last_read_;
  static constexpr size_t kReadChunk = 64 << 10;
  static constexpr size_t kMaxIdleBuffer = 4 << 20;
  std::vector<uint8_t> buffer_;  // bytes read, not yet dispatched
  size_t filled_ = 0;
  std::deque<Slot> slots_;
  std::deque<Pending> held_;    // read, waiting for an earlier ordered request
  size_t ordered_running_ = 0;  // non-search requests started, not finished
  bool writing_ = false, read_paused_ = false, reading_attachment_ = false;
  // The attachment being streamed into a running request, if any.
  std::shared_ptr<AttachmentProgress> streaming_;
  // A streamed attachment is read (and reported) a megabyte at a time.
  static constexpr size_t kStreamStep = size_t(1) << 20;
  bool closing_ = false, closed_ = false, write_failed_ = false;
};

Status Server::Impl::Start() {
  std::string host;
  uint16_t port;
  MNEMO_RETURN_IF_ERROR(SplitHostPort(options_.listen, &host, &port));
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("cannot parse address '" + host + "': " + ec.message());
  tcp::endpoint endpoint(addr, port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IOError("cannot listen on " + options_.listen + ": " + ec.message());
  auto bound = acceptor_.local_endpoint();
  address_ = bound.address().to_string() + ":" + std::to_string(bound.port());
  Accept();
  for (size_t i = 0; i < ios_.size(); ++i) {
    threads_.emplace_back([this, i] { RunIo(i); });
  }
  return Status::OK();
}

thread_local asio::io_context* Server::Impl::current_io_ = nullptr;

// Socket I/O, then (search_on_io) one batch of pulled searches, in turn.
// After busy_poll with neither, sleeps in epoll, unless a pulled search
// waits (another thread's, which this one may take after steal_after).
void Server::Impl::RunIo(size_t i) {
  NameThisThread("mnemo-io");
  asio::io_context& io = *ios_[i];
  current_io_ = &io;
  const bool pull = options_.search_on_io;
  if (!pull && options_.busy_poll.count() <= 0) {
    io.run();
    return;
  }
  using Clock = std::chrono::steady_clock;
  auto last_work = Clock::now();
  for (;;) {
    bool worked = io.poll() > 0;
    if (pull && batcher_.RunPulled()) worked = true;
    if (worked) {
      last_work = Clock::now();
    } else if (io.stopped()) {
      return;
    } else if (batcher_.pullable() == 0 && Clock::now() - last_work >= options_.busy_poll) {
      if (!Sleep(i)) return;  // stopped
      last_work = Clock::now();
    }
  }
}

bool Server::Impl::Sleep(size_t i) {
  sleeping_[i].store(true);
  // Sequentially consistent, as Submit's count and its look at asleep_:
  // either a search queued since the caller looked is seen here, or its
  // Submit sees this thread asleep and wakes it.
  asleep_.fetch_add(1);
  const size_t ran = batcher_.pullable() > 0 ? 1 : ios_[i]->run_one();
  bool expected = true;
  if (sleeping_[i].compare_exchange_strong(expected, false)) {
    asleep_.fetch_sub(1, std::memory_order_acq_rel);
  }
  return ran > 0;
}

void Server::Impl::Accept() {
  asio::io_context* io = &NextIo();
  acceptor_.async_accept(*io, [this, io](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted) spdlog::warn("accept failed: {}", ec.message());
      if (!stopping_ && acceptor_.is_open()) Accept();
      return;
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    // Flush writes without blocking, and falls back to asynchronous writes.
    socket.non_blocking(true, ignored);
    auto c = std::make_shared<Connection>(this, *io, std::move(socket));
    bool reject;
    {
      MutexLock lock(&mu_);
      reject = connections_.size() >= options_.max_connections;
      connections_.insert(c);
    }
    if (reject) {
      metrics_->ConnectionRejected();
      metrics_->ConnectionOpened();
      c->RejectAndClose(Status::ResourceExhausted(
          "too many connections (limit " + std::to_string(options_.max_connections) + ")"));
    } else {
      metrics_->ConnectionOpened();
      c->Start();
    }
    if (!stopping_) Accept();
  });
}

void Server::Impl::Forget(Connection* c) {
  MutexLock lock(&mu_);
  for (auto it = connections_.begin(); it != connections_.end(); ++it) {
    if (it->get() == c) {
      connections_.erase(it);
      metrics_->ConnectionClosed();
      return;
    }
  }
}

void Server::Impl::Stop() {
  if (stopping_.exchange(true)) return;
  asio::post(*ios_[0], [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    std::vector<std::shared_ptr<Connection>> all;
    {
      MutexLock lock(&mu_);
      all.assign(connections_.begin(), connections_.end());
    }
    for (auto& c : all) c->Shutdown();
    // Each context ends once its connections have closed.
    for (auto& guard : keep_running_) guard.reset();
  });
}

void Server::Impl::Wait() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  pool_.join();
}

Server::Server(engine::Engine* engine, Metrics* metrics, ServerOptions options)
    : impl_(std::make_unique<Impl>(engine, metrics, std::move(options))) {}
Server::~Server() {
  Stop();
  Wait();
}
Status Server::Start() { return impl_->Start(); }
std::string Server::address() const { return impl_->address(); }
void Server::Stop() { impl_->Stop(); }
void Server::Wait() { impl_->Wait(); }

}  // namespace mnemo::net

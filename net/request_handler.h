// RequestHandler: executes one request frame against the engine and builds
// its reply. It knows nothing of sockets: the server, the fuzzer and tests
// all drive it the same way.
//
// Thread-safe; Handle may be called from many threads at once. Every failure
// (a frame that does not verify, an unknown operation, bad arguments, an
// engine error) becomes an Error reply; nothing throws.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/engine.h"
#include "net/key_ring.h"
#include "net/metrics.h"
#include "net/protocol.h"
#include "net/search_batcher.h"

namespace mnemo::net {

class RequestHandler {
 public:
  using Frame = std::shared_ptr<const InFrame>;
  using Done = std::function<void(Reply reply)>;

  // Not owned; all must outlive the handler. With `keys`, every request must
  // carry a key that allows it (net/key_ring.h); without, none is needed.
  RequestHandler(engine::Engine* engine, SearchBatcher* batcher, Metrics* metrics,
                 const KeyRing* keys = nullptr)
      : engine_(engine), batcher_(batcher), metrics_(metrics), keys_(keys) {}

  // Handles one frame (without its length prefix). Calls `done` once per
  // reply frame, on this thread or, for batched searches, another; `frame`
  // is kept alive until then. Only a streamed get_kv has several: each but
  // the last with Reply::more set.
  void Handle(Frame frame, Done done);

  // Whether `frame` is a small search (at most 16 KiB): the server runs
  // those on the I/O thread.
  static bool IsSearch(const InFrame& frame);
  // Whether the request may run before its attachment has arrived (a
  // put_kv: it waits for each layer through frame.progress).
  static bool CanStream(const InFrame& frame);

 private:
  engine::Engine* const engine_;
  SearchBatcher* const batcher_;
  Metrics* const metrics_;
  const KeyRing* const keys_;
};

}  // namespace mnemo::net

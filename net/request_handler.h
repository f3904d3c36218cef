// RequestHandler: executes one request frame against the engine and builds
// its reply. It knows nothing of sockets: the server, the fuzzer and tests
// all drive it the same way. What each operation is and does is in
// net/operations.h; this class verifies, authorizes, times and answers.
//
// Thread-safe; Handle may be called from many threads at once. Every failure
// (a frame that does not verify, an unknown operation, bad arguments, an
// engine error, an exception thrown while handling) becomes an Error reply:
// nothing escapes Handle, and the server goes on serving.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "engine/engine.h"
#include "engine/search_batcher.h"
#include "net/key_ring.h"
#include "net/metrics.h"
#include "net/operations.h"
#include "net/protocol.h"

namespace mnemo::net {

class RequestHandler {
 public:
  using Frame = std::shared_ptr<const InFrame>;
  using Done = std::function<void(Reply reply)>;

  // Not owned; all must outlive the handler. With `keys`, every request must
  // carry a key that allows it (net/key_ring.h); without, none is needed.
  RequestHandler(engine::Engine* engine, engine::SearchBatcher* batcher, Metrics* metrics,
                 const KeyRing* keys = nullptr)
      : engine_(engine), batcher_(batcher), metrics_(metrics), keys_(keys) {}

  // Handles one frame (without its length prefix). Calls `done` once per
  // reply frame, on this thread or, for batched searches, another; `frame`
  // is kept alive until then. Only a streamed get_kv has several: each but
  // the last with Reply::more set. A frame that Classify verified is not
  // verified again.
  void Handle(Frame frame, Done done);

  // Where a frame whose attachment (if any) has arrived runs: kSearch for a
  // search of at most 16 KiB, which is verified here, on the thread that
  // read it (frame.verified records it); kOrdered for everything else, a
  // larger frame being verified on the pool.
  static Runs Classify(InFrame& frame);
  // Whether a frame whose attachment is still arriving may start now (a
  // put_kv, which waits for each layer through frame.progress); verifies it
  // here.
  static bool CanStream(InFrame& frame);
  // Whether a frame may have its attachment read at all, asked before the
  // attachment is buffered: with keys, the frame must verify and carry a
  // key that allows its operation (else the error to answer). Verifies and
  // records the frame, as CanStream does.
  Status Admit(InFrame& frame) const;

  // A seam for tests: replaces the handler of `type` (e.g. with one that
  // throws). Not thread-safe: call before any Handle.
  void OverrideForTesting(wire::Request type, Handler handler);

 private:
  // Verifies `frame` and records it; its row, or null when it does not
  // verify, has no body or is of an unknown type.
  static const Operation* VerifyHere(InFrame& frame);

  engine::Engine* const engine_;
  engine::SearchBatcher* const batcher_;
  Metrics* const metrics_;
  const KeyRing* const keys_;
  std::vector<std::pair<wire::Request, Handler>> overrides_;
};

}  // namespace mnemo::net

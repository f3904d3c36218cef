// The wire protocol's operations, one row each: what a request of each type
// is called, which key role it needs, which collection or KV space it
// targets, where it runs, and the handler that executes it against the
// engine. Everything that treats operations differently (RequestHandler,
// KeyRing, Metrics, the server's dispatch) reads this table; adding an
// operation is adding a row (and its table in net/mnemo.fbs).
//
// The handlers live by family: collection_ops.cc (collections, entries,
// backup), search_ops.cc (search), kv_ops.cc (KV spaces and segments).
#pragma once

#include <functional>
#include <memory>
#include <span>

#include <flatbuffers/flatbuffers.h>

#include "common/status.h"
#include "engine/engine.h"
#include "engine/search_batcher.h"
#include "net/key_ring.h"
#include "net/mnemo_generated.h"
#include "net/protocol.h"

namespace mnemo::net {

// Where a request runs once read.
enum class Runs {
  // On the compute pool, after every earlier ordered request of its
  // connection has finished (writes apply in the order they were sent).
  kOrdered,
  // Handed to the search batcher from the I/O thread that read it, in no
  // order with the connection's other requests (only when small: a large
  // search frame is verified and runs kOrdered).
  kSearch,
  // kOrdered, but started before its attachment has arrived; it waits for
  // the bytes it needs through InFrame::progress (put_kv).
  kStreamed,
};

// One request being executed: what a handler reads and how it answers.
struct Call {
  engine::Engine& engine;
  engine::SearchBatcher& batcher;
  const wire::RequestFrame& frame;  // verified; its body (frame.request()) is present
  std::shared_ptr<const InFrame> in;  // owns the bytes `frame` points into, and the attachment
  const Grant* grant;  // the key's, when the daemon needs keys; else null
  uint64_t id() const { return frame.request_id(); }
};

// Answers a request: called once with the last (or only) reply, or the
// error that ends it. A streamed reply's earlier parts go out through a
// Send first, each with Reply::more set.
using Respond = std::function<void(Result<Reply>)>;
using Send = std::function<void(Reply)>;
// Runs the operation; calls `respond` exactly once, on this thread or (a
// search) on the thread that runs its batch. `send` takes the parts of a
// streamed reply before the last. May throw; RequestHandler turns that into
// an Internal error reply.
using Handler = void (*)(const Call& call, const Send& send, Respond respond);

struct Operation {
  wire::Request type = wire::Request::NONE;
  const char* name = "unknown";  // for logs, metrics and errors: "search", "put_kv"
  Role role = Role::kAdmin;      // the least key role allowed to ask for it
  // The collection or KV space the request names (key bindings apply to
  // it); nullptr for operations on the whole store.
  const flatbuffers::String* (*target)(const wire::RequestFrame&) = nullptr;
  Runs runs = Runs::kOrdered;
  bool takes_attachment = false;  // only put_kv's layers come in an attachment
  Handler handler = nullptr;
};

// The row of `type`; nullptr for a type this server does not know.
const Operation* FindOperation(wire::Request type);
// The operation's name; "unknown" for a type no row has.
const char* RequestName(wire::Request type);

// The families' rows (each defined in its own file).
std::span<const Operation> CollectionOperations();
std::span<const Operation> SearchOperations();
std::span<const Operation> KvOperations();

// Handler helpers shared by the families.
// A finished ResponseFrame of `type` around `body`.
Reply FinishReply(flatbuffers::FlatBufferBuilder& b, uint64_t request_id, wire::Response type,
                  flatbuffers::Offset<void> body);
// The collection a request names; InvalidArgument when it names none.
Result<std::shared_ptr<engine::Collection>> LookupCollection(engine::Engine& engine,
                                                             const flatbuffers::String* name);
// An Ack reply carrying `count`.
Reply AckReply(uint64_t request_id, uint64_t count);
// A handler for operations that answer at once: Result<Reply> F(const Call&).
template <Result<Reply> (*F)(const Call&)>
void AnswerNow(const Call& call, const Send&, Respond respond) {
  respond(F(call));
}
// The target accessor of a request table T whose target field is F.
template <typename T, const flatbuffers::String* (T::*F)() const>
const flatbuffers::String* TargetOf(const wire::RequestFrame& f) {
  auto* request = static_cast<const T*>(f.request());
  return request ? (request->*F)() : nullptr;
}

}  // namespace mnemo::net

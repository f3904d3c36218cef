#include "net/operations.h"

#include <array>

namespace mnemo::net {
namespace {

// The rows of every family, indexed by wire::Request.
class Table {
 public:
  Table() {
    for (auto family : {CollectionOperations(), SearchOperations(), KvOperations()}) {
      for (const Operation& op : family) rows_[size_t(op.type)] = &op;
    }
  }
  const Operation* Find(wire::Request type) const {
    const size_t i = size_t(type);
    return i < rows_.size() ? rows_[i] : nullptr;
  }

 private:
  std::array<const Operation*, size_t(wire::Request::MAX) + 1> rows_{};
};

const Table& TheTable() {
  static const Table table;
  return table;
}

}  // namespace

const Operation* FindOperation(wire::Request type) { return TheTable().Find(type); }

const char* RequestName(wire::Request type) {
  const Operation* op = FindOperation(type);
  return op ? op->name : "unknown";
}

Reply FinishReply(flatbuffers::FlatBufferBuilder& b, uint64_t request_id, wire::Response type,
                  flatbuffers::Offset<void> body) {
  b.Finish(wire::CreateResponseFrame(b, kProtocolVersion, request_id, type, body));
  return b.Release();
}

Result<std::shared_ptr<engine::Collection>> LookupCollection(engine::Engine& engine,
                                                             const flatbuffers::String* name) {
  if (name == nullptr) return Status::InvalidArgument("no collection name given");
  return engine.GetCollection(name->string_view());
}

Reply AckReply(uint64_t request_id, uint64_t count) {
  flatbuffers::FlatBufferBuilder b(64);
  return FinishReply(b, request_id, wire::Response::Ack, wire::CreateAck(b, count).Union());
}

}  // namespace mnemo::net

// Handlers of the operations on collections, their entries and the store.
#include <string_view>
#include <vector>

#include "net/conversions.h"
#include "net/operations.h"

namespace mnemo::net {
namespace {

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

Reply InfoReply(uint64_t id, const engine::CollectionStats& s) {
  FlatBufferBuilder b(256);
  return FinishReply(b, id, wire::Response::CollectionInfo, ToWire(b, s).Union());
}

Result<Reply> CreateCollection(const Call& c) {
  MNEMO_ASSIGN_OR_RETURN(auto created,
                         c.engine.CreateCollection(FromWire(*c.frame.request_as_CreateCollection())));
  return InfoReply(c.id(), created->Stats());
}

Result<Reply> DropCollection(const Call& c) {
  MNEMO_RETURN_IF_ERROR(c.engine.DropCollection(Str(c.frame.request_as_DropCollection()->name())));
  return AckReply(c.id(), 1);
}

Result<Reply> ListCollections(const Call& c) {
  FlatBufferBuilder b(1024);
  std::vector<Offset<wire::CollectionInfo>> infos;
  for (const auto& s : c.engine.ListCollections()) {
    if (c.grant == nullptr || c.grant->Allows(s.name)) infos.push_back(ToWire(b, s));
  }
  auto body = wire::CreateCollectionListDirect(b, &infos);
  return FinishReply(b, c.id(), wire::Response::CollectionList, body.Union());
}

Result<Reply> GetStats(const Call& c) {
  MNEMO_ASSIGN_OR_RETURN(auto coll, LookupCollection(c.engine, c.frame.request_as_GetStats()->name()));
  return InfoReply(c.id(), coll->Stats());
}

Result<Reply> Backup(const Call& c) {
  MNEMO_RETURN_IF_ERROR(c.engine.Backup(Str(c.frame.request_as_Backup()->dir())));
  return AckReply(c.id(), 1);
}

Result<Reply> Train(const Call& c) {
  MNEMO_ASSIGN_OR_RETURN(auto coll, LookupCollection(c.engine, c.frame.request_as_Train()->name()));
  MNEMO_RETURN_IF_ERROR(coll->Train());
  return AckReply(c.id(), 1);
}

Result<Reply> Upsert(const Call& c) {
  auto* r = c.frame.request_as_Upsert();
  MNEMO_ASSIGN_OR_RETURN(auto coll, LookupCollection(c.engine, r->collection()));
  std::vector<std::string_view> payloads;
  if (r->payloads()) {
    payloads.reserve(r->payloads()->size());
    for (const auto* p : *r->payloads()) payloads.push_back(Bytes(p->data()));
  }
  engine::EntryBatch batch{Span(r->ids()), Span(r->vectors()), Span(r->groups()), payloads};
  MNEMO_RETURN_IF_ERROR(coll->Upsert(batch));
  return AckReply(c.id(), batch.ids.size());
}

Result<Reply> Get(const Call& c) {
  auto* r = c.frame.request_as_Get();
  MNEMO_ASSIGN_OR_RETURN(auto coll, LookupCollection(c.engine, r->collection()));
  MNEMO_ASSIGN_OR_RETURN(engine::EntryList list, coll->Get(Span(r->ids())));
  FlatBufferBuilder b(256 + list.vectors.size() * 4);
  return FinishReply(b, c.id(), wire::Response::Entries, ToWire(b, list).Union());
}

Result<Reply> Delete(const Call& c) {
  auto* r = c.frame.request_as_Delete();
  MNEMO_ASSIGN_OR_RETURN(auto coll, LookupCollection(c.engine, r->collection()));
  MNEMO_ASSIGN_OR_RETURN(uint64_t n, coll->Delete(Span(r->ids())));
  return AckReply(c.id(), n);
}

constexpr Operation kRows[] = {
    {wire::Request::CreateCollection, "create_collection", Role::kAdmin, nullptr, Runs::kOrdered,
     false, AnswerNow<CreateCollection>},
    {wire::Request::DropCollection, "drop_collection", Role::kAdmin, nullptr, Runs::kOrdered, false,
     AnswerNow<DropCollection>},
    {wire::Request::ListCollections, "list_collections", Role::kRead, nullptr, Runs::kOrdered,
     false, AnswerNow<ListCollections>},
    {wire::Request::GetStats, "stats", Role::kRead, TargetOf<wire::GetStats, &wire::GetStats::name>,
     Runs::kOrdered, false, AnswerNow<GetStats>},
    {wire::Request::Backup, "backup", Role::kAdmin, nullptr, Runs::kOrdered, false,
     AnswerNow<Backup>},
    {wire::Request::Train, "train", Role::kWrite, TargetOf<wire::Train, &wire::Train::name>,
     Runs::kOrdered, false, AnswerNow<Train>},
    {wire::Request::Upsert, "upsert", Role::kWrite,
     TargetOf<wire::Upsert, &wire::Upsert::collection>, Runs::kOrdered, false, AnswerNow<Upsert>},
    {wire::Request::Get, "get", Role::kRead, TargetOf<wire::Get, &wire::Get::collection>,
     Runs::kOrdered, false, AnswerNow<Get>},
    {wire::Request::Delete, "delete", Role::kWrite,
     TargetOf<wire::Delete, &wire::Delete::collection>, Runs::kOrdered, false, AnswerNow<Delete>},
};

}  // namespace

std::span<const Operation> CollectionOperations() { return kRows; }

}  // namespace mnemo::net

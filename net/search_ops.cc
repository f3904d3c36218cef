// The search operation: checked here, then batched by the engine's
// SearchBatcher, which answers on the thread that runs the batch.
#include <algorithm>
#include <exception>
#include <vector>
#include <string>

#include "net/conversions.h"
#include "net/operations.h"

namespace mnemo::net {
namespace {

Reply SearchReply(uint64_t request_id, const engine::SearchResult& r,
                  const engine::EntryList* entries) {
  flatbuffers::FlatBufferBuilder b(64 + r.ids.size() * 12 +
                                   (entries ? entries->vectors.size() * 4 + entries->ids.size() * 32 : 0));
  flatbuffers::Offset<wire::Entries> found = entries ? ToWire(b, *entries) : 0;
  return FinishReply(b, request_id, wire::Response::SearchResult, ToWire(b, r, found).Union());
}

// The distinct ids among a search's hits, for a search with entries.
std::vector<uint64_t> DistinctHits(const engine::SearchResult& r) {
  std::vector<uint64_t> ids;
  for (int64_t id : r.ids) {
    if (id >= 0) ids.push_back(uint64_t(id));
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

void Search(const Call& c, const Send&, Respond respond) {
  auto* r = c.frame.request_as_Search();
  auto collection = LookupCollection(c.engine, r->collection());
  if (!collection.ok()) return respond(collection.status());
  engine::SearchRequest req;
  req.queries = Span(r->queries());
  req.k = r->k();
  req.nprobe = r->nprobe();
  req.ef = r->ef();
  if (r->has_group()) req.group = r->group();
  // The one scan of the queries: the batcher trusts it.
  if (Status st = (*collection)->ValidateSearch(req); !st.ok()) return respond(st);
  // `in` owns the query floats until the batch has run.
  c.batcher.Submit(*collection, req,
                   [in = c.in, id = c.id(), respond = std::move(respond), coll = *collection,
                    with_entries = r->with_entries()](Result<engine::SearchResult> result) {
                     if (!result.ok()) return respond(result.status());
                     // On the thread that ran the batch: nothing may escape.
                     Result<Reply> reply = Status::Internal("search reply could not be built");
                     try {
                       if (with_entries) {
                         std::vector<uint64_t> hits = DistinctHits(*result);
                         Result<engine::EntryList> entries = engine::EntryList{};
                         if (!hits.empty()) entries = coll->Get(hits);  // Get refuses no ids
                         if (!entries.ok()) return respond(entries.status());
                         reply = SearchReply(id, *result, &*entries);
                       } else {
                         reply = SearchReply(id, *result, nullptr);
                       }
                     } catch (const std::exception& e) {
                       reply = Status::Internal(std::string("search reply: ") + e.what());
                     }
                     respond(std::move(reply));
                   });
}

constexpr Operation kRows[] = {
    {wire::Request::Search, "search", Role::kRead,
     TargetOf<wire::Search, &wire::Search::collection>, Runs::kSearch, false, Search},
};

}  // namespace

std::span<const Operation> SearchOperations() { return kRows; }

}  // namespace mnemo::net

// Client: a blocking C++ client for mnemod.
//
// One Client is one TCP connection and is not thread-safe: give each thread
// its own. Server errors come back as the Status the server sent (same code
// and message); a broken connection is kUnavailable, after which the client
// must be reconnected.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <flatbuffers/flatbuffers.h>

#include "common/status.h"
#include "engine/types.h"

namespace mnemo::net {

struct SearchOptions {
  uint32_t k = 10;
  uint32_t nprobe = 0;
  uint32_t ef = 0;
  std::optional<uint64_t> group;
};

class Client {
 public:
  // busy_poll: while a reply is awaited, poll the socket this long before
  // sleeping in the kernel. A sleeping thread is woken by the reply's
  // arrival, which on a virtual machine can cost tens of microseconds; a
  // latency-bound caller trades a core's spinning for that. 0: never poll.
  static Result<std::unique_ptr<Client>> Connect(
      const std::string& address, const std::string& api_key = "",
      std::chrono::microseconds busy_poll = std::chrono::microseconds(0));
  ~Client();

  Result<engine::CollectionStats> CreateCollection(const engine::CollectionConfig& config);
  Status DropCollection(std::string_view name);
  Result<std::vector<engine::CollectionStats>> ListCollections();
  Result<engine::CollectionStats> Stats(std::string_view name);
  Status Train(std::string_view name);
  // A consistent copy of the daemon's store in `dir` on its machine (see
  // Engine::Backup).
  Status Backup(std::string_view dir);
  Result<uint64_t> Upsert(std::string_view name, std::span<const uint64_t> ids,
                          std::span<const float> vectors, std::span<const uint64_t> groups = {},
                          std::span<const std::string_view> payloads = {});
  // Pipelined upserts: SendUpsert returns once the request is sent;
  // ReceiveUpsert returns the replies in the order the upserts were sent.
  // The server applies a connection's writes in that order too. Other calls
  // fail with FailedPrecondition while replies are still to be received.
  Status SendUpsert(std::string_view name, std::span<const uint64_t> ids,
                    std::span<const float> vectors, std::span<const uint64_t> groups = {},
                    std::span<const std::string_view> payloads = {});
  Result<uint64_t> ReceiveUpsert();
  Result<engine::EntryList> Get(std::string_view name, std::span<const uint64_t> ids);
  Result<uint64_t> Delete(std::string_view name, std::span<const uint64_t> ids);
  Result<engine::SearchResult> Search(std::string_view name, std::span<const float> queries,
                                      const SearchOptions& options = {});

  // KV spaces (engine/kv_space.h). keys/values: [layers, kv_heads, tokens,
  // head_dim] in the space's dtype, as bytes; hashes are 32 bytes each.
  Result<engine::KvSpaceStats> CreateKvSpace(const engine::KvSpaceConfig& config);
  Status DropKvSpace(std::string_view name);
  Result<engine::KvSpaceStats> KvStats(std::string_view name);
  Status PutKv(std::string_view space, std::string_view hash, std::span<const uint8_t> keys,
               std::span<const uint8_t> values, uint32_t tokens = 0);
  Result<engine::KvSegment> GetKv(std::string_view space, std::string_view hash,
                                  std::span<const uint32_t> layers = {});
  Result<size_t> MatchPrefix(std::string_view space, std::string_view hashes);

  // Raw access, for tests and pipelining: sends a FlatBuffer and an
  // attachment with their frame header; receives one reply's FlatBuffer
  // (and keeps its attachment).
  Status SendFrame(std::span<const uint8_t> frame, std::span<const uint8_t> attachment = {});
  Status SendRaw(std::span<const uint8_t> bytes);  // no header added
  Result<std::vector<uint8_t>> ReceiveFrame();
  const std::vector<uint8_t>& last_attachment() const;  // of the last frame received

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mnemo::net

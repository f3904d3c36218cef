// Writes one valid request frame per operation into DIR, as the seed corpus
// for frame_fuzzer (random bytes alone rarely make a FlatBuffer).
#include <cstdio>
#include <string>
#include <vector>

#include "net/protocol.h"

using namespace mnemo;
using namespace mnemo::net;

static void Write(const std::string& path, flatbuffers::FlatBufferBuilder& b) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(b.GetBufferPointer(), 1, b.GetSize(), f);
  std::fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  std::string dir = argv[1];
  std::vector<float> q = {1, 2, 3, 4}, v = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<uint64_t> ids = {1, 2}, groups = {3, 4};
  int n = 0;
  auto emit = [&](wire::Request type, auto make) {
    flatbuffers::FlatBufferBuilder b;
    auto body = make(b);
    b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, 7, 0, type, body));
    Write(dir + "/seed" + std::to_string(n++), b);
  };
  emit(wire::Request::Search, [&](auto& b) { return wire::CreateSearchDirect(b, "docs", &q, 3).Union(); });
  emit(wire::Request::Search, [&](auto& b) {
    return wire::CreateSearchDirect(b, "hnsw", &q, 2, 0, 20, true, 3).Union();
  });
  emit(wire::Request::Upsert, [&](auto& b) {
    std::vector<flatbuffers::Offset<wire::Payload>> ps;
    std::vector<uint8_t> text = {'h', 'i'};
    ps.push_back(wire::CreatePayloadDirect(b, &text));
    ps.push_back(wire::CreatePayloadDirect(b, &text));
    return wire::CreateUpsertDirect(b, "docs", &ids, &v, &groups, &ps).Union();
  });
  emit(wire::Request::Get, [&](auto& b) { return wire::CreateGetDirect(b, "docs", &ids).Union(); });
  emit(wire::Request::Delete, [&](auto& b) { return wire::CreateDeleteDirect(b, "hnsw", &ids).Union(); });
  emit(wire::Request::GetStats, [&](auto& b) { return wire::CreateGetStatsDirect(b, "docs").Union(); });
  emit(wire::Request::ListCollections, [&](auto& b) { return wire::CreateListCollections(b).Union(); });
  emit(wire::Request::CreateCollection, [&](auto& b) {
    return wire::CreateCreateCollectionDirect(b, "new", 4, "l2", "IVF2,Flat").Union();
  });
  emit(wire::Request::Train, [&](auto& b) { return wire::CreateTrainDirect(b, "docs").Union(); });
  std::vector<uint8_t> hash(32, 7), two(64, 7), kv(2 * 1 * 3 * 4 * 2, 60);  // 3 tokens of f16
  std::vector<uint32_t> layers = {1};
  emit(wire::Request::MatchPrefix, [&](auto& b) { return wire::CreateMatchPrefixDirect(b, "kv", &two).Union(); });
  emit(wire::Request::PutKv, [&](auto& b) { return wire::CreatePutKvDirect(b, "kv", &hash, &kv, &kv, 3).Union(); });
  emit(wire::Request::GetKv, [&](auto& b) { return wire::CreateGetKvDirect(b, "kv", &hash, &layers).Union(); });
  emit(wire::Request::GetKvStats, [&](auto& b) { return wire::CreateGetKvStatsDirect(b, "kv").Union(); });
  emit(wire::Request::CreateKvSpace, [&](auto& b) {
    return wire::CreateCreateKvSpaceDirect(b, "kv2", 2, 1, 4, "bf16", 4, "entropy", 4096, 1).Union();
  });
  emit(wire::Request::Backup, [&](auto& b) { return wire::CreateBackupDirect(b, "/nonexistent/bk").Union(); });
  std::printf("wrote %d seeds to %s\n", n, dir.c_str());
  return 0;
}

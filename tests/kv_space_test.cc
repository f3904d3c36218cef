// KV spaces in the engine: put/get/match_prefix, layers, LRU eviction, time
// to live (through the clock seam), persistence, and refused input.
#include "engine/kv_space.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include <rocksdb/env.h>

#include "engine/engine.h"
#include "tests/failing_fs.h"
#include "tests/test_util.h"

namespace mnemo::engine {
namespace {

using mnemo::testing::TempDir;

constexpr uint32_t kLayers = 3, kHeads = 2, kDim = 8, kChunk = 16;

std::string HashOf(int i) {
  std::string h(32, '\0');
  std::memcpy(h.data(), &i, sizeof(i));
  h[31] = 'x';
  return h;
}

// [layers, heads, tokens, dim] f32 with values that name their position.
std::vector<uint8_t> Tensor(uint32_t tokens, float salt) {
  std::vector<float> x(size_t(kLayers) * kHeads * tokens * kDim);
  for (size_t i = 0; i < x.size(); ++i) x[i] = salt + float(i) * 0.25f;
  std::vector<uint8_t> b(x.size() * 4);
  std::memcpy(b.data(), x.data(), b.size());
  return b;
}

class KvSpaceTest : public ::testing::Test {
 protected:
  void Open() {
    engine_.reset();
    auto o = mnemo::testing::OptionsFor(dir_.path());
    o.now_ms = [this] { return now_ms_; };
    engine_ = std::move(Engine::Open(o)).value();
  }
  std::shared_ptr<KvSpace> Create(const std::string& codec = "raw", uint64_t capacity = 0,
                                  uint64_t ttl = 0) {
    KvSpaceConfig c{"s", kLayers, kHeads, kDim, "f32", kChunk, codec, capacity, ttl};
    auto s = engine_->CreateKvSpace(c);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return *s;
  }
  std::shared_ptr<KvSpace> Space() { return engine_->GetKvSpace("s").value(); }
  // The stored bytes of one raw segment of kChunk tokens (a put into a
  // space "s" dropped again).
  uint64_t SegmentBytes() {
    auto probe = Create();
    EXPECT_TRUE(probe->Put(HashOf(0), Tensor(kChunk, 0), Tensor(kChunk, 0)).ok());
    const uint64_t one = probe->Stats().bytes_stored;
    EXPECT_TRUE(engine_->DropKvSpace("s").ok());
    return one;
  }
  bool Has(int i) { return Space()->Get(HashOf(i), {}).ok(); }

  TempDir dir_;
  int64_t now_ms_ = 1'000'000;
  std::unique_ptr<Engine> engine_;
};

TEST_F(KvSpaceTest, RawRoundTripIsBitExactAndLayersCanBeChosen) {
  Open();
  auto s = Create();
  auto k = Tensor(kChunk, 1), v = Tensor(kChunk, 2);
  ASSERT_TRUE(s->Put(HashOf(1), k, v).ok());
  auto all = s->Get(HashOf(1), {});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_EQ(all->tokens, kChunk);
  EXPECT_EQ(all->keys, k);
  EXPECT_EQ(all->values, v);
  const size_t layer = size_t(kHeads) * kChunk * kDim * 4;
  std::vector<uint32_t> pick = {2, 0};
  auto some = s->Get(HashOf(1), pick);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->layers, pick);
  EXPECT_TRUE(std::equal(k.begin() + 2 * layer, k.begin() + 3 * layer, some->keys.begin()));
  EXPECT_TRUE(std::equal(k.begin(), k.begin() + layer, some->keys.begin() + layer));
  // A layer asked for twice is refused: a reply never outgrows its segment
  // (layers = [7, 7, 7, ...] would make a 16 KB request a 1 GiB reply).
  std::vector<uint32_t> twice = {1, 0, 1};
  auto dup = s->Get(HashOf(1), twice);
  EXPECT_EQ(dup.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dup.status().message().find("layer 1 is asked for twice"), std::string::npos);
  std::string hashes = HashOf(1);
  EXPECT_EQ(s->Locate(hashes, twice).status().code(), StatusCode::kInvalidArgument);
  // A short last chunk is fine: tokens <= chunk_tokens.
  ASSERT_TRUE(s->Put(HashOf(2), Tensor(5, 3), Tensor(5, 4)).ok());
  EXPECT_EQ(s->Get(HashOf(2), {})->tokens, 5u);
}

TEST_F(KvSpaceTest, MatchPrefixCountsLeadingStoredChunks) {
  Open();
  auto s = Create();
  for (int i : {1, 2, 3}) ASSERT_TRUE(s->Put(HashOf(i), Tensor(kChunk, i), Tensor(kChunk, i)).ok());
  auto join = [](std::vector<int> ids) {
    std::string all;
    for (int i : ids) all += HashOf(i);
    return all;
  };
  EXPECT_EQ(*s->MatchPrefix(join({1, 2, 3})), 3u);  // the same prompt
  EXPECT_EQ(*s->MatchPrefix(join({1, 2, 9, 3})), 2u);  // diverges at the third chunk
  EXPECT_EQ(*s->MatchPrefix(join({9, 1})), 0u);  // another prompt
  EXPECT_EQ(*s->MatchPrefix(""), 0u);
  EXPECT_EQ(s->MatchPrefix("short").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(KvSpaceTest, CapacityEvictsLeastRecentlyUsedFirst) {
  Open();
  const uint64_t one = SegmentBytes();
  auto s = Create("raw", 3 * one);
  for (int i : {1, 2, 3}) ASSERT_TRUE(s->Put(HashOf(i), Tensor(kChunk, i), Tensor(kChunk, i)).ok());
  ASSERT_TRUE(s->Get(HashOf(1), {}).ok());  // 1 is now the most recent; 2 the least
  ASSERT_TRUE(s->Put(HashOf(4), Tensor(kChunk, 4), Tensor(kChunk, 4)).ok());
  EXPECT_FALSE(Has(2));
  EXPECT_TRUE(Has(1) && Has(3) && Has(4));
  EXPECT_EQ(s->MatchPrefix(HashOf(3)).value(), 1u);  // a match is a use too: 1 goes next
  ASSERT_TRUE(s->Put(HashOf(5), Tensor(kChunk, 5), Tensor(kChunk, 5)).ok());
  EXPECT_EQ(s->Stats().evictions, 2u);
  EXPECT_LE(s->Stats().bytes_stored, 3 * one);
  EXPECT_EQ(s->Stats().segments, 3u);
  // A segment larger than the whole space is refused, and nothing changes.
  auto tiny = engine_->CreateKvSpace({"tiny", kLayers, kHeads, kDim, "f32", kChunk, "raw", one / 2, 0});
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ((*tiny)->Put(HashOf(1), Tensor(kChunk, 1), Tensor(kChunk, 1)).code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ((*tiny)->Stats().segments, 0u);
}

TEST_F(KvSpaceTest, SegmentsExpireAfterTheirTimeToLive) {
  Open();
  auto s = Create("raw", 0, /*ttl=*/60);
  ASSERT_TRUE(s->Put(HashOf(1), Tensor(kChunk, 1), Tensor(kChunk, 1)).ok());
  now_ms_ += 30'000;
  ASSERT_TRUE(s->Put(HashOf(2), Tensor(kChunk, 2), Tensor(kChunk, 2)).ok());
  now_ms_ += 31'000;  // 1 is 61 s old, 2 is 31 s old
  EXPECT_EQ(*s->MatchPrefix(HashOf(1) + HashOf(2)), 0u);
  EXPECT_EQ(*s->MatchPrefix(HashOf(2)), 1u);
  EXPECT_EQ(s->Get(HashOf(1), {}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().expirations, 1u);
  EXPECT_EQ(s->Stats().segments, 1u);
  Open();  // gone for good, not just hidden
  EXPECT_EQ(Space()->Stats().segments, 1u);
}

TEST_F(KvSpaceTest, SegmentsAndRecencySurviveARestart) {
  Open();
  auto probe = Create("int8");
  ASSERT_TRUE(probe->Put(HashOf(0), Tensor(kChunk, 0), Tensor(kChunk, 0)).ok());
  const uint64_t one = probe->Stats().bytes_stored;
  ASSERT_TRUE(engine_->DropKvSpace("s").ok());
  auto s = Create("int8", 4 * one);  // room for exactly 4
  for (int i = 1; i <= 4; ++i) ASSERT_TRUE(s->Put(HashOf(i), Tensor(kChunk, i), Tensor(kChunk, i)).ok());
  const auto before = s->Stats();
  ASSERT_EQ(before.segments, 4u);
  auto got = s->Get(HashOf(3), {});
  ASSERT_TRUE(got.ok());
  s.reset();
  Open();
  auto after = Space()->Stats();
  EXPECT_EQ(after.segments, 4u);
  EXPECT_EQ(after.bytes_stored, before.bytes_stored);
  EXPECT_EQ(after.config.codec, "int8");
  EXPECT_EQ(after.config.capacity_bytes, 4 * one);
  auto again = Space()->Get(HashOf(3), {});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->keys, got->keys);  // the same decoded bytes
  EXPECT_EQ(*Space()->MatchPrefix(HashOf(1) + HashOf(2) + HashOf(3) + HashOf(4)), 4u);
  // After a restart recency is the order of the puts, then this run's uses:
  // the match above used 1..4 in order, so 1 is the least recent.
  ASSERT_TRUE(Space()->Put(HashOf(5), Tensor(kChunk, 5), Tensor(kChunk, 5)).ok());
  EXPECT_FALSE(Has(1));
  EXPECT_TRUE(Has(2) && Has(5));
}

TEST_F(KvSpaceTest, WrongShapesAndNamesAreRefusedAndChangeNothing) {
  Open();
  auto s = Create();
  auto k = Tensor(kChunk, 1);
  EXPECT_EQ(s->Put(HashOf(1), k, Tensor(kChunk - 1, 1)).code(), StatusCode::kInvalidArgument);
  std::vector<uint8_t> odd(k.begin(), k.end() - 4);
  EXPECT_EQ(s->Put(HashOf(1), odd, odd).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Put(HashOf(1), Tensor(kChunk + 1, 1), Tensor(kChunk + 1, 1)).code(),
            StatusCode::kInvalidArgument);  // more tokens than a chunk
  EXPECT_EQ(s->Put(HashOf(1), {}, {}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Put(HashOf(1), k, k, kChunk - 1).code(), StatusCode::kInvalidArgument);  // tokens disagree
  EXPECT_EQ(s->Put("short", k, k).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Stats().segments, 0u);
  ASSERT_TRUE(s->Put(HashOf(1), k, k).ok());
  std::vector<uint32_t> bad_layer = {kLayers};
  EXPECT_EQ(s->Get(HashOf(1), bad_layer).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Get(HashOf(2), {}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().misses, 1u);

  KvSpaceConfig c{"t", kLayers, kHeads, kDim, "f64", kChunk, "raw", 0, 0};
  EXPECT_EQ(engine_->CreateKvSpace(c).status().code(), StatusCode::kInvalidArgument);
  c.dtype = "f16";
  c.codec = "int5";
  EXPECT_EQ(engine_->CreateKvSpace(c).status().code(), StatusCode::kInvalidArgument);
  c.codec = "raw";
  c.layers = 0;
  EXPECT_EQ(engine_->CreateKvSpace(c).status().code(), StatusCode::kInvalidArgument);
  c.layers = 1;
  c.name = "s";
  EXPECT_EQ(engine_->CreateKvSpace(c).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(engine_->GetKvSpace("nope").status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(engine_->DropKvSpace("s").ok());
  EXPECT_EQ(s->Put(HashOf(1), k, k).code(), StatusCode::kNotFound);
  Open();
  EXPECT_EQ(engine_->GetKvSpace("s").status().code(), StatusCode::kNotFound);
}

// Evicted, replaced and dropped segments give their value-log bytes back,
// and a restart finds exactly the live ones.
TEST_F(KvSpaceTest, ValueLogBytesFollowTheLiveSegments) {
  Open();
  auto probe = Create();
  ASSERT_TRUE(probe->Put(HashOf(0), Tensor(kChunk, 0), Tensor(kChunk, 0)).ok());
  const uint64_t one = probe->Stats().bytes_stored;
  EXPECT_EQ(engine_->value_log()->live_bytes(), one);
  ASSERT_TRUE(probe->Put(HashOf(0), Tensor(kChunk, 1), Tensor(kChunk, 1)).ok());  // replaced
  EXPECT_EQ(engine_->value_log()->live_bytes(), one);
  ASSERT_TRUE(engine_->DropKvSpace("s").ok());
  EXPECT_EQ(engine_->value_log()->live_bytes(), 0u);
  auto s = Create("raw", 2 * one);
  for (int i : {1, 2, 3}) ASSERT_TRUE(s->Put(HashOf(i), Tensor(kChunk, i), Tensor(kChunk, i)).ok());
  EXPECT_EQ(engine_->value_log()->live_bytes(), 2 * one);  // 1 was evicted
  s.reset();
  Open();
  EXPECT_EQ(engine_->value_log()->live_bytes(), 2 * one);
  auto got = Space()->Get(HashOf(3), {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->keys, Tensor(kChunk, 3));
  // Every file left holds something live, or is the one appended to.
  EXPECT_LE(engine_->value_log()->file_count(), 2u);
}

// Megabyte layers are read by several threads into the wire's layout (each
// layer's keys, then its values); a corrupt layer among them fails the read.
TEST_F(KvSpaceTest, BigLayersAreReadInParallelIntoTheWireLayout) {
  Open();
  constexpr uint32_t layers = 6, heads = 8, dim = 128, tokens = 512;  // 1 MiB per layer half
  KvSpaceConfig c{"big", layers, heads, dim, "f16", tokens, "raw", 0, 0};
  auto s = engine_->CreateKvSpace(c);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const size_t lb = size_t(heads) * tokens * dim * 2;
  std::vector<uint8_t> k(layers * lb), v(layers * lb);
  std::mt19937 rng(5);
  for (auto& b : k) b = uint8_t(rng());
  for (auto& b : v) b = uint8_t(rng());
  ASSERT_TRUE((*s)->Put(HashOf(1), k, v).ok());
  auto read = (*s)->Read(HashOf(1), {});
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ASSERT_EQ(read->layer_bytes, lb);
  std::vector<uint8_t> out(2 * layers * lb);
  ASSERT_TRUE((*s)->DecodeInterleavedInto(*read, out.data()).ok());
  for (size_t i = 0; i < layers; ++i) {
    EXPECT_EQ(0, std::memcmp(out.data() + 2 * i * lb, k.data() + i * lb, lb)) << i;
    EXPECT_EQ(0, std::memcmp(out.data() + (2 * i + 1) * lb, v.data() + i * lb, lb)) << i;
  }
  // Flip a byte inside the fourth layer's values in the log file.
  const storage::ValueRef& ref = read->stored[3];
  char path[32];
  std::snprintf(path, sizeof(path), "/kv-values/%06u.vlog", ref.file);
  {
    std::fstream f(dir_.path() + path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << dir_.path() + path;
    f.seekg(std::streamoff(ref.offset + ref.length - 100));
    char b = 0;
    f.read(&b, 1);
    b = char(b ^ 0x5a);
    f.seekp(std::streamoff(ref.offset + ref.length - 100));
    f.write(&b, 1);
  }
  auto st = (*s)->DecodeInterleavedInto(*read, out.data());
  EXPECT_EQ(st.code(), StatusCode::kCorruption) << st.ToString();
}

// What a same-host client does with a reservation: writes each layer (header,
// keys, values) into its lane's file through the file's path.
void FillReservation(const KvReservation& r, const std::vector<uint8_t>& keys,
                     const std::vector<uint8_t>& values) {
  ASSERT_EQ(keys.size(), r.layers * r.layer_bytes);
  const size_t lanes = r.lanes.size();
  for (uint32_t l = 0; l < r.layers; ++l) {
    const auto& lane = r.lanes[l % lanes];
    std::vector<uint8_t> layer(r.layer_header.begin(), r.layer_header.end());
    layer.insert(layer.end(), keys.begin() + l * r.layer_bytes, keys.begin() + (l + 1) * r.layer_bytes);
    layer.insert(layer.end(), values.begin() + l * r.layer_bytes, values.begin() + (l + 1) * r.layer_bytes);
    const int fd = ::open(lane.path.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << lane.path;
    const off_t at = off_t(lane.offset + (l / lanes) * r.stride());
    ASSERT_EQ(::pwrite(fd, layer.data(), layer.size(), at), ssize_t(layer.size()));
    ::close(fd);
  }
}

// A same-host put: the layers written in place into the value log's lanes,
// then stored under a hash; it reads back bit-exact, before and after a
// restart, and evicts like any other put.
TEST_F(KvSpaceTest, SameHostPutsStoreWhatTheWriterPutInPlace) {
  Open();
  const uint64_t one = SegmentBytes();
  auto s = Create("raw", 2 * one);
  for (int i : {1, 2, 3}) {
    auto r = s->Reserve(kChunk);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->lanes.size(), kLayers);  // one file per layer, up to the log's lanes
    FillReservation(*r, Tensor(kChunk, float(i)), Tensor(kChunk, float(-i)));
    ASSERT_TRUE(s->PutReserved(HashOf(i), r->id).ok());
    // A reservation is used once.
    EXPECT_EQ(s->PutReserved(HashOf(9), r->id).code(), StatusCode::kNotFound);
  }
  EXPECT_FALSE(Has(1));  // evicted: the space holds two
  EXPECT_EQ(s->Stats().bytes_stored, 2 * one);
  EXPECT_EQ(engine_->value_log()->live_bytes(), 2 * one);
  auto got = s->Get(HashOf(3), {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->keys, Tensor(kChunk, 3));
  EXPECT_EQ(got->values, Tensor(kChunk, -3));
  // Fewer tokens than a chunk (evicting 2, the least recently used).
  auto r = std::move(s->Reserve(5)).value();
  FillReservation(r, Tensor(5, 4), Tensor(5, 5));
  ASSERT_TRUE(s->PutReserved(HashOf(4), r.id).ok());
  s.reset();
  Open();
  got = Space()->Get(HashOf(3), {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->values, Tensor(kChunk, -3));
  got = Space()->Get(HashOf(4), {});
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->tokens, 5u);
  EXPECT_EQ(got->keys, Tensor(5, 4));
}

// Reservations that cannot be or were not used: refused up front for spaces
// that encode, lapsed after their time, bounded in number, given back on a
// failed put and on a drop; none of them stores anything or keeps bytes.
TEST_F(KvSpaceTest, SameHostReservationsLapseAreBoundedAndChangeNothingWhenUnused) {
  Open();
  auto q = engine_->CreateKvSpace({"q", kLayers, kHeads, kDim, "f32", kChunk, "int8", 0, 0});
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)->Reserve(kChunk).status().code(), StatusCode::kInvalidArgument);
  auto s = Create();
  EXPECT_EQ(s->Reserve(0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Reserve(kChunk + 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->PutReserved(HashOf(1), 12345).code(), StatusCode::kNotFound);

  auto lapsed = std::move(s->Reserve(kChunk)).value();
  EXPECT_GT(engine_->value_log()->live_bytes(), 0u);
  FillReservation(lapsed, Tensor(kChunk, 1), Tensor(kChunk, 1));
  now_ms_ += KvSpace::kReservationTtlMs;
  EXPECT_EQ(s->PutReserved(HashOf(1), lapsed.id).code(), StatusCode::kNotFound);
  EXPECT_EQ(engine_->value_log()->live_bytes(), 0u);

  // Bounded: one more than the limit is ResourceExhausted.
  std::vector<KvReservation> held;
  for (size_t i = 0; i < KvSpace::kMaxReservations; ++i) held.push_back(std::move(s->Reserve(1)).value());
  EXPECT_EQ(s->Reserve(1).status().code(), StatusCode::kResourceExhausted);
  // A put whose bytes were never written (the writer died) fails, gives its
  // range back, and stores nothing.
  EXPECT_EQ(s->PutReserved(HashOf(2), held.back().id).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->PutReserved("short", held.front().id).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Stats().segments, 0u);
  ASSERT_TRUE(s->Reserve(1).ok());  // room again
  ASSERT_TRUE(engine_->DropKvSpace("s").ok());
  EXPECT_EQ(engine_->value_log()->live_bytes(), 0u);
  EXPECT_EQ(s->Reserve(1).status().code(), StatusCode::kNotFound);
}

// An engine whose files go through a FailingFs, with a raw space "s".
struct EngineOnFailingFs {
  explicit EngineOnFailingFs(bool sync_writes = false)
      : fs(std::make_shared<mnemo::testing::FailingFs>(rocksdb::FileSystem::Default())),
        env(rocksdb::NewCompositeEnv(fs)) {
    auto o = mnemo::testing::OptionsFor(dir.path());
    o.env = env.get();
    o.sync_writes = sync_writes;
    engine = std::move(Engine::Open(o)).value();
    space = std::move(engine->CreateKvSpace({"s", kLayers, kHeads, kDim, "f32", kChunk, "raw", 0, 0})).value();
  }
  TempDir dir;
  std::shared_ptr<mnemo::testing::FailingFs> fs;
  std::unique_ptr<rocksdb::Env> env;
  std::unique_ptr<Engine> engine;
  std::shared_ptr<KvSpace> space;  // destroyed first, then the engine, then the env
};

// With --sync-writes a same-host put syncs the lanes' files before it
// commits; a failed sync fails the put, which stores nothing.
TEST(KvSpaceSyncTest, AFailedSyncFailsTheSameHostPutAndStoresNothing) {
  EngineOnFailingFs e(/*sync_writes=*/true);
  auto r = std::move(e.space->Reserve(kChunk)).value();
  FillReservation(r, Tensor(kChunk, 1), Tensor(kChunk, 2));
  e.fs->fail_sync = true;
  const Status st = e.space->PutReserved(HashOf(1), r.id);
  EXPECT_EQ(st.code(), StatusCode::kIOError) << st.ToString();
  EXPECT_EQ(e.space->Stats().segments, 0u);
  EXPECT_EQ(e.engine->value_log()->live_bytes(), 0u);
  e.fs->fail_sync = false;
  r = std::move(e.space->Reserve(kChunk)).value();
  FillReservation(r, Tensor(kChunk, 1), Tensor(kChunk, 2));
  ASSERT_TRUE(e.space->PutReserved(HashOf(1), r.id).ok());
  EXPECT_EQ(e.space->Get(HashOf(1), {})->values, Tensor(kChunk, 2));
}

// Same-host gets: Locate names where each asked layer of each segment lies;
// read through the files' paths, the ranges decode to what Get returns, and
// equal what ReadStoredInto (the encoded reply over the network) sends.
// The files stay as they were after the segments are replaced (the lease).
TEST_F(KvSpaceTest, LocateNamesTheStoredLayersForReadersOnThisHost) {
  Open();
  auto s = Create("int8");
  for (int i : {1, 2, 3}) {
    ASSERT_TRUE(s->Put(HashOf(i), Tensor(kChunk, float(i)), Tensor(kChunk, float(-i))).ok());
  }
  const std::vector<uint32_t> pick = {2, 0};
  auto loc = s->Locate(HashOf(3) + HashOf(1), pick);
  ASSERT_TRUE(loc.ok()) << loc.status().ToString();
  EXPECT_EQ(loc->layers, pick);
  EXPECT_EQ(loc->tokens, (std::vector<uint32_t>{kChunk, kChunk}));
  ASSERT_EQ(loc->ranges.size(), 4u);
  EXPECT_EQ(loc->lease_ms, KvSpace::kReaderLeaseMs);
  std::vector<std::string> stored;
  for (const auto& r : loc->ranges) {
    ASSERT_LT(r.file, loc->files.size());
    stored.push_back(mnemo::testing::ReadFileRange(loc->files[r.file].path, r.offset, r.length));
  }
  const kvcache::LayerShape shape{kHeads, kChunk, kDim};
  for (size_t seg = 0; seg < 2; ++seg) {
    const int i = seg == 0 ? 3 : 1;
    auto want = std::move(s->Get(HashOf(i), pick)).value();
    std::vector<uint8_t> k, v;
    for (size_t j = 0; j < 2; ++j) ASSERT_TRUE(kvcache::DecodeLayer(stored[seg * 2 + j], shape, &k, &v).ok());
    EXPECT_EQ(k, want.keys);
    EXPECT_EQ(v, want.values);
    auto read = std::move(s->Read(HashOf(i), pick)).value();
    std::string sent(loc->ranges[seg * 2].length + loc->ranges[seg * 2 + 1].length, '\0');
    ASSERT_TRUE(s->ReadStoredInto(read, 0, 2, reinterpret_cast<uint8_t*>(sent.data())).ok());
    EXPECT_EQ(sent, stored[seg * 2] + stored[seg * 2 + 1]);
  }
  // Replaced (their values released): the leased files keep the old bytes.
  for (int i : {1, 2, 3}) ASSERT_TRUE(s->Put(HashOf(i), Tensor(kChunk, 9), Tensor(kChunk, 9)).ok());
  for (size_t j = 0; j < 4; ++j) {
    const auto& r = loc->ranges[j];
    EXPECT_EQ(mnemo::testing::ReadFileRange(loc->files[r.file].path, r.offset, r.length), stored[j]);
  }
  // Refused: a segment not stored, hashes that are not 32 bytes each, a
  // layer out of range.
  EXPECT_EQ(s->Locate(HashOf(1) + HashOf(7), {}).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s->Locate(HashOf(1).substr(0, 31), {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Locate("", {}).status().code(), StatusCode::kInvalidArgument);
  const std::vector<uint32_t> bad = {kLayers};
  EXPECT_EQ(s->Locate(HashOf(1), bad).status().code(), StatusCode::kInvalidArgument);
}

// A put whose log write is held must not hold up prefix matches, gets or
// stats of the same space: they are a serving engine's critical path.
TEST(KvSpaceConcurrencyTest, ReadsDoNotWaitForAPutsWrite) {
  EngineOnFailingFs e;
  auto& fs = e.fs;
  auto& s = e.space;
  ASSERT_TRUE(s->Put(HashOf(1), Tensor(kChunk, 1), Tensor(kChunk, 1)).ok());

  fs->hold = true;
  auto k2 = Tensor(kChunk, 2);
  std::thread writer([&] { EXPECT_TRUE(s->Put(HashOf(2), k2, k2).ok()); });
  while (fs->held == 0) std::this_thread::yield();  // the put is inside its log write
  auto reads = std::async(std::launch::async, [&] {
    return std::tuple{*s->MatchPrefix(HashOf(1) + HashOf(2)), s->Get(HashOf(1), {}).ok(),
                      s->Stats().segments};
  });
  // A generous bound: the reads take microseconds unless they wait for the put.
  const bool answered = reads.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  fs->hold = false;
  writer.join();
  ASSERT_TRUE(answered) << "reads waited for the held put";
  EXPECT_EQ(reads.get(), (std::tuple{size_t(1), true, uint64_t(1)}));  // not yet the new one
  EXPECT_EQ(*s->MatchPrefix(HashOf(1) + HashOf(2)), 2u);
}

}  // namespace
}  // namespace mnemo::engine

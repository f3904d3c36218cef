// A real mnemod on loopback, driven through the C++ client and raw frames.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>

#include "net/client.h"
#include "net/protocol.h"
#include "tests/daemon_process.h"
#include "tests/test_util.h"

namespace mnemo::net {
namespace {

using mnemo::testing::DaemonProcess;
using mnemo::testing::HttpGet;
using mnemo::testing::Iota;
using mnemo::testing::MakeClustered;
using mnemo::testing::TempDir;

std::unique_ptr<Client> Connect(const DaemonProcess& d) {
  auto c = Client::Connect(d.address());
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return std::move(c).value();
}

engine::CollectionConfig Config(const std::string& name, uint32_t dim,
                                const std::string& index = "Flat") {
  engine::CollectionConfig c;
  c.name = name;
  c.dim = dim;
  c.index = index;
  return c;
}

TEST(DaemonTest, EveryOperationThroughTheCppClient) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto c = Connect(d);
  auto info = c->CreateCollection(Config("docs", 3));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->dim, 3u);
  EXPECT_EQ(c->CreateCollection(Config("docs", 3)).status().code(), StatusCode::kAlreadyExists);

  std::vector<uint64_t> ids = {1, 2, 3};
  std::vector<float> v = {0, 0, 0, 1, 1, 1, 5, 5, 5};
  std::vector<uint64_t> groups = {7, 8, 7};
  std::vector<std::string_view> payloads = {"one", "two", "three"};
  auto n = c->Upsert("docs", ids, v, groups, payloads);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 3u);

  std::vector<uint64_t> want = {3, 9, 1};
  auto e = c->Get("docs", want);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->ids, (std::vector<uint64_t>{3, 1}));
  EXPECT_EQ(e->vectors, (std::vector<float>{5, 5, 5, 0, 0, 0}));
  EXPECT_EQ(e->groups, (std::vector<uint64_t>{7, 7}));
  EXPECT_EQ(e->payloads, (std::vector<std::string>{"three", "one"}));

  std::vector<float> q = {0.9f, 0.9f, 0.9f};
  auto r = c->Search("docs", q, {.k = 2});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ids, (std::vector<int64_t>{2, 1}));
  EXPECT_NEAR(r->distances[0], 3 * 0.01f, 1e-5);
  r = c->Search("docs", q, {.k = 5, .group = 7});
  EXPECT_EQ(r->ids, (std::vector<int64_t>{1, 3, -1, -1, -1}));

  std::vector<uint64_t> del = {2, 42};
  EXPECT_EQ(*c->Delete("docs", del), 1u);
  auto stats = c->Stats("docs");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->count, 2u);
  EXPECT_EQ(c->ListCollections()->size(), 1u);

  ASSERT_TRUE(c->CreateCollection(Config("ivf", 4, "IVF2,Flat")).ok());
  std::vector<float> four(40);
  for (size_t i = 0; i < four.size(); ++i) four[i] = float(i % 7);
  ASSERT_TRUE(c->Upsert("ivf", Iota(10), four).ok());
  EXPECT_TRUE(c->Train("ivf").ok());
  EXPECT_TRUE(c->Stats("ivf")->trained);

  EXPECT_TRUE(c->DropCollection("docs").ok());
  EXPECT_EQ(c->Stats("docs").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c->Search("docs", q).status().code(), StatusCode::kNotFound);

  // KV: 2 layers x 1 head x 3 tokens x 2 dims of f32, raw.
  auto kv = c->CreateKvSpace({"kv", 2, 1, 2, "f32", 4, "raw", 0, 0});
  ASSERT_TRUE(kv.ok()) << kv.status().ToString();
  EXPECT_EQ(kv->config.codec, "raw");
  std::vector<float> kf(12), vf(12);
  for (size_t i = 0; i < 12; ++i) kf[i] = float(i), vf[i] = -float(i);
  auto bytes = [](const std::vector<float>& x) {
    return std::span(reinterpret_cast<const uint8_t*>(x.data()), x.size() * 4);
  };
  const std::string h1(32, 'a'), h2(32, 'b');
  ASSERT_TRUE(c->PutKv("kv", h1, bytes(kf), bytes(vf), 3).ok());
  EXPECT_EQ(c->PutKv("kv", h2, bytes(kf), bytes(vf), 2).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*c->MatchPrefix("kv", h1 + h2), 1u);
  std::vector<uint32_t> layer1 = {1};
  auto seg = c->GetKv("kv", h1, layer1);
  ASSERT_TRUE(seg.ok()) << seg.status().ToString();
  EXPECT_EQ(seg->tokens, 3u);
  std::vector<uint8_t> want_keys(bytes(kf).begin() + 24, bytes(kf).end());
  EXPECT_EQ(seg->keys, want_keys);
  EXPECT_EQ(c->GetKv("kv", h2).status().code(), StatusCode::kNotFound);
  auto ks = c->KvStats("kv");
  ASSERT_TRUE(ks.ok());
  EXPECT_EQ(ks->segments, 1u);
  EXPECT_EQ(ks->misses, 1u);
  EXPECT_TRUE(c->DropKvSpace("kv").ok());
  EXPECT_EQ(c->KvStats("kv").status().code(), StatusCode::kNotFound);
}

TEST(DaemonTest, ErrorsCarryTheServersCodeAndMessage) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto c = Connect(d);
  ASSERT_TRUE(c->CreateCollection(Config("m", 4)).ok());
  std::vector<uint64_t> ids = {1};
  std::vector<float> wrong(5, 1.f);
  Status st = c->Upsert("m", ids, wrong).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("dimension 5 does not match collection 'm' (4)"), std::string::npos);
  std::vector<float> nan = {1, NAN, 1, 1};
  EXPECT_NE(c->Upsert("m", ids, nan).status().message().find("NaN"), std::string::npos);
  std::vector<float> q(4, 1.f);
  EXPECT_EQ(c->Search("m", q, {.k = 0}).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(c->Stats("m")->count, 0u);
}

TEST(DaemonTest, PipelinedRequestsAreAnsweredInOrder) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto c = Connect(d);
  ASSERT_TRUE(c->CreateCollection(Config("p", 2)).ok());
  std::vector<float> v(200);
  for (size_t i = 0; i < 200; ++i) v[i] = float(i / 2);
  ASSERT_TRUE(c->Upsert("p", Iota(100), v).ok());
  // 50 searches and stats requests sent back to back, then all replies read.
  for (uint64_t id = 1; id <= 50; ++id) {
    flatbuffers::FlatBufferBuilder b;
    std::vector<float> q = {float(id), float(id)};
    auto body = id % 5 == 0
                    ? wire::CreateGetStatsDirect(b, "p").Union()
                    : wire::CreateSearchDirect(b, "p", &q, 1).Union();
    b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, id, 0,
                                      id % 5 == 0 ? wire::Request::GetStats : wire::Request::Search,
                                      body));
    ASSERT_TRUE(c->SendFrame({b.GetBufferPointer(), b.GetSize()}).ok());
  }
  for (uint64_t id = 1; id <= 50; ++id) {
    auto bytes = c->ReceiveFrame();
    ASSERT_TRUE(bytes.ok());
    auto f = VerifyResponse({reinterpret_cast<const char*>(bytes->data()), bytes->size()});
    ASSERT_TRUE(f.ok());
    EXPECT_EQ((*f)->request_id(), id);
    if (id % 5 != 0) {
      EXPECT_EQ((*f)->response_as_SearchResult()->ids()->Get(0), int64_t(id));
    }
  }
}

TEST(DaemonTest, PipelinedWritesApplyInOrder) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto c = Connect(d);
  ASSERT_TRUE(c->CreateCollection(Config("w", 2)).ok());
  // 40 upserts of the same two ids in flight at once: the last one wins.
  const std::vector<uint64_t> ids = {7, 8};
  for (int i = 0; i < 40; ++i) {
    std::vector<float> v = {float(i), float(i), float(-i), float(-i)};
    ASSERT_TRUE(c->SendUpsert("w", ids, v).ok());
  }
  EXPECT_EQ(c->Stats("w").status().code(), StatusCode::kFailedPrecondition);
  for (int i = 0; i < 40; ++i) {
    auto n = c->ReceiveUpsert();
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    EXPECT_EQ(*n, 2u);
  }
  auto e = c->Get("w", ids);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->vectors, (std::vector<float>{39, 39, -39, -39}));
  // A search pipelined right behind a write sees it.
  flatbuffers::FlatBufferBuilder up, q;
  std::vector<uint64_t> nid = {9};
  std::vector<float> nv = {1000, 1000}, qv = {1000, 1000};
  up.Finish(wire::CreateRequestFrame(up, kProtocolVersion, 1, 0, wire::Request::Upsert,
                                     wire::CreateUpsertDirect(up, "w", &nid, &nv).Union()));
  q.Finish(wire::CreateRequestFrame(q, kProtocolVersion, 2, 0, wire::Request::Search,
                                    wire::CreateSearchDirect(q, "w", &qv, 1).Union()));
  ASSERT_TRUE(c->SendFrame({up.GetBufferPointer(), up.GetSize()}).ok());
  ASSERT_TRUE(c->SendFrame({q.GetBufferPointer(), q.GetSize()}).ok());
  ASSERT_TRUE(c->ReceiveFrame().ok());
  auto bytes = c->ReceiveFrame();
  ASSERT_TRUE(bytes.ok());
  auto f = VerifyResponse({reinterpret_cast<const char*>(bytes->data()), bytes->size()});
  ASSERT_TRUE(f.ok());
  ASSERT_EQ((*f)->response_type(), wire::Response::SearchResult);
  EXPECT_EQ((*f)->response_as_SearchResult()->ids()->Get(0), 9);
}

// Each case runs on its own connection; afterwards another client still
// reads every entry written before.
TEST(DaemonTest, BadInputOnTheWireNeverTakesTheDaemonDown) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto good = Connect(d);
  ASSERT_TRUE(good->CreateCollection(Config("safe", 4)).ok());
  std::vector<float> v(40, 0.5f);
  ASSERT_TRUE(good->Upsert("safe", Iota(10), v).ok());

  auto expect_error_reply = [&](Client& c, const std::string& needle) {
    auto bytes = c.ReceiveFrame();
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    auto f = VerifyResponse({reinterpret_cast<const char*>(bytes->data()), bytes->size()});
    ASSERT_TRUE(f.ok());
    ASSERT_EQ((*f)->response_type(), wire::Response::Error);
    EXPECT_NE((*f)->response_as_Error()->message()->str().find(needle), std::string::npos)
        << (*f)->response_as_Error()->message()->str();
  };

  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {  // random bytes in a well-formed frame
    auto c = Connect(d);
    std::vector<uint8_t> junk(1 + rng() % 300);
    for (auto& x : junk) x = uint8_t(rng());
    ASSERT_TRUE(c->SendFrame(junk).ok());
    expect_error_reply(*c, "malformed request frame");
  }
  {  // random bytes with no framing at all, then hang up
    auto c = Connect(d);
    std::vector<uint8_t> junk(5000);
    for (auto& x : junk) x = uint8_t(rng());
    (void)c->SendRaw(junk);
  }
  {  // a truncated frame: the prefix promises more than ever arrives
    auto c = Connect(d);
    std::vector<uint8_t> partial = {100, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3};
    ASSERT_TRUE(c->SendRaw(partial).ok());
  }
  {  // a 4 GiB length prefix: an error, then the connection is closed
    auto c = Connect(d);
    std::vector<uint8_t> huge = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    ASSERT_TRUE(c->SendRaw(huge).ok());
    expect_error_reply(*c, "outside 1..");
    EXPECT_FALSE(c->ReceiveFrame().ok());  // closed
  }
  {  // a 4 GiB attachment: the same
    auto c = Connect(d);
    std::vector<uint8_t> huge = {16, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    ASSERT_TRUE(c->SendRaw(huge).ok());
    expect_error_reply(*c, "attachment of 4294967295 bytes is over the limit");
    EXPECT_FALSE(c->ReceiveFrame().ok());  // closed
  }
  {  // an attachment on an operation that takes none: an error, the connection goes on
    auto c = Connect(d);
    flatbuffers::FlatBufferBuilder b;
    b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, 5, 0, wire::Request::ListCollections,
                                      wire::CreateListCollections(b).Union()));
    std::vector<uint8_t> extra(1000, 7);
    ASSERT_TRUE(c->SendFrame({b.GetBufferPointer(), b.GetSize()}, extra).ok());
    expect_error_reply(*c, "takes no attachment");
    ASSERT_TRUE(c->ListCollections().ok());
  }
  {  // an unknown operation
    auto c = Connect(d);
    flatbuffers::FlatBufferBuilder b;
    auto body = wire::CreateListCollections(b).Union();
    b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, 5, 0, wire::Request(200), body));
    ASSERT_TRUE(c->SendFrame({b.GetBufferPointer(), b.GetSize()}).ok());
    expect_error_reply(*c, "unknown operation 200");
  }
  {  // an operation without its body (found by the fuzzer)
    auto c = Connect(d);
    flatbuffers::FlatBufferBuilder b;
    b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, 4, 0, wire::Request::DropCollection, 0));
    ASSERT_TRUE(c->SendFrame({b.GetBufferPointer(), b.GetSize()}).ok());
    expect_error_reply(*c, "request 'drop_collection' has no body");
  }
  {  // chunk hashes that are not 32 bytes each, for a KV space that exists
    auto c = Connect(d);
    ASSERT_TRUE(good->Backup(dir.Sub("bk")).ok());  // the C++ client's backup
    flatbuffers::FlatBufferBuilder s;
    s.Finish(wire::CreateRequestFrame(
        s, kProtocolVersion, 5, 0, wire::Request::CreateKvSpace,
        wire::CreateCreateKvSpaceDirect(s, "kv", 2, 1, 4, "f16", 8, "raw").Union()));
    ASSERT_TRUE(c->SendFrame({s.GetBufferPointer(), s.GetSize()}).ok());
    ASSERT_TRUE(c->ReceiveFrame().ok());
    flatbuffers::FlatBufferBuilder b;
    std::vector<uint8_t> odd(33, 1);
    auto body = wire::CreateMatchPrefixDirect(b, "kv", &odd).Union();
    b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, 6, 0, wire::Request::MatchPrefix, body));
    ASSERT_TRUE(c->SendFrame({b.GetBufferPointer(), b.GetSize()}).ok());
    expect_error_reply(*c, "chunk hashes must be 32 bytes each");

    // KV layers in attachments: layer by layer, keys then values, both ways.
    const std::string hash(32, 'h');
    std::vector<uint8_t> hv(hash.begin(), hash.end());
    auto put = [&](std::span<const uint8_t> attachment, bool with_keys, uint32_t tokens) {
      flatbuffers::FlatBufferBuilder p;
      std::vector<uint8_t> inline_keys(32, 0);
      auto body = wire::CreatePutKvDirect(p, "kv", &hv, with_keys ? &inline_keys : nullptr, nullptr, tokens);
      p.Finish(wire::CreateRequestFrame(p, kProtocolVersion, 7, 0, wire::Request::PutKv, body.Union()));
      return c->SendFrame({p.GetBufferPointer(), p.GetSize()}, attachment);
    };
    std::vector<uint8_t> layers(2 * 2 * 16);  // 2 layers x (keys, values) x 2 tokens x 4 dims x f16
    for (size_t i = 0; i < layers.size(); ++i) layers[i] = uint8_t(i);
    ASSERT_TRUE(put(layers, false, 2).ok());
    auto ack = c->ReceiveFrame();
    ASSERT_TRUE(ack.ok());
    ASSERT_EQ(flatbuffers::GetRoot<wire::ResponseFrame>(ack->data())->response_type(), wire::Response::Ack);
    flatbuffers::FlatBufferBuilder g;
    std::vector<uint32_t> second = {1};
    g.Finish(wire::CreateRequestFrame(g, kProtocolVersion, 8, 0, wire::Request::GetKv,
                                      wire::CreateGetKvDirect(g, "kv", &hv, &second, true).Union()));
    ASSERT_TRUE(c->SendFrame({g.GetBufferPointer(), g.GetSize()}).ok());
    auto got = c->ReceiveFrame();
    ASSERT_TRUE(got.ok());
    auto* seg = flatbuffers::GetRoot<wire::ResponseFrame>(got->data())->response_as_KvSegment();
    ASSERT_NE(seg, nullptr);
    EXPECT_EQ(seg->layer_bytes(), 16u);
    EXPECT_EQ(seg->keys(), nullptr);
    EXPECT_EQ(c->last_attachment(), std::vector<uint8_t>(layers.begin() + 32, layers.end()));
    // The C++ client's get (no attachment) sees the same bytes.
    auto same = c->GetKv("kv", hash);
    ASSERT_TRUE(same.ok()) << same.status().ToString();
    EXPECT_TRUE(std::equal(same->keys.begin(), same->keys.begin() + 16, layers.begin()));
    EXPECT_TRUE(std::equal(same->values.begin(), same->values.begin() + 16, layers.begin() + 16));
    // Wrong sizes, or layers both inline and attached, change nothing.
    ASSERT_TRUE(put(std::span(layers).first(40), false, 2).ok());
    expect_error_reply(*c, "are not [layers=2");
    ASSERT_TRUE(put(layers, false, 3).ok());
    expect_error_reply(*c, "with tokens=3");
    ASSERT_TRUE(put(layers, true, 2).ok());
    expect_error_reply(*c, "either in the frame or in its attachment");
    EXPECT_EQ(c->KvStats("kv")->segments, 1u);
  }
  {  // wrong dimension and NaN in valid frames, on a connection that goes on
    auto c = Connect(d);
    std::vector<uint64_t> ids = {100};
    std::vector<float> five(5, 1.f), nan = {1, 1, NAN, 1};
    EXPECT_EQ(c->Upsert("safe", ids, five).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(c->Upsert("safe", ids, nan).status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(c->Stats("safe")->count, 10u);
  }
  auto after = Connect(d);
  auto e = after->Get("safe", Iota(10));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->ids.size(), 10u);
  EXPECT_EQ(good->Stats("safe")->count, 10u);  // the first connection is fine too
  EXPECT_TRUE(d.running());
}

TEST(DaemonTest, SigkillDuringWriteLoadLosesNothingAcknowledged) {
  TempDir dir;
  std::vector<uint64_t> acked;
  std::mutex mu;
  {
    DaemonProcess d(dir.path());
    ASSERT_TRUE(Connect(d)->CreateCollection(Config("w", 8, "HNSW16")).ok());
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int t = 0; t < 3; ++t) {
      writers.emplace_back([&, t] {
        auto c = Client::Connect(d.address());
        if (!c.ok()) return;
        for (uint64_t b = 0; !stop; ++b) {
          auto ids = Iota(50, (uint64_t(t) << 32) + b * 50);
          std::vector<float> v(50 * 8, float(b % 13));
          if (!(*c)->Upsert("w", ids, v).ok()) return;  // the daemon died
          std::lock_guard<std::mutex> lock(mu);
          acked.insert(acked.end(), ids.begin(), ids.end());
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    d.Signal(SIGKILL);
    stop = true;
    for (auto& w : writers) w.join();
  }
  ASSERT_FALSE(acked.empty());
  DaemonProcess restarted(dir.path());
  auto c = Connect(restarted);
  for (size_t at = 0; at < acked.size(); at += 10000) {
    std::span<const uint64_t> part(acked.data() + at, std::min<size_t>(10000, acked.size() - at));
    auto e = c->Get("w", part);
    ASSERT_TRUE(e.ok());
    ASSERT_EQ(e->ids.size(), part.size());
  }
  std::printf("%zu acknowledged entries all present after SIGKILL\n", acked.size());
}

// A client that polls for its replies (busy_poll) reads the same frames as
// one that sleeps: small replies, errors, and a reply larger than its read
// buffer; and it sees the daemon go rather than spinning on.
TEST(DaemonTest, PollingClientGetsTheSameAnswersAndSeesTheDaemonGo) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto sleeper = Connect(d);
  auto polled = Client::Connect(d.address(), "", std::chrono::microseconds(2000));
  ASSERT_TRUE(polled.ok());
  auto& poller = *polled;
  const uint32_t dim = 16;
  auto data = MakeClustered(2000, 8, dim, 20, 3);
  ASSERT_TRUE(poller->CreateCollection(Config("p", dim)).ok());
  auto ids = Iota(2000);
  ASSERT_TRUE(poller->Upsert("p", ids, data.base).ok());
  for (size_t q = 0; q < 8; ++q) {
    auto query = std::span(data.queries).subspan(q * dim, dim);
    auto a = sleeper->Search("p", query, {.k = 5});
    auto b = poller->Search("p", query, {.k = 5});
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->ids, b->ids);
  }
  auto all = poller->Get("p", ids);  // 128 KiB of vectors: several reads
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->ids.size(), ids.size());
  EXPECT_EQ(poller->Stats("nope").status().code(), StatusCode::kNotFound);
  d.Signal(SIGKILL);
  EXPECT_EQ(poller->Stats("p").status().code(), StatusCode::kUnavailable);
}

// --idle-timeout-s closes a connection that sends nothing for that long; one
// that keeps sending stays open well past it.
TEST(DaemonTest, IdleConnectionsCloseAndBusyOnesStay) {
  TempDir dir;
  DaemonProcess d(dir.path(), "--idle-timeout-s 1");
  auto busy = Connect(d);
  auto idle = Connect(d);
  ASSERT_TRUE(busy->CreateCollection(Config("i", 2)).ok());
  ASSERT_TRUE(idle->Stats("i").ok());
  auto open_now = [&] {
    std::string m = HttpGet(d.http_address(), "/metrics");
    auto at = m.find("\nmnemo_connections_open ");
    return at == std::string::npos ? -1 : std::stoi(m.substr(at + 24));
  };
  EXPECT_EQ(open_now(), 2);
  for (int i = 0; i < 15; ++i) {  // 3 s of a request every 200 ms
    ASSERT_TRUE(busy->Stats("i").ok()) << "busy connection closed after " << i * 200 << " ms";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(open_now(), 1);
  EXPECT_EQ(idle->Stats("i").status().code(), StatusCode::kUnavailable);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(open_now(), 0);
  EXPECT_EQ(busy->Stats("i").status().code(), StatusCode::kUnavailable);
}

TEST(DaemonTest, SigtermStopsCleanlyAndAdminPortAnswers) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto c = Connect(d);
  ASSERT_TRUE(c->CreateCollection(Config("h", 2)).ok());
  std::vector<float> v = {1, 2};
  std::vector<uint64_t> ids = {1};
  ASSERT_TRUE(c->Upsert("h", ids, v).ok());
  ASSERT_TRUE(c->Search("h", v).ok());
  EXPECT_EQ(HttpGet(d.http_address(), "/healthz"), "200 ok\n");
  std::string metrics = HttpGet(d.http_address(), "/metrics");
  EXPECT_EQ(metrics.substr(0, 4), "200 ");
  EXPECT_NE(metrics.find("mnemo_requests_total{op=\"upsert\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("mnemo_collection_entries{collection=\"h\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("mnemo_request_duration_seconds_bucket{op=\"search\",le=\"+Inf\"} 1"),
            std::string::npos);
  EXPECT_NE(metrics.find("mnemo_search_call_seconds_count 1"), std::string::npos);
  EXPECT_EQ(HttpGet(d.http_address(), "/nope").substr(0, 3), "404");
  int status = d.Signal(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  DaemonProcess again(dir.path());
  EXPECT_EQ(Connect(again)->Stats("h")->count, 1u);
}

// A put_kv starts while its layers arrive (each is appended as it lands).
// Its layers arriving in pieces store the same bytes; a client that hangs up
// halfway gets nothing stored, and one that stalls does not hold up a stop.
TEST(DaemonTest, PutKvLayersAreAppendedAsTheyArriveAndAHalfPutStoresNothing) {
  TempDir dir;
  DaemonProcess d(dir.path());
  auto c = Connect(d);
  // 4 layers x 8 heads x 512 tokens x 128 dims, f16: 1 MiB of keys per layer.
  engine::KvSpaceConfig kv{"big", 4, 8, 128, "f16", 512, "raw", 0, 0};
  ASSERT_TRUE(c->CreateKvSpace(kv).ok());
  const size_t lb = size_t(8) * 512 * 128 * 2;
  std::vector<uint8_t> layers(2 * 4 * lb);
  std::mt19937 rng(3);
  for (auto& x : layers) x = uint8_t(rng());
  auto put_frame = [](const std::string& hash) {
    flatbuffers::FlatBufferBuilder p;
    std::vector<uint8_t> hv(hash.begin(), hash.end());
    p.Finish(wire::CreateRequestFrame(p, kProtocolVersion, 1, 0, wire::Request::PutKv,
                                      wire::CreatePutKvDirect(p, "big", &hv, nullptr, nullptr, 512).Union()));
    return std::vector<uint8_t>(p.GetBufferPointer(), p.GetBufferPointer() + p.GetSize());
  };
  auto half_put = [&](const std::string& hash) {
    auto body = put_frame(hash);
    std::vector<uint8_t> bytes(FrameHeader::kBytes);
    FrameHeader{uint32_t(body.size()), uint32_t(layers.size())}.EncodeTo(bytes.data());
    bytes.insert(bytes.end(), body.begin(), body.end());
    bytes.insert(bytes.end(), layers.begin(), layers.begin() + 3 * lb);  // a layer and a half
    return bytes;
  };
  {  // hang up halfway
    auto quitter = Connect(d);
    ASSERT_TRUE(quitter->SendRaw(half_put(std::string(32, 'q'))).ok());
  }
  // The put gives up with an error once the connection has ended.
  const std::string failed = "mnemo_request_errors_total{op=\"put_kv\"} 1\n";
  for (int i = 0; i < 500 && HttpGet(d.http_address(), "/metrics").find(failed) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(HttpGet(d.http_address(), "/metrics").find(failed), std::string::npos);
  EXPECT_EQ(c->KvStats("big")->segments, 0u);
  EXPECT_EQ(c->KvStats("big")->bytes_stored, 0u);

  // A whole put, its attachment read a megabyte at a time, reads back the same.
  const std::string hash(32, 'w');
  ASSERT_TRUE(c->SendFrame(put_frame(hash), layers).ok());
  auto ack = c->ReceiveFrame();
  ASSERT_TRUE(ack.ok());
  ASSERT_EQ(flatbuffers::GetRoot<wire::ResponseFrame>(ack->data())->response_type(), wire::Response::Ack);
  auto got = c->GetKv("big", hash);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  for (size_t l = 0; l < 4; ++l) {
    EXPECT_TRUE(std::equal(got->keys.begin() + l * lb, got->keys.begin() + (l + 1) * lb,
                           layers.begin() + 2 * l * lb)) << l;
    EXPECT_TRUE(std::equal(got->values.begin() + l * lb, got->values.begin() + (l + 1) * lb,
                           layers.begin() + (2 * l + 1) * lb)) << l;
  }
  EXPECT_EQ(c->KvStats("big")->segments, 1u);

  // A client that stalls halfway does not hold up a clean stop.
  auto staller = Connect(d);
  ASSERT_TRUE(staller->SendRaw(half_put(std::string(32, 's'))).ok());
  c.reset();
  EXPECT_EQ(d.Signal(SIGTERM), 0);
}

// Eight clients search at once; each answer must be the one a query gets
// alone: brute force's for Flat, one client's one at a time for others.
void ConcurrentSingleQueriesGetTheirOwnAnswers(const std::string& flags,
                                               const std::string& index = "Flat") {
  TempDir dir;
  DaemonProcess d(dir.path(), flags);
  auto data = MakeClustered(5000, 400, 16, 20, 9);
  auto setup = Connect(d);
  ASSERT_TRUE(setup->CreateCollection(Config("b", 16, index)).ok());
  ASSERT_TRUE(setup->Upsert("b", Iota(5000), data.base).ok());
  if (index.starts_with("IVF") && !setup->Stats("b")->trained) ASSERT_TRUE(setup->Train("b").ok());
  std::vector<int64_t> truth = mnemo::testing::BruteForce(data, 5);
  size_t searched = data.q();
  if (index != "Flat") {
    truth.clear();
    for (size_t q = 0; q < data.q(); ++q) {
      auto r = setup->Search("b", std::span(data.queries).subspan(q * 16, 16), {.k = 5});
      ASSERT_TRUE(r.ok());
      truth.insert(truth.end(), r->ids.begin(), r->ids.end());
    }
    // All of them in one request: over 16 KiB, it is read whole on a worker,
    // which submits it from there.
    auto all = setup->Search("b", data.queries, {.k = 5});
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->ids, truth);
    searched *= 3;
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 8; ++t) {
    clients.emplace_back([&, t] {
      auto c = Client::Connect(d.address());
      for (size_t q = size_t(t); q < data.q(); q += 8) {
        auto r = (*c)->Search("b", std::span(data.queries).subspan(q * 16, 16), {.k = 5});
        if (!r.ok() || r->ids != std::vector<int64_t>(truth.begin() + q * 5, truth.begin() + q * 5 + 5)) {
          wrong++;
        }
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(wrong.load(), 0);
  std::string metrics = HttpGet(d.http_address(), "/metrics");
  EXPECT_NE(metrics.find("mnemo_search_batch_queries_sum " + std::to_string(searched) + "\n"),
            std::string::npos);
}

TEST(DaemonTest, ConcurrentSingleQueriesGetTheirOwnAnswers) {
  ConcurrentSingleQueriesGetTheirOwnAnswers("");
}

// More batches in flight than this machine has cores: the loops race.
TEST(DaemonTest, ConcurrentBatchesOfOneCollectionGetTheirOwnAnswers) {
  ConcurrentSingleQueriesGetTheirOwnAnswers("--worker-threads 6 --io-threads 3 --batch-concurrency 6");
}

// HNSW and IVF searches run on the I/O threads that read them, or on an
// idle one after steal_after: four threads, each taking the others' searches.
TEST(DaemonTest, GraphSearchesPulledByManyIoThreadsGetTheirOwnAnswers) {
  ConcurrentSingleQueriesGetTheirOwnAnswers("--io-threads 4", "HNSW16");
}

TEST(DaemonTest, IvfSearchesPulledByManyIoThreadsGetTheirOwnAnswers) {
  ConcurrentSingleQueriesGetTheirOwnAnswers("--io-threads 4", "IVF16,Flat");
}

// The same searches with --search-on-io false: gathered and run on the workers.
TEST(DaemonTest, GraphSearchesOnTheWorkersGetTheirOwnAnswers) {
  ConcurrentSingleQueriesGetTheirOwnAnswers("--io-threads 1 --search-on-io false", "HNSW16");
}

}  // namespace
}  // namespace mnemo::net

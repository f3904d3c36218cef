// RequestHandler's promises: nothing a handler throws escapes, the request
// gets an Internal error reply, and the server goes on serving.
#include "net/request_handler.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>

#include "net/client.h"
#include "net/server.h"
#include "tests/test_util.h"

namespace mnemo::net {
namespace {

using mnemo::testing::OptionsFor;
using mnemo::testing::TempDir;

void ThrowsBadAlloc(const Call&, const Send&, Respond) { throw std::bad_alloc(); }
void ThrowsRuntimeError(const Call&, const Send&, Respond) {
  throw std::runtime_error("a handler's bug");
}

// A ListCollections frame, as a client sends it.
std::shared_ptr<InFrame> ListFrame(uint64_t id) {
  flatbuffers::FlatBufferBuilder b;
  b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, id, 0, wire::Request::ListCollections,
                                    wire::CreateListCollections(b).Union()));
  auto in = std::make_shared<InFrame>();
  in->body.assign(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
  return in;
}

const wire::ResponseFrame* Parse(const Reply& r) {
  auto f = VerifyResponse(std::string_view(reinterpret_cast<const char*>(r.body.data()), r.body.size()));
  EXPECT_TRUE(f.ok());
  return f.ok() ? *f : nullptr;
}

class RequestHandlerTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::unique_ptr<engine::Engine> engine_ =
      std::move(engine::Engine::Open(OptionsFor(dir_.path()))).value();
  Metrics metrics_;
  engine::SearchBatcher batcher_{{}, {}, &metrics_};
};

TEST_F(RequestHandlerTest, AThrowingHandlerGetsAnInternalErrorReplyAndTheNextRequestIsServed) {
  RequestHandler handler(engine_.get(), &batcher_, &metrics_);
  std::vector<Reply> replies;
  auto collect = [&](Reply r) { replies.push_back(std::move(r)); };
  for (auto thrower : {ThrowsBadAlloc, ThrowsRuntimeError}) {
    RequestHandler throwing(engine_.get(), &batcher_, &metrics_);
    throwing.OverrideForTesting(wire::Request::ListCollections, thrower);
    replies.clear();
    throwing.Handle(ListFrame(7), collect);
    ASSERT_EQ(replies.size(), 1u);  // exactly one reply
    auto* f = Parse(replies[0]);
    ASSERT_EQ(f->response_type(), wire::Response::Error);
    EXPECT_EQ(StatusCode(f->response_as_Error()->code()), StatusCode::kInternal);
    EXPECT_EQ(f->request_id(), 7u);
    EXPECT_NE(f->response_as_Error()->message()->str().find("list_collections"), std::string::npos);
  }
  replies.clear();
  handler.Handle(ListFrame(8), collect);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(Parse(replies[0])->response_type(), wire::Response::CollectionList);
  EXPECT_NE(metrics_.Render(*engine_).find("mnemo_request_errors_total{op=\"list_collections\"} 2"),
            std::string::npos)
      << metrics_.Render(*engine_);
}

// Through a real server on loopback: the thrown request is answered, and the
// same connection and new ones go on working.
TEST_F(RequestHandlerTest, AServerWhoseHandlerThrowsKeepsServing) {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.handler_overrides = {{wire::Request::GetStats, ThrowsBadAlloc}};
  Server server(engine_.get(), &metrics_, options);
  ASSERT_TRUE(server.Start().ok());
  auto client = std::move(Client::Connect(server.address())).value();
  engine::CollectionConfig config;
  config.name = "c";
  config.dim = 2;
  ASSERT_TRUE(client->CreateCollection(config).ok());
  for (int i = 0; i < 3; ++i) {
    auto stats = client->Stats("c");
    EXPECT_EQ(stats.status().code(), StatusCode::kInternal) << stats.status().ToString();
    EXPECT_TRUE(client->Upsert("c", std::vector<uint64_t>{uint64_t(i)}, std::vector<float>{1, 2}).ok());
  }
  auto other = std::move(Client::Connect(server.address())).value();
  auto list = other->ListCollections();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ((*list)[0].count, 3u);
  server.Stop();
  server.Wait();
}

}  // namespace
}  // namespace mnemo::net

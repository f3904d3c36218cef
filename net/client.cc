#include "net/client.h"

#include <utility>  // before Boost 1.74 Asio, whose awaitable.hpp misses it in C++20
#include <boost/asio.hpp>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "common/host_port.h"
#include "net/conversions.h"
#include "net/protocol.h"

namespace mnemo::net {

namespace asio = boost::asio;
using asio::ip::tcp;
using flatbuffers::FlatBufferBuilder;

struct Client::Impl {
  asio::io_context io;
  tcp::socket socket{io};
  std::string api_key;
  uint64_t next_id = 1;
  // Bytes received and not yet returned: one read usually brings a reply's
  // prefix and body together, saving a syscall per request.
  std::vector<uint8_t> rbuf = std::vector<uint8_t>(64 << 10);
  size_t rfilled = 0;

  std::deque<uint64_t> awaiting;  // ids of requests sent, replies not read
  std::chrono::microseconds busy_poll{0};

  // Reads what the socket has into rbuf, at least one byte: polled for up
  // to busy_poll, then blocking.
  size_t ReadSome(boost::system::error_code& ec);

  Result<std::vector<uint8_t>> ReadFrame();
  std::vector<uint8_t> attachment;  // of the last frame read

  // Sends the request built by `body`, without waiting for the reply.
  template <typename BuildBody>
  Status Send(wire::Request type, BuildBody&& body, size_t hint = 256);
  // The verified reply to the oldest request sent and not yet received.
  Result<std::pair<std::vector<uint8_t>, const wire::ResponseFrame*>> Receive();
  // Send, then Receive.
  template <typename BuildBody>
  Result<std::pair<std::vector<uint8_t>, const wire::ResponseFrame*>> Call(wire::Request type,
                                                                          BuildBody&& body,
                                                                          size_t hint = 256) {
    if (!awaiting.empty()) {
      return Status::FailedPrecondition("receive the replies of the pipelined upserts first");
    }
    MNEMO_RETURN_IF_ERROR(Send(type, std::forward<BuildBody>(body), hint));
    return Receive();
  }
};

namespace {

Status Broken(const boost::system::error_code& ec) {
  return Status::Unavailable("connection to mnemod failed: " + ec.message());
}

Status ErrorOf(const wire::ResponseFrame* f) {
  if (f->response_type() == wire::Response::Error) {
    auto* e = f->response_as_Error();
    return Status(StatusCode(e->code()), e->message() ? e->message()->str() : "");
  }
  return Status::OK();
}

template <typename T>
Result<const T*> As(const wire::ResponseFrame* f, wire::Response want) {
  MNEMO_RETURN_IF_ERROR(ErrorOf(f));
  if (f->response_type() != want) return Status::Internal("unexpected reply type from server");
  return static_cast<const T*>(f->response());
}

}  // namespace

template <typename BuildBody>
Status Client::Impl::Send(wire::Request type, BuildBody&& body, size_t hint) {
  FlatBufferBuilder b(hint);
  auto request = body(b);
  auto key = api_key.empty() ? 0 : b.CreateString(api_key);
  const uint64_t id = next_id++;
  b.Finish(wire::CreateRequestFrame(b, kProtocolVersion, id, key, type, request));
  uint8_t header[FrameHeader::kBytes];
  FrameHeader{b.GetSize(), 0}.EncodeTo(header);
  boost::system::error_code ec;
  std::array<asio::const_buffer, 2> bufs = {asio::buffer(header),
                                            asio::buffer(b.GetBufferPointer(), b.GetSize())};
  asio::write(socket, bufs, TransferAllAtOnce(), ec);
  if (ec) return Broken(ec);
  awaiting.push_back(id);
  return Status::OK();
}

Result<std::pair<std::vector<uint8_t>, const wire::ResponseFrame*>> Client::Impl::Receive() {
  if (awaiting.empty()) return Status::FailedPrecondition("no request awaits a reply");
  const uint64_t id = awaiting.front();
  awaiting.pop_front();
  MNEMO_ASSIGN_OR_RETURN(std::vector<uint8_t> reply, ReadFrame());
  MNEMO_ASSIGN_OR_RETURN(auto frame, VerifyResponse(std::string_view(
                                         reinterpret_cast<const char*>(reply.data()), reply.size())));
  if (frame->request_id() != id && frame->request_id() != 0) {
    return Status::Internal("reply for request " + std::to_string(frame->request_id()) +
                            ", expected " + std::to_string(id));
  }
  return std::make_pair(std::move(reply), frame);
}

size_t Client::Impl::ReadSome(boost::system::error_code& ec) {
  uint8_t* to = rbuf.data() + rfilled;
  const size_t room = rbuf.size() - rfilled;
  if (busy_poll.count() > 0) {
    // MSG_DONTWAIT on this call only: the socket stays blocking for writes.
    const auto until = std::chrono::steady_clock::now() + busy_poll;
    do {
      const ssize_t n = ::recv(socket.native_handle(), to, room, MSG_DONTWAIT);
      if (n > 0) return size_t(n);
      if (n == 0) {
        ec = asio::error::eof;
        return 0;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return 0;
      }
    } while (std::chrono::steady_clock::now() < until);
  }
  return socket.read_some(asio::buffer(to, room), ec);
}

Result<std::vector<uint8_t>> Client::Impl::ReadFrame() {
  boost::system::error_code ec;
  auto fill_to = [&](size_t want) -> Status {
    if (rbuf.size() < want) rbuf.resize(want);
    while (rfilled < want) {
      rfilled += ReadSome(ec);
      if (ec) return Broken(ec);
    }
    return Status::OK();
  };
  MNEMO_RETURN_IF_ERROR(fill_to(FrameHeader::kBytes));
  const FrameHeader h = FrameHeader::DecodeFrom(rbuf.data());
  const size_t total = FrameHeader::kBytes + size_t(h.body) + h.attachment;
  MNEMO_RETURN_IF_ERROR(fill_to(total));
  std::vector<uint8_t> frame(rbuf.begin() + FrameHeader::kBytes,
                             rbuf.begin() + FrameHeader::kBytes + h.body);
  attachment.assign(rbuf.begin() + FrameHeader::kBytes + h.body, rbuf.begin() + total);
  std::memmove(rbuf.data(), rbuf.data() + total, rfilled - total);
  rfilled -= total;
  return frame;
}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                const std::string& api_key,
                                                std::chrono::microseconds busy_poll) {
  std::string host;
  uint16_t port;
  MNEMO_RETURN_IF_ERROR(SplitHostPort(address, &host, &port));
  auto impl = std::make_unique<Impl>();
  impl->api_key = api_key;
  impl->busy_poll = busy_poll;
  boost::system::error_code ec;
  tcp::resolver resolver(impl->io);
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return Status::Unavailable("cannot resolve '" + host + "': " + ec.message());
  asio::connect(impl->socket, endpoints, ec);
  if (ec) return Status::Unavailable("cannot connect to " + address + ": " + ec.message());
  impl->socket.set_option(tcp::no_delay(true), ec);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Result<engine::CollectionStats> Client::CreateCollection(const engine::CollectionConfig& c) {
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::CreateCollection, [&](auto& b) {
    return ToWire(b, c).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto info, As<wire::CollectionInfo>(r.second, wire::Response::CollectionInfo));
  return FromWire(*info);
}

Status Client::DropCollection(std::string_view name) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::DropCollection, [&](auto& b) {
    return wire::CreateDropCollectionDirect(b, n.c_str()).Union();
  }));
  return ErrorOf(r.second);
}

Result<std::vector<engine::CollectionStats>> Client::ListCollections() {
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::ListCollections, [&](auto& b) {
    return wire::CreateListCollections(b).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto list, As<wire::CollectionList>(r.second, wire::Response::CollectionList));
  std::vector<engine::CollectionStats> out;
  if (list->collections()) {
    for (const auto* i : *list->collections()) out.push_back(FromWire(*i));
  }
  return out;
}

Result<engine::CollectionStats> Client::Stats(std::string_view name) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::GetStats, [&](auto& b) {
    return wire::CreateGetStatsDirect(b, n.c_str()).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto info, As<wire::CollectionInfo>(r.second, wire::Response::CollectionInfo));
  return FromWire(*info);
}

Status Client::Backup(std::string_view dir) {
  std::string d(dir);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::Backup, [&](auto& b) {
    return wire::CreateBackupDirect(b, d.c_str()).Union();
  }));
  return ErrorOf(r.second);
}

Status Client::Train(std::string_view name) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::Train, [&](auto& b) {
    return wire::CreateTrainDirect(b, n.c_str()).Union();
  }));
  return ErrorOf(r.second);
}

Status Client::SendUpsert(std::string_view name, std::span<const uint64_t> ids,
                          std::span<const float> vectors, std::span<const uint64_t> groups,
                          std::span<const std::string_view> payloads) {
  std::string n(name);
  size_t hint = 128 + ids.size() * 16 + vectors.size() * 4;
  return impl_->Send(wire::Request::Upsert, [&](auto& b) {
    std::vector<flatbuffers::Offset<wire::Payload>> ps;
    for (auto p : payloads) ps.push_back(wire::CreatePayload(b, ByteVector(b, p)));
    auto pv = payloads.empty() ? 0 : b.CreateVector(ps);
    auto gv = groups.empty() ? 0 : b.CreateVector(groups.data(), groups.size());
    auto vv = b.CreateVector(vectors.data(), vectors.size());
    auto iv = b.CreateVector(ids.data(), ids.size());
    return wire::CreateUpsert(b, b.CreateString(n), iv, vv, gv, pv).Union();
  }, hint);
}

Result<uint64_t> Client::ReceiveUpsert() {
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Receive());
  MNEMO_ASSIGN_OR_RETURN(auto ack, As<wire::Ack>(r.second, wire::Response::Ack));
  return ack->count();
}

Result<uint64_t> Client::Upsert(std::string_view name, std::span<const uint64_t> ids,
                                std::span<const float> vectors, std::span<const uint64_t> groups,
                                std::span<const std::string_view> payloads) {
  MNEMO_RETURN_IF_ERROR(SendUpsert(name, ids, vectors, groups, payloads));
  return ReceiveUpsert();
}

Result<engine::EntryList> Client::Get(std::string_view name, std::span<const uint64_t> ids) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::Get, [&](auto& b) {
    auto iv = b.CreateVector(ids.data(), ids.size());
    return wire::CreateGet(b, b.CreateString(n), iv).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto e, As<wire::Entries>(r.second, wire::Response::Entries));
  return FromWire(*e);
}

Result<uint64_t> Client::Delete(std::string_view name, std::span<const uint64_t> ids) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::Delete, [&](auto& b) {
    auto iv = b.CreateVector(ids.data(), ids.size());
    return wire::CreateDelete(b, b.CreateString(n), iv).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto ack, As<wire::Ack>(r.second, wire::Response::Ack));
  return ack->count();
}

Result<engine::SearchResult> Client::Search(std::string_view name, std::span<const float> queries,
                                            const SearchOptions& o) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::Search, [&](auto& b) {
    auto qv = b.CreateVector(queries.data(), queries.size());
    return wire::CreateSearch(b, b.CreateString(n), qv, o.k, o.nprobe, o.ef, o.group.has_value(),
                              o.group.value_or(0)).Union();
  }, 128 + queries.size() * 4));
  MNEMO_ASSIGN_OR_RETURN(auto s, As<wire::SearchResult>(r.second, wire::Response::SearchResult));
  return FromWire(*s);
}

Result<engine::KvSpaceStats> Client::CreateKvSpace(const engine::KvSpaceConfig& c) {
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::CreateKvSpace, [&](auto& b) {
    return ToWire(b, c).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto info, As<wire::KvSpaceInfo>(r.second, wire::Response::KvSpaceInfo));
  return FromWire(*info);
}

Status Client::DropKvSpace(std::string_view name) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::DropKvSpace, [&](auto& b) {
    return wire::CreateDropKvSpaceDirect(b, n.c_str()).Union();
  }));
  return ErrorOf(r.second);
}

Result<engine::KvSpaceStats> Client::KvStats(std::string_view name) {
  std::string n(name);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::GetKvStats, [&](auto& b) {
    return wire::CreateGetKvStatsDirect(b, n.c_str()).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto info, As<wire::KvSpaceInfo>(r.second, wire::Response::KvSpaceInfo));
  return FromWire(*info);
}

Status Client::PutKv(std::string_view space, std::string_view hash, std::span<const uint8_t> keys,
                     std::span<const uint8_t> values, uint32_t tokens) {
  std::string sp(space);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::PutKv, [&](auto& b) {
    auto vv = b.CreateVector(values.data(), values.size());
    auto kv = b.CreateVector(keys.data(), keys.size());
    auto hv = ByteVector(b, hash);
    return wire::CreatePutKv(b, b.CreateString(sp), hv, kv, vv, tokens).Union();
  }, 256 + keys.size() + values.size()));
  return ErrorOf(r.second);
}

Result<engine::KvSegment> Client::GetKv(std::string_view space, std::string_view hash,
                                        std::span<const uint32_t> layers) {
  std::string sp(space);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::GetKv, [&](auto& b) {
    auto lv = layers.empty() ? 0 : b.CreateVector(layers.data(), layers.size());
    auto hv = ByteVector(b, hash);
    return wire::CreateGetKv(b, b.CreateString(sp), hv, lv).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto seg, As<wire::KvSegment>(r.second, wire::Response::KvSegment));
  engine::KvSegment out;
  out.tokens = seg->tokens();
  if (seg->layers()) out.layers.assign(seg->layers()->begin(), seg->layers()->end());
  if (seg->keys()) out.keys.assign(seg->keys()->begin(), seg->keys()->end());
  if (seg->values()) out.values.assign(seg->values()->begin(), seg->values()->end());
  return out;
}

Result<size_t> Client::MatchPrefix(std::string_view space, std::string_view hashes) {
  std::string sp(space);
  MNEMO_ASSIGN_OR_RETURN(auto r, impl_->Call(wire::Request::MatchPrefix, [&](auto& b) {
    auto hv = ByteVector(b, hashes);
    return wire::CreateMatchPrefix(b, b.CreateString(sp), hv).Union();
  }));
  MNEMO_ASSIGN_OR_RETURN(auto ack, As<wire::Ack>(r.second, wire::Response::Ack));
  return size_t(ack->count());
}

Status Client::SendFrame(std::span<const uint8_t> frame, std::span<const uint8_t> attachment) {
  uint8_t header[FrameHeader::kBytes];
  FrameHeader{uint32_t(frame.size()), uint32_t(attachment.size())}.EncodeTo(header);
  boost::system::error_code ec;
  std::array<asio::const_buffer, 3> bufs = {asio::buffer(header),
                                            asio::buffer(frame.data(), frame.size()),
                                            asio::buffer(attachment.data(), attachment.size())};
  asio::write(impl_->socket, bufs, TransferAllAtOnce(), ec);
  return ec ? Broken(ec) : Status::OK();
}

Status Client::SendRaw(std::span<const uint8_t> bytes) {
  boost::system::error_code ec;
  asio::write(impl_->socket, asio::buffer(bytes.data(), bytes.size()), ec);
  return ec ? Broken(ec) : Status::OK();
}

Result<std::vector<uint8_t>> Client::ReceiveFrame() { return impl_->ReadFrame(); }
const std::vector<uint8_t>& Client::last_attachment() const { return impl_->attachment; }

}  // namespace mnemo::net

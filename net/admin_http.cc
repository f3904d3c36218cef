#include "net/admin_http.h"

#include <utility>  // before Boost 1.74 Asio, whose awaitable.hpp misses it in C++20
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/host_port.h"
#include "net/server.h"

namespace mnemo::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

struct AdminHttp::Impl {
  const engine::Engine* engine;
  const Metrics* metrics;
  const std::atomic<bool>* stopping;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
  std::string address;

  void Accept() {
    acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
      if (ec) return;  // closed
      Serve(std::make_shared<beast::tcp_stream>(std::move(socket)));
      Accept();
    });
  }

  void Serve(std::shared_ptr<beast::tcp_stream> stream) {
    auto buffer = std::make_shared<beast::flat_buffer>();
    auto req = std::make_shared<http::request<http::string_body>>();
    stream->expires_after(std::chrono::seconds(10));
    http::async_read(*stream, *buffer, *req,
                     [this, stream, buffer, req](const boost::system::error_code& ec, size_t) {
                       if (ec) return;
                       auto res = std::make_shared<http::response<http::string_body>>(
                           Respond(*req));
                       http::async_write(*stream, *res,
                                         [stream, res](const boost::system::error_code&, size_t) {
                                           boost::system::error_code ignored;
                                           stream->socket().shutdown(tcp::socket::shutdown_both,
                                                                     ignored);
                                         });
                     });
  }

  http::response<http::string_body> Respond(const http::request<http::string_body>& req) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.keep_alive(false);
    const auto target = req.target();
    if (req.method() != http::verb::get) {
      res.result(http::status::method_not_allowed);
      res.body() = "only GET\n";
    } else if (target == "/healthz") {
      bool ok = !stopping->load();
      res.result(ok ? http::status::ok : http::status::service_unavailable);
      res.body() = ok ? "ok\n" : "stopping\n";
    } else if (target == "/metrics") {
      res.result(http::status::ok);
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      res.body() = metrics->Render(*engine);
    } else {
      res.result(http::status::not_found);
      res.body() = "not found: try /healthz or /metrics\n";
    }
    if (res[http::field::content_type].empty()) res.set(http::field::content_type, "text/plain");
    res.prepare_payload();
    return res;
  }
};

AdminHttp::AdminHttp(const engine::Engine* engine, const Metrics* metrics)
    : impl_(std::make_unique<Impl>()) {
  impl_->engine = engine;
  impl_->metrics = metrics;
  impl_->stopping = &stopping_;
}

AdminHttp::~AdminHttp() { Stop(); }

Status AdminHttp::Start(const std::string& listen) {
  std::string host;
  uint16_t port;
  MNEMO_RETURN_IF_ERROR(SplitHostPort(listen, &host, &port));
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return Status::InvalidArgument("cannot parse address '" + host + "'");
  tcp::endpoint ep(addr, port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status::IOError("cannot listen on " + listen + ": " + ec.message());
  auto bound = impl_->acceptor.local_endpoint();
  impl_->address = bound.address().to_string() + ":" + std::to_string(bound.port());
  impl_->Accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  return Status::OK();
}

std::string AdminHttp::address() const { return impl_->address; }

void AdminHttp::Stop() {
  if (!impl_->thread.joinable()) return;
  asio::post(impl_->io, [this] {
    boost::system::error_code ignored;
    impl_->acceptor.close(ignored);
  });
  impl_->io.stop();
  impl_->thread.join();
}

}  // namespace mnemo::net

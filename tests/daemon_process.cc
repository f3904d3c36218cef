#include "tests/daemon_process.h"

#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <utility>  // before Boost 1.74 Asio, whose awaitable.hpp misses it in C++20
#include <boost/asio.hpp>

extern char** environ;

namespace mnemo::testing {

DaemonProcess::DaemonProcess(const std::string& data_dir, const std::string& extra) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  // $MNEMOD runs another build (bench/gpu/run.sh runs a carried one).
  const char* env_path = std::getenv("MNEMOD");
  const std::string path = env_path != nullptr && *env_path != '\0' ? env_path : MNEMOD_PATH;
  std::vector<std::string> args = {path, "--data-dir", data_dir, "--listen",
                                   "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warn"};
  std::istringstream more(extra);
  for (std::string a; more >> a;) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  if (posix_spawn(&pid_, path.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
    throw std::runtime_error("cannot start mnemod");
  }
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  // Wait for "mnemod listening on A (admin http B)".
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  char buf[512];
  while (out.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      ssize_t n = read(fds[0], buf, sizeof(buf));
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
  }
  close(fds[0]);
  const std::string tag = "mnemod listening on ";
  auto at = out.find(tag);
  if (at == std::string::npos) {
    Signal(SIGKILL);
    throw std::runtime_error("mnemod did not start: " + out);
  }
  std::istringstream line(out.substr(at + tag.size()));
  std::string admin, http;
  line >> address_ >> admin >> http >> http_;
  if (!http_.empty() && http_.back() == ')') http_.pop_back();
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) Signal(SIGKILL);
}

int DaemonProcess::Signal(int sig) {
  int status = 0;
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::string HttpGet(const std::string& address, const std::string& path) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  auto colon = address.rfind(':');
  s.connect({asio::ip::make_address(address.substr(0, colon)),
             uint16_t(std::stoi(address.substr(colon + 1)))});
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  asio::write(s, asio::buffer(req));
  std::string resp;
  boost::system::error_code ec;
  asio::read(s, asio::dynamic_buffer(resp), ec);
  auto sp = resp.find(' ');
  auto body = resp.find("\r\n\r\n");
  if (sp == std::string::npos || body == std::string::npos) return "0 " + resp;
  return resp.substr(sp + 1, 3) + " " + resp.substr(body + 4);
}

}  // namespace mnemo::testing

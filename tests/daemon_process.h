// A real mnemod process on free loopback ports, for integration tests.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>

namespace mnemo::testing {

class DaemonProcess {
 public:
  // Starts mnemod on `data_dir` with `extra` flags and waits until it serves.
  explicit DaemonProcess(const std::string& data_dir, const std::string& extra = "");
  ~DaemonProcess();  // SIGKILLs a daemon still running

  const std::string& address() const { return address_; }
  const std::string& http_address() const { return http_; }
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // Sends `sig` and waits for the exit; returns the raw wait status.
  int Signal(int sig);

 private:
  pid_t pid_ = -1;
  std::string address_, http_;
};

// A plain HTTP GET on loopback; returns "<status code> <body>".
std::string HttpGet(const std::string& address, const std::string& path);

}  // namespace mnemo::testing

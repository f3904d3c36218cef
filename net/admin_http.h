// AdminHttp: the daemon's HTTP admin port (Boost.Beast).
//   GET /healthz  200 "ok" while the daemon serves, 503 once it is stopping
//   GET /metrics  Prometheus text (net/metrics.h)
// Runs on its own thread and io_context so that a slow scrape never delays
// the data path. Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/status.h"
#include "engine/engine.h"
#include "net/metrics.h"

namespace mnemo::net {

class AdminHttp {
 public:
  // Not owned; must outlive this object.
  AdminHttp(const engine::Engine* engine, const Metrics* metrics);
  ~AdminHttp();

  Status Start(const std::string& listen);  // "127.0.0.1:7071"; port 0 picks one
  std::string address() const;
  // /healthz answers 503 from now on.
  void SetStopping() { stopping_ = true; }
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stopping_{false};
};

}  // namespace mnemo::net

// Metrics: counters and histograms the server updates on every request, and
// their rendering as Prometheus text for GET /metrics.
// Thread-safe: updates are lock-free atomics.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "engine/engine.h"
#include "engine/search_batcher.h"
#include "net/mnemo_generated.h"

namespace mnemo::net {

class Metrics : public engine::SearchListener {
 public:
  // One finished request of `type` (wire::Request::NONE for frames that did
  // not verify), whether it failed, and how long it took.
  void RecordRequest(wire::Request type, bool error, double seconds);
  // The search batcher's reports (engine/search_batcher.h).
  void OnSearchBatch(size_t queries) override;
  void OnSearchWait(double seconds) override;
  void OnSearchCall(double seconds) override;
  void ConnectionOpened() { connections_open_++; connections_total_++; }
  void ConnectionClosed() { connections_open_--; }
  void ConnectionRejected() { connections_rejected_++; }

  // Prometheus text exposition, with per-collection figures from `engine`.
  std::string Render(const engine::Engine& engine) const;

  static constexpr std::array<double, 15> kLatencyBuckets = {
      50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
      25e-3, 50e-3, 100e-3, 250e-3, 1.0, 5.0, 30.0};
  static constexpr std::array<double, 10> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

  struct Histogram {
    std::array<std::atomic<uint64_t>, 16> buckets{};  // last: +Inf
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_micros{0};
  };

 private:
  static constexpr size_t kOps = size_t(wire::Request::MAX) + 1;
  std::array<std::atomic<uint64_t>, kOps> requests_{};
  std::array<std::atomic<uint64_t>, kOps> errors_{};
  std::array<Histogram, kOps> latency_{};
  Histogram batch_;
  Histogram queue_;
  Histogram call_;
  std::atomic<int64_t> connections_open_{0};
  std::atomic<uint64_t> connections_total_{0};
  std::atomic<uint64_t> connections_rejected_{0};
};

}  // namespace mnemo::net

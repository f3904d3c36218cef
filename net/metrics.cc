#include "net/metrics.h"

#include <cstdio>

#include "net/operations.h"

namespace mnemo::net {
namespace {

// Counts v in its bucket and adds `sum` to the histogram's integer sum.
template <size_t N>
void Observe(Metrics::Histogram& h, const std::array<double, N>& bounds, double v, uint64_t sum) {
  size_t i = 0;
  while (i < N && v > bounds[i]) ++i;
  h.buckets[i]++;
  h.count++;
  h.sum_micros += sum;
}

void ObserveSeconds(Metrics::Histogram& h, double seconds) {
  Observe(h, Metrics::kLatencyBuckets, seconds, uint64_t(seconds * 1e6));
}

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') { out += "\\n"; continue; }
    out += c;
  }
  return out;
}

// An unlabeled histogram; `unit` scales its integer sum (1e-6: micros to seconds).
template <size_t N>
void RenderPlain(const Metrics::Histogram& h, const std::array<double, N>& bounds,
                 const std::string& name, double unit, std::string* out) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < N; ++i) {
    cumulative += h.buckets[i];
    *out += name + "_bucket{le=\"" + Num(bounds[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  cumulative += h.buckets[N];
  *out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  *out += name + "_sum " + (unit == 1 ? std::to_string(h.sum_micros) : Num(double(h.sum_micros) * unit)) + "\n";
  *out += name + "_count " + std::to_string(h.count) + "\n";
}

}  // namespace

void Metrics::RecordRequest(wire::Request type, bool error, double seconds) {
  size_t op = size_t(type) < kOps ? size_t(type) : 0;
  requests_[op]++;
  if (error) errors_[op]++;
  ObserveSeconds(latency_[op], seconds);
}

void Metrics::OnSearchWait(double seconds) { ObserveSeconds(queue_, seconds); }

void Metrics::OnSearchCall(double seconds) { ObserveSeconds(call_, seconds); }

void Metrics::OnSearchBatch(size_t queries) {
  Observe(batch_, kBatchBuckets, double(queries), queries);  // a sum of queries here, not of time
}

std::string Metrics::Render(const engine::Engine& engine) const {
  std::string out;
  auto op_name = [](size_t op) {
    return op == 0 ? std::string("malformed") : std::string(RequestName(wire::Request(op)));
  };
  out += "# HELP mnemo_requests_total Requests handled, by operation.\n";
  out += "# TYPE mnemo_requests_total counter\n";
  for (size_t op = 0; op < kOps; ++op) {
    out += "mnemo_requests_total{op=\"" + op_name(op) + "\"} " + std::to_string(requests_[op]) + "\n";
  }
  out += "# HELP mnemo_request_errors_total Requests answered with an error, by operation.\n";
  out += "# TYPE mnemo_request_errors_total counter\n";
  for (size_t op = 0; op < kOps; ++op) {
    out += "mnemo_request_errors_total{op=\"" + op_name(op) + "\"} " + std::to_string(errors_[op]) + "\n";
  }
  out += "# HELP mnemo_request_duration_seconds Time from a request's arrival to its reply.\n";
  out += "# TYPE mnemo_request_duration_seconds histogram\n";
  for (size_t op = 0; op < kOps; ++op) {
    const Histogram& h = latency_[op];
    if (h.count == 0) continue;
    uint64_t cumulative = 0;
    std::string label = "op=\"" + op_name(op) + "\"";
    for (size_t i = 0; i < kLatencyBuckets.size(); ++i) {
      cumulative += h.buckets[i];
      out += "mnemo_request_duration_seconds_bucket{" + label + ",le=\"" + Num(kLatencyBuckets[i]) +
             "\"} " + std::to_string(cumulative) + "\n";
    }
    cumulative += h.buckets[kLatencyBuckets.size()];
    out += "mnemo_request_duration_seconds_bucket{" + label + ",le=\"+Inf\"} " +
           std::to_string(cumulative) + "\n";
    out += "mnemo_request_duration_seconds_sum{" + label + "} " + Num(double(h.sum_micros) / 1e6) + "\n";
    out += "mnemo_request_duration_seconds_count{" + label + "} " + std::to_string(h.count) + "\n";
  }
  out += "# HELP mnemo_search_batch_queries Queries served by one FAISS search call.\n";
  out += "# TYPE mnemo_search_batch_queries histogram\n";
  RenderPlain(batch_, kBatchBuckets, "mnemo_search_batch_queries", 1, &out);
  out += "# HELP mnemo_search_queue_seconds Time a search waited in the batcher for its FAISS call.\n";
  out += "# TYPE mnemo_search_queue_seconds histogram\n";
  RenderPlain(queue_, kLatencyBuckets, "mnemo_search_queue_seconds", 1e-6, &out);
  out += "# HELP mnemo_search_call_seconds Time of one batch's search call (FAISS and id mapping).\n";
  out += "# TYPE mnemo_search_call_seconds histogram\n";
  RenderPlain(call_, kLatencyBuckets, "mnemo_search_call_seconds", 1e-6, &out);
  out += "# HELP mnemo_connections_open Client connections open now.\n";
  out += "# TYPE mnemo_connections_open gauge\n";
  out += "mnemo_connections_open " + std::to_string(connections_open_) + "\n";
  out += "# TYPE mnemo_connections_total counter\n";
  out += "mnemo_connections_total " + std::to_string(connections_total_) + "\n";
  out += "# TYPE mnemo_connections_rejected_total counter\n";
  out += "mnemo_connections_rejected_total " + std::to_string(connections_rejected_) + "\n";

  auto collections = engine.ListCollections();
  out += "# HELP mnemo_collection_entries Live entries per collection.\n";
  out += "# TYPE mnemo_collection_entries gauge\n";
  for (const auto& c : collections) {
    out += "mnemo_collection_entries{collection=\"" + Escape(c.name) + "\"} " + std::to_string(c.count) + "\n";
  }
  out += "# HELP mnemo_collection_storage_bytes Approximate bytes stored per collection.\n";
  out += "# TYPE mnemo_collection_storage_bytes gauge\n";
  for (const auto& c : collections) {
    out += "mnemo_collection_storage_bytes{collection=\"" + Escape(c.name) + "\"} " +
           std::to_string(c.storage_bytes) + "\n";
  }
  out += "# HELP mnemo_collection_index_memory_bytes Approximate index memory per collection.\n";
  out += "# TYPE mnemo_collection_index_memory_bytes gauge\n";
  for (const auto& c : collections) {
    out += "mnemo_collection_index_memory_bytes{collection=\"" + Escape(c.name) + "\"} " +
           std::to_string(c.index_memory_bytes) + "\n";
  }
  return out;
}

}  // namespace mnemo::net

#include "index/index_spec.h"

namespace mnemo::index {

Result<Metric> ParseMetric(std::string_view name) {
  if (name == "l2" || name == "L2") return Metric::kL2;
  if (name == "ip" || name == "IP" || name == "inner_product") return Metric::kInnerProduct;
  if (name == "cosine") return Metric::kCosine;
  return Status::InvalidArgument("unknown metric '" + std::string(name) +
                                 "' (expected l2, ip or cosine)");
}

std::string_view MetricName(Metric metric) {
  switch (metric) {
    case Metric::kL2: return "l2";
    case Metric::kInnerProduct: return "ip";
    case Metric::kCosine: return "cosine";
  }
  return "?";
}

bool HigherIsCloser(Metric metric) { return metric != Metric::kL2; }

}  // namespace mnemo::index

#include "common/host_port.h"

#include <stdexcept>

namespace mnemo {

Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return Status::InvalidArgument("address '" + address + "' is not HOST:PORT");
  }
  *host = address.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  try {
    int p = std::stoi(address.substr(colon + 1));
    if (p < 0 || p > 65535) throw std::out_of_range("port");
    *port = uint16_t(p);
  } catch (const std::exception&) {
    return Status::InvalidArgument("address '" + address + "' has no valid port");
  }
  return Status::OK();
}

}  // namespace mnemo

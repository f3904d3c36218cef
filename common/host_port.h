// "host:port" addresses, as mnemod's --listen and the clients' --addr take
// them ("127.0.0.1:7070", "[::1]:7070", "localhost:7070").
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace mnemo {

// Splits `address` into its host (brackets of an IPv6 literal removed) and
// port. InvalidArgument when it is not HOST:PORT with a port in 0..65535;
// then *host and *port are unspecified.
Status SplitHostPort(const std::string& address, std::string* host, uint16_t* port);

}  // namespace mnemo

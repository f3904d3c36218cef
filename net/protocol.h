// The wire protocol's framing and the helpers both ends share: verifying an
// inbound frame, building error replies, and the limits that keep a
// malformed or hostile peer from hurting the server.
#pragma once

#include <cstdint>
#include <string_view>

#include <flatbuffers/flatbuffers.h>

#include "common/status.h"
#include "net/mnemo_generated.h"

namespace mnemo::net {

inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kLengthPrefixBytes = 4;
inline constexpr uint32_t kDefaultMaxFrameBytes = 256u << 20;

// Bounds for the FlatBuffers verifier: nesting is shallow in this schema, and
// the table count bounds the per-entry payload tables of one upsert.
inline constexpr uint32_t kVerifierMaxDepth = 16;
inline constexpr uint32_t kVerifierMaxTables = 4u << 20;

// Verifies `bytes` as a RequestFrame; InvalidArgument when it is not one or
// speaks a newer protocol version.
Result<const wire::RequestFrame*> VerifyRequest(std::string_view bytes);
Result<const wire::ResponseFrame*> VerifyResponse(std::string_view bytes);

// A finished ResponseFrame carrying `status` (which must not be OK).
flatbuffers::DetachedBuffer ErrorResponse(uint64_t request_id, const Status& status);

// The operation's name, for logs and metrics ("search", "upsert", ...).
const char* RequestName(wire::Request type);

// Little-endian uint32 length prefix.
void PutLength(uint8_t* dst, uint32_t length);
uint32_t GetLength(const uint8_t* src);

}  // namespace mnemo::net

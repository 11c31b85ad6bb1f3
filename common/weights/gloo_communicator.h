// Gloo backend of Communicator (torch c10d ProcessGroupGloo over TCP). Rendezvous: rank 0 hosts
// a c10d TCPStore; each group uses its own key prefix in it ("host:port/group-<id>"). A hung or
// dead peer makes Broadcast fail after the group's timeout (Gloo's own op timeout).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/weights/communicator.h"

namespace rhythm::common::weights {

absl::StatusOr<std::unique_ptr<CommunicatorFactory>> NewGlooFactory(
    const CollectiveOptions& options);

}  // namespace rhythm::common::weights

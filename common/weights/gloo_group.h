// The torch c10d pieces every Gloo group in rhythm is made of: a TCPStore hosted by rank 0 (or
// a client of one), and a ProcessGroupGloo over it. Shared by the weight group's backend
// (gloo_communicator.cc) and the data-parallel learner's ranks (learner/rank_group.cc).
// This header includes c10d: include it from .cc files only (compiled with USE_C10D_GLOO).
#pragma once

#include <chrono>
#include <exception>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp"
#include "torch/csrc/distributed/c10d/TCPStore.hpp"

namespace rhythm::common::weights {

// At least 1 ms.
std::chrono::milliseconds GlooMillis(absl::Duration d);
// An exception's message without the backtrace c10 appends.
std::string FirstLine(const std::exception& e);
// gethostname(), or 127.0.0.1 when it fails.
std::string LocalHostName();

// Hosts a store on `host`:`port` (port 0 = any free port; read it back with getPort()).
// UNAVAILABLE naming the port when it cannot listen.
absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> HostStore(const std::string& host, int port);
// A client of the store at `host`:`port`; UNAVAILABLE when it is not reachable within `timeout`.
absl::StatusOr<c10::intrusive_ptr<c10d::Store>> ConnectStore(const std::string& host, int port,
                                                             absl::Duration timeout);

// Joins the Gloo group of `world_size` ranks that meets under `prefix` in `store`: blocks until
// every rank joined or `timeout` (which also bounds every later collective) passed. `host`:
// the address this rank's endpoints bind and announce (empty = from the hostname);
// `connections`: devices (TCP pairs per peer) and worker threads.
absl::StatusOr<c10::intrusive_ptr<c10d::ProcessGroupGloo>> JoinGlooGroup(
    c10::intrusive_ptr<c10d::Store> store, const std::string& prefix, int rank, int world_size,
    absl::Duration timeout, const std::string& host, int connections);

}  // namespace rhythm::common::weights

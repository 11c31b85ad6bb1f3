// Communicator: one collective group, rank 0 broadcasting bytes to the others. The group logic
// (common/weights/weight_group.h) is written against this interface once; the backends are
// Gloo on CPUs (gloo_communicator.h, torch c10d) and NCCL on GPUs (nccl_communicator.h, built
// with RHYTHM_WITH_NCCL). No LibTorch or CUDA types appear here.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "rhythm/v1/transport.pb.h"

namespace rhythm::common::weights {

class Communicator {
 public:
  virtual ~Communicator() = default;
  // Rank 0 sends `size` bytes at `data` (host memory); every other rank receives them into
  // `data`. Every member must call it with the same size. Returns DEADLINE_EXCEEDED or
  // UNAVAILABLE when a peer died or hung past the group's timeout; the communicator is then
  // unusable (Abort it and form a new group).
  virtual absl::Status Broadcast(void* data, size_t size) = 0;
  // Gives up on outstanding operations so that every rank's calls return; idempotent.
  virtual void Abort() = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
};

class CommunicatorFactory {
 public:
  virtual ~CommunicatorFactory() = default;
  virtual v1::TransportKind kind() const = 0;
  // Rank 0: rendezvous data for a new group with id `group_id` (handed to members over gRPC).
  virtual absl::StatusOr<std::string> NewRendezvous(int64_t group_id) = 0;
  // Every rank, rank 0 included: joins the group; blocks until all `world_size` ranks joined,
  // or fails after `timeout` (which also bounds each later Broadcast).
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Connect(const std::string& rendezvous,
                                                                int rank, int world_size,
                                                                absl::Duration timeout) = 0;
};

struct CollectiveOptions {
  // Address this process's endpoint binds to and announces; empty = from the hostname.
  std::string host;
  // Rank 0 (the learner): the rendezvous store's port (0 = any free port).
  int store_port = 0;
  // NCCL: the CUDA device this process uses.
  int cuda_device = 0;
  // Rank 0 only hosts the rendezvous (a Gloo TCP store); members only connect.
  bool host_rendezvous = false;
};

// The factory for `kind` (GLOO or NCCL): UNIMPLEMENTED for NCCL when built without
// RHYTHM_WITH_NCCL, FAILED_PRECONDITION when NCCL finds no GPU, INVALID_ARGUMENT for others.
absl::StatusOr<std::unique_ptr<CommunicatorFactory>> NewCommunicatorFactory(
    v1::TransportKind kind, const CollectiveOptions& options);

}  // namespace rhythm::common::weights

// RankGroup: the data-parallel learner's ranks as one torch c10d group (Gloo on CPU; NCCL on
// GPUs when the linked LibTorch has it), and the small protocol rank 0 drives them with.
//
//   rank 0 (the learner process that serves actors)      ranks 1 .. N-1 (learner/rank_follower.h)
//   hosts the store, announces it ─────────────────────▶ read <run_dir>/learner-rendezvous (or
//                                                        learner.rendezvous_address), join
//   ExchangeCommand(kSync) + weights, moments ─────────▶ take them
//   ExchangeCommand(kStep) + BroadcastBytes(batch) ────▶ Trainer step on their share of it
//     (both sides: bucketed AllReduceSum of gradients, AllGather of the updated shards)
//   ExchangeCommand(kIdle) every heartbeat_interval while no batch is ready
//   ExchangeCommand(kGatherState) + Gather (checkpoint) ▶ send their moment shards to rank 0
//   ExchangeCommand(kStop) ────────────────────────────▶ exit 0
//
// Commands travel as an all-reduce, not a broadcast, so that rank 0 also waits for every other
// rank: a rank that died or hangs fails the next heartbeat within learner.rank_timeout_s even
// while rank 0 waits for rollouts.
//
// Errors: every collective returns UNAVAILABLE, naming itself and the rank, when a peer died
// or did not take part within the timeout; the group is then aborted and every later call
// fails at once (the learner stops; `--resume` forms a new group). Tensors may be on either
// device: a collective stages them on its group's (CUDA for NCCL, the CPU for Gloo) and writes
// the result back. No c10d types appear here. Thread-safety: none; one thread (the training thread) makes every call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ATen/core/Tensor.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "learner/batch_assembler.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

enum class RankCommand : int64_t {
  kIdle = 1,         // heartbeat: nothing to do
  kSync = 2,         // weights, moments, version and optimizer steps follow (rank 0's)
  kStep = 3,         // a batch follows (BroadcastBytes of EncodeBatch); then one Trainer step
  kGatherState = 4,  // gather the moment shards to rank 0 (a checkpoint)
  kStop = 5,         // leave the loop and exit 0
};

class RankGroup {
 public:
  struct Options {
    int world_size = 1;
    int rank = 0;
    // host:port of rank 0's store; empty = rank 0 picks a free port on 127.0.0.1 and announces
    // it in AnnouncePath(run_dir) (one machine).
    std::string rendezvous_address;
    std::string run_dir;
    // Bounds the rendezvous and every collective.
    absl::Duration timeout = absl::Seconds(60);
    // Use NCCL (CUDA tensors); UNIMPLEMENTED when this LibTorch has no NCCL.
    bool nccl = false;

    // learner.world_size, rank, rendezvous_address, rank_timeout_s, run_dir, and NCCL when
    // runtime.device is cuda.
    static Options FromConfig(const v1::RhythmConfig& config);
  };

  // Hosts (rank 0) or finds the store and joins the group: blocks until all world_size ranks
  // joined. UNAVAILABLE when they do not within the timeout; INVALID_ARGUMENT naming the field
  // for a rank outside [0, world_size) or a malformed rendezvous_address.
  static absl::StatusOr<std::unique_ptr<RankGroup>> Create(const Options& options);
  ~RankGroup();

  // <run_dir>/learner-rendezvous: "host:port" of rank 0's store, written atomically.
  static std::string AnnouncePath(const std::string& run_dir);

  int rank() const;
  int world_size() const;
  absl::Duration timeout() const;
  bool aborted() const;
  void Abort();

  // Rank 0 passes its command and `payload`; the others receive them. See the file comment.
  absl::Status ExchangeCommand(RankCommand& command, int64_t& payload);
  // `t` (contiguous) from rank 0 to every rank, in place.
  absl::Status Broadcast(at::Tensor& t);
  // Rank 0's `bytes` to every rank (their `bytes` are replaced).
  absl::Status BroadcastBytes(std::string& bytes);
  // Sums `flat` (1-D, contiguous) over the ranks in place, in buckets of kBucketBytes that are
  // all in flight at once.
  absl::Status AllReduceSum(at::Tensor& flat);
  // Every rank's `shard` (1-D, the same size everywhere) laid end to end, on every rank.
  absl::StatusOr<at::Tensor> AllGather(const at::Tensor& shard);
  // The same, on rank 0 only (the others get an undefined tensor): a checkpoint's moments.
  absl::StatusOr<at::Tensor> GatherToRank0(const at::Tensor& shard);

  static constexpr int64_t kBucketBytes = 8 << 20;

 private:
  struct Impl;
  explicit RankGroup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The trailing -N of this host's name ($HOSTNAME, else gethostname()): a Kubernetes
// StatefulSet pod's ordinal, for --rank-from-hostname. INVALID_ARGUMENT naming the host name
// when it has none.
absl::StatusOr<int> RankFromHostName();

// The batch rank 0 hands the other ranks: groups of serialized rollouts. One codec, both ways.
std::string EncodeBatch(const std::vector<Group>& batch);
// DATA_LOSS when `bytes` is not EncodeBatch's output.
absl::StatusOr<std::vector<Group>> DecodeBatch(const std::string& bytes);

}  // namespace rhythm::learner

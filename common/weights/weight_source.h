// WeightSource: where an actor gets newer policy weights, behind one question asked between
// generation batches: "anything newer than version v?" (docs/architecture.md §1 step 2, §4.8).
//
//   GrpcWeightSource      the learner's WatchVersions stream, kept open, is the only word on
//                         which version is newest; a newer one is downloaded with FetchOverGrpc
//                         while the watch that announced it stays open (the learner pins it).
//   GroupWeightSource     membership of the learner's broadcast group (Gloo / NCCL): versions
//                         arrive on a background thread into a staging buffer, so taking one
//                         costs no wait.
//   FallbackWeightSource  a primary (the group) while it is connected, a fallback (gRPC) while
//                         it is not, and for the first weights.
//
// NewActorWeightSource builds the one that transport.kind asks for. A source never touches the
// model: the caller applies the bytes (common/model/flat_weights.h) and hands them back with
// Recycle.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/backoff.h"
#include "common/weights/communicator.h"
#include "common/weights/weight_client.h"
#include "common/weights/weight_metrics.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"

namespace rhythm::common::weights {

// One version's flat buffer, verified against its announcement's checksum.
struct WeightUpdate {
  v1::WeightVersion announcement;  // version, tensors, wire dtype
  std::string bytes;
  v1::TransportKind transport = v1::TRANSPORT_KIND_GRPC;  // how it arrived
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;

  // A version newer than `have` (-1: the caller has no weights), or nullopt when the source
  // knows of none. May block while it downloads. Errors leave the caller's weights as they are:
  // UNAVAILABLE / NOT_FOUND / DATA_LOSS (the learner could not be reached, no longer keeps the
  // version, or it arrived corrupt: ask again later), INVALID_ARGUMENT (the learner announced
  // something unusable), CANCELLED (the source was stopped).
  virtual absl::StatusOr<std::optional<WeightUpdate>> Newer(int64_t have) = 0;

  // True while the source hears of new versions by itself as they are published (an open
  // watch that has announced; a connected group member).
  virtual bool Connected() const = 0;

  // The caller will not ask for a while (another source delivers): the source may close what
  // it holds open, and with it the learner's pins. The next Newer opens it again.
  virtual void Pause() {}

  // Takes back the bytes of an update once they are swapped in, for the next one to reuse.
  virtual void Recycle(std::string /*bytes*/) {}
};

// The actor's gRPC weight source. A background thread keeps one WatchVersions stream open
// (reconnecting with backoff when it ends, as it does when the learner goes away or a
// keepalive finds the connection dead) and remembers the first and the newest version it
// announced. The learner keeps both fetchable while the watch is open, so:
//   - Newer(v) with nothing newer than v announced returns nullopt at once (no call is made);
//   - with something newer, it downloads it if it is the open watch's first announcement;
//     otherwise it first reopens the watch, whose first announcement is then the newest
//     version, pinned for the whole download however many versions follow;
//   - with no watch open it waits up to announce_timeout for one if the caller has no weights
//     yet or the source was paused, and otherwise returns nullopt (the thread is reconnecting).
// The watch stays open after a download, so the learner also holds the version last fetched
// until the next download reopens it (or Pause closes it).
// Thread-safety: Newer from one thread at a time; Connected, Pause and Stop from any.
class GrpcWeightSource final : public WeightSource {
 public:
  struct Options {
    std::string actor_id;
    int fetch_streams = 1;  // FetchOptions::streams
    // How long Newer waits for a (re)opened watch's first announcement.
    absl::Duration announce_timeout = absl::Seconds(10);
    // Between attempts to open the watch while the learner cannot be reached.
    BackoffOptions reconnect;
    uint64_t seed = 0;
    ActorWeightMetrics* metrics = nullptr;  // optional
  };
  // Starts watching at once. `stub` must outlive the source.
  GrpcWeightSource(v1::Weights::StubInterface& stub, Options options);
  ~GrpcWeightSource() override;  // Stop()s

  absl::StatusOr<std::optional<WeightUpdate>> Newer(int64_t have) override;
  bool Connected() const override;
  void Pause() override;
  // Closes the watch and joins its thread; Newer then returns CANCELLED. Idempotent.
  void Stop();

 private:
  void WatchLoop();
  // Cancels the open watch on purpose (a reopen or a pause); its announcements stop counting.
  void CloseActiveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  v1::Weights::StubInterface& stub_;
  const Options options_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reopen_ ABSL_GUARDED_BY(mu_) = false;     // Newer wants a new watch now
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;  // the open watch is being closed on purpose
  grpc::ClientContext* active_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Streams opened that announced at least once.
  uint64_t streams_ ABSL_GUARDED_BY(mu_) = 0;
  // The open watch's first and newest announcement; empty while none is open.
  std::optional<v1::WeightVersion> first_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::WeightVersion> latest_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// The actor's membership of the learner's broadcast group: a background thread joins the group
// (GroupMember) and keeps the newest version received; when the stream ends it joins again
// after a backoff, except when the learner has no group of this kind or the communicator
// cannot be built (then it stops for good and Connected stays false). Newer(v) hands over the
// received version if it is newer than v (nullopt otherwise); it never blocks.
// Thread-safety: every method from any thread.
class GroupWeightSource final : public WeightSource {
 public:
  struct Options {
    std::string actor_id;
    v1::TransportKind kind = v1::TRANSPORT_KIND_GLOO;  // GLOO or NCCL
    CollectiveOptions collective;
    BackoffOptions rejoin{absl::Seconds(1), absl::Seconds(10), 2.0, 0.5};
    uint64_t seed = 0;
    ActorWeightMetrics* metrics = nullptr;  // optional
  };
  // Starts joining at once. `stub` must outlive the source.
  GroupWeightSource(v1::Weights::StubInterface& stub, Options options);
  ~GroupWeightSource() override;  // Stop()s

  absl::StatusOr<std::optional<WeightUpdate>> Newer(int64_t have) override;
  bool Connected() const override;
  void Recycle(std::string bytes) override;
  // Leaves the group and joins the thread (a broadcast in flight ends at the group's timeout).
  void Stop();

 private:
  void Loop();

  v1::Weights::StubInterface& stub_;
  const Options options_;
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Replaced only by the loop thread, so it stays alive while that thread runs it.
  std::unique_ptr<GroupMember> member_ ABSL_GUARDED_BY(mu_);
  // The newest version received, not yet taken.
  std::optional<ReceivedVersion> received_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Versions from `primary` whenever it has one; from `fallback` while the primary is not
// connected, or while the caller has no weights yet. While the primary is connected and the
// caller has weights, the fallback is paused. Every update the fallback supplies counts in
// rhythm_actor_weight_fallbacks_total. Recycled bytes go to the primary.
// Thread-safety: that of the two sources; Newer from one thread at a time.
class FallbackWeightSource final : public WeightSource {
 public:
  FallbackWeightSource(std::unique_ptr<WeightSource> primary,
                       std::unique_ptr<WeightSource> fallback,
                       ActorWeightMetrics* metrics = nullptr);

  absl::StatusOr<std::optional<WeightUpdate>> Newer(int64_t have) override;
  bool Connected() const override;
  void Pause() override;
  void Recycle(std::string bytes) override;

 private:
  const std::unique_ptr<WeightSource> primary_;
  const std::unique_ptr<WeightSource> fallback_;
  ActorWeightMetrics* const metrics_;
};

struct ActorWeightSourceOptions {
  std::string actor_id;
  BackoffOptions reconnect;  // the watch's reconnects (the actor's own backoff)
  uint64_t seed = 0;
  ActorWeightMetrics* metrics = nullptr;  // optional
  int cuda_device = 0;  // NCCL: the actor's GPU (runtime.device's index)
};

// For transport.kind GLOO or NCCL: FallbackWeightSource(group, gRPC); otherwise the gRPC
// source alone. `stub` must outlive the source.
std::unique_ptr<WeightSource> NewActorWeightSource(v1::Weights::StubInterface& stub,
                                                   const v1::TransportConfig& transport,
                                                   const ActorWeightSourceOptions& options);

}  // namespace rhythm::common::weights

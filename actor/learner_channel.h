// The actor's gRPC channel to the learner, built in one place so that rhythm-actor and the
// reconnect test (tests/learner_reconnect_test.cc) get the same channel.
//
// Why more than grpc::CreateCustomChannel: measured against a learner killed and resumed on the
// same port (gRPC 1.51), a plain channel stays failed for up to 5 s after the learner is
// serving again, whatever the reconnect backoff, and its calls fail with "tcp handshaker
// shutdown". The cause is polling, not backoff. While the subchannel is in TRANSIENT_FAILURE,
// calls without wait_for_ready (all of the actor's) fail at once without polling the channel,
// so the reconnect attempt's socket is not polled by anyone: its result (refused, or
// connected) goes unseen until gRPC's backup poller runs (every 5 s,
// GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS) or the attempt's deadline cancels it (that
// cancellation is the "tcp handshaker shutdown" error). LearnerChannel therefore keeps one
// thread watching the channel's connectivity state, which polls it, so each attempt's result
// is seen when it happens; the backoff arguments then bound how soon the next attempt comes.
//
// Thread-safety: channel() may be used from any thread; the object itself is not copied or
// moved (its thread refers to it).
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::actor {

// Keepalive ping interval (and ping timeout) of the actor's channel, in milliseconds. The
// learner's server accepts pings at this rate.
inline constexpr int kKeepaliveMs = 5000;

// The channel's arguments: 64 MiB message limits both ways (weight chunks), gRPC's subchannel
// reconnect backoff derived from the actor's own backoff (see the .cc for the mapping and
// why), and keepalive pings every kKeepaliveMs.
grpc::ChannelArguments LearnerChannelArguments(const v1::ActorConfig& config);

// A channel to config.learner_address() with LearnerChannelArguments, plus the
// thread that keeps it polled (above). The thread starts connecting at once and stops, joined,
// in the destructor (within ~0.25 s). Stubs hold their own reference to the channel: one that
// outlives this object still works, but sees a returning learner late again.
class LearnerChannel {
 public:
  // Plaintext.
  explicit LearnerChannel(const v1::ActorConfig& config);
  // With the credentials and server name `security` says (common/security/credentials.h):
  // INVALID_ARGUMENT naming the key for an unreadable file or a token without TLS.
  static absl::StatusOr<std::unique_ptr<LearnerChannel>> Create(
      const v1::ActorConfig& config, const v1::SecurityConfig& security);
  LearnerChannel(const v1::ActorConfig& config,
                 const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                 const grpc::ChannelArguments& args);
  ~LearnerChannel();
  LearnerChannel(const LearnerChannel&) = delete;
  LearnerChannel& operator=(const LearnerChannel&) = delete;

  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  void Watch();

  const std::shared_ptr<grpc::Channel> channel_;
  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace rhythm::actor

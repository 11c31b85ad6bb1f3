#include "actor/learner_channel.h"

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "common/security/credentials.h"
#include "common/weights/weight_client.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace rhythm::actor {

grpc::ChannelArguments LearnerChannelArguments(const v1::ActorConfig& config) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(common::weights::kReceiverMaxMessageBytes);
  args.SetMaxSendMessageSize(common::weights::kReceiverMaxMessageBytes);
  // gRPC's subchannel reconnect backoff (client_channel/subchannel.cc): after a failed
  // connection attempt the next one comes after a delay that starts at INITIAL, grows x1.6 per
  // failure up to MAX, each delay jittered by +-20% (gRPC clamps both to >= 100 ms). Defaults
  // are 1 s and 120 s, independent of the actor's backoff. The channel's attempts are cheap
  // (a TCP handshake), and the actor's own retry loops (stream, register) already wait up to
  // backoff_max_s, so the channel retries twice as often: with the jitter at most 0.6 x
  // backoff_max_s passes between the learner serving again and the next attempt, and the
  // channel is connected by the time the actor retries.
  const auto ms = [](double seconds) {
    return static_cast<int>(std::clamp(seconds * 1000.0, 100.0, 86400000.0));
  };
  const double max_s = config.backoff_max_s() / 2;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              ms(std::min(config.backoff_initial_s(), max_s)));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, ms(max_s));
  // Despite its name, MIN_RECONNECT_BACKOFF is the shortest time one connection attempt is
  // given (its deadline is max(next attempt, now + this); default 20 s). Too short and a busy
  // learner's handshake is cut off again and again; too long and an attempt into a black hole
  // (a vanished container's address: no refusal, no answer) holds the channel that long.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, ms(std::max(1.0, config.backoff_max_s())));
  // Keepalive pings find a connection that went silent (a partition, a dead host: no RST
  // ever arrives) within kKeepaliveMs + kKeepaliveMs instead of TCP's retransmission timers,
  // with or without calls in flight. The learner permits pings this frequent
  // (learner_server.cc).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  return args;
}

LearnerChannel::LearnerChannel(const v1::ActorConfig& config)
    : LearnerChannel(config, grpc::InsecureChannelCredentials(), LearnerChannelArguments(config)) {
}

LearnerChannel::LearnerChannel(const v1::ActorConfig& config,
                               const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                               const grpc::ChannelArguments& args)
    : channel_(grpc::CreateCustomChannel(config.learner_address(), credentials, args)),
      watcher_([this] { Watch(); }) {}

absl::StatusOr<std::unique_ptr<LearnerChannel>> LearnerChannel::Create(
    const v1::ActorConfig& config, const v1::SecurityConfig& security) {
  absl::StatusOr<common::security::ClientSecurity> s =
      common::security::ClientCredentialsFromConfig(security, config.learner_address());
  if (!s.ok()) return s.status();
  grpc::ChannelArguments args = LearnerChannelArguments(config);
  common::security::AddSecurityArguments(*s, args);
  return std::make_unique<LearnerChannel>(config, s->credentials, args);
}

LearnerChannel::~LearnerChannel() {
  stop_ = true;
  watcher_.join();
}

void LearnerChannel::Watch() {
  while (!stop_.load()) {
    // Asking for the state with try_to_connect also leaves IDLE (after a GOAWAY, say).
    const grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    // Waiting for a change polls the channel (a completion queue joins its pollset set), and
    // returns on the change or at the deadline, whichever is first.
    channel_->WaitForStateChange(state,
                                 std::chrono::system_clock::now() + std::chrono::milliseconds(250));
  }
}

}  // namespace rhythm::actor

// rhythm-actor: generates rollouts on an inference machine and streams them to the learner.
// main.cc only reads flags and wires objects.
#include <unistd.h>

#include <csignal>
#include <iostream>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "actor/actor.h"
#include "actor/learner_channel.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "common/model/load_model.h"
#include "common/security/credentials.h"
#include "common/runtime.h"
#include "common/startup.h"
#include "grpcpp/grpcpp.h"

namespace {

rhythm::actor::Actor* g_actor = nullptr;
void OnSignal(int) {
  if (g_actor != nullptr) g_actor->Stop();
}

std::string RandomRunId() {
  std::random_device rd;
  return absl::StrCat(absl::Hex(static_cast<uint64_t>(rd()) << 32 | rd(), absl::kZeroPad16));
}

// model.dtype (the learner's, which the actor follows by default) and actor.dtype.
absl::Status ValidDTypes(const rhythm::v1::RhythmConfig& config) {
  if (absl::Status d = rhythm::common::model::ModelDType(config.model().dtype()).status();
      !d.ok()) {
    return d;
  }
  return rhythm::common::model::ModelDType(config.actor().dtype(), "actor.dtype").status();
}

}  // namespace

int main(int argc, char** argv) {
  rhythm::common::KeepFreedMemoryInTheHeap();
  using namespace rhythm;
  common::CommonFlags flags;
  common::FlagParser parser(
      "rhythm-actor [--config FILE] [--set KEY=VALUE ...]",
      "A rhythm actor: leases prompts from the learner (actor.learner_address), generates G\n"
      "samples each with attention summaries computed inside the decode loop, verifies them\n"
      "and streams the rollouts to the learner, resending whatever is unacked after a\n"
      "reconnect. Run as many as you like. SIGTERM finishes the current batch, flushes and\n"
      "exits 0, printing 'rhythm-actor: sent N acked M rejected R resent S'. Exits 2 on a bad\n"
      "flag or configuration, with one line naming it.");
  common::RegisterCommonFlags(parser, flags);
  bool check_config = false;
  parser.AddBool("check-config",
                 "validate the flags and configuration, resolve runtime.device against this "
                 "build, print one line and exit: 0 valid, 2 refused, 3 valid but needs the CUDA "
                 "image (no model loading, no network)",
                 &check_config);
  common::Startup start = common::ParseStartup("rhythm-actor", parser, flags, argc, argv, 1, 0);
  if (start.exit) return start.exit_code;
  const v1::RhythmConfig& config = start.config;
  if (check_config) {
    const absl::Status valid =
        config.actor().learner_address().empty()
            ? absl::InvalidArgumentError(
                  "actor.learner_address is empty: set the learner's host:port")
            : ValidDTypes(config);
    return common::FinishConfigCheck("rhythm-actor", config, valid,
                                     "learner " + config.actor().learner_address());
  }
  if (absl::Status d = ValidDTypes(config); !d.ok()) {
    std::cerr << "rhythm-actor: " << d.message() << "\n";
    return 2;
  }
  common::InitRuntime(config.runtime());
  // The device is resolved again when the learner's model arrives; refusing it here fails at
  // start, not after registering.
  if (absl::StatusOr<c10::Device> d = common::ResolveDevice(config.runtime().device()); !d.ok()) {
    std::cerr << "rhythm-actor: " << d.status().message() << "\n";
    return 2;
  }

  std::string actor_id = config.actor().actor_id();
  if (actor_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    actor_id = absl::StrCat(host, "-", getpid());
  }
  auto registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<common::MetricsServer> metrics;
  if (!config.actor().metrics_address().empty()) {
    absl::StatusOr<std::string> token = common::security::MetricsToken(config.security());
    if (!token.ok()) {
      std::cerr << "rhythm-actor: " << token.status().message() << "\n";
      return 2;
    }
    auto m = common::MetricsServer::Start(config.actor().metrics_address(), registry, *token);
    if (!m.ok()) {
      std::cerr << "rhythm-actor: " << m.status().message() << "\n";
      return 1;
    }
    metrics = *std::move(m);
  }
  // Declared before the stubs and the actor, so it outlives them.
  absl::StatusOr<std::unique_ptr<actor::LearnerChannel>> learner_channel =
      actor::LearnerChannel::Create(config.actor(), config.security());
  if (!learner_channel.ok()) {
    std::cerr << "rhythm-actor: " << learner_channel.status().message() << "\n";
    return 2;
  }
  const std::shared_ptr<grpc::Channel>& channel = (*learner_channel)->channel();
  auto stub = v1::Learner::NewStub(channel);
  auto weights = v1::Weights::NewStub(channel);
  actor::Actor a(*stub, *weights, {config, actor_id, RandomRunId(), registry});
  g_actor = &a;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::cout << "rhythm-actor: " << actor_id << " metrics " << (metrics ? metrics->port() : 0)
            << std::endl;
  absl::Status s = a.Run();
  const bool flushed = a.Flush(absl::Seconds(10));
  const actor::StreamerCounters c = a.counters();
  std::cout << "rhythm-actor: sent " << c.sent << " acked " << c.acked << " rejected "
            << c.rejected << " resent " << c.resent << " version " << a.version() << std::endl;
  g_actor = nullptr;
  // Stopped while still waiting for the learner is a clean stop too.
  if (!s.ok() && s.code() != absl::StatusCode::kCancelled) {
    std::cerr << "rhythm-actor: " << s.message() << "\n";
    return 1;
  }
  if (!flushed) RHYTHM_LOG(Warning) << "rhythm-actor: " << c.unacked << " rollouts left unacked";
  return 0;
}

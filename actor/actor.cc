#include "actor/actor.h"

#include <algorithm>
#include <chrono>

#include "common/backoff.h"
#include "common/clock.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/model/load_model.h"
#include "common/runtime.h"
#include "common/status.h"
#include "grpcpp/grpcpp.h"

namespace rhythm::actor {
namespace {

using common::FromGrpc;

std::unique_ptr<grpc::ClientContext> Context(double seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

// Leases over the learner's LeasePrompts.
class LearnerLeaser final : public PromptLeaser {
 public:
  LearnerLeaser(v1::Learner::Stub& stub, std::string actor_id, std::string run_id)
      : stub_(stub), actor_id_(std::move(actor_id)), run_id_(std::move(run_id)) {}

  absl::StatusOr<v1::LeaseResponse> Lease(uint32_t max_prompts) override {
    v1::LeaseRequest req;
    req.set_actor_id(actor_id_);
    req.set_run_id(run_id_);
    req.set_max_prompts(max_prompts);
    v1::LeaseResponse resp;
    RHYTHM_RETURN_IF_ERROR(FromGrpc(stub_.LeasePrompts(Context(10).get(), req, &resp), "lease"));
    return resp;
  }

 private:
  v1::Learner::Stub& stub_;
  const std::string actor_id_;
  const std::string run_id_;
};

}  // namespace

Actor::Actor(v1::Learner::Stub& stub, v1::Weights::Stub& weights, Options options)
    : stub_(stub), weights_stub_(weights), options_(std::move(options)) {
  if (!options_.registry) options_.registry = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<ActorMetrics>(*options_.registry);
  const v1::ActorConfig& a = options_.config.actor();
  RolloutStreamer::Options so;
  so.actor_id = options_.actor_id;
  so.run_id = options_.run_id;
  so.max_unacked = a.max_unacked();
  so.backoff.initial = absl::Seconds(a.backoff_initial_s());
  so.backoff.max = absl::Seconds(a.backoff_max_s());
  so.seed = options_.config.runtime().seed();
  // After a broken stream the loop re-registers (one thread owns registration state).
  streamer_ = std::make_unique<RolloutStreamer>(stub_, so, [this] {
    reregister_ = true;
    return absl::OkStatus();
  });
  streamer_->SetAckObserver([this](const v1::RolloutAck& ack) {
    if (ack.code() == 0) {
      metrics_->rollouts_acked.Increment();
    } else {
      metrics_->rollouts_rejected.Increment();
    }
  });
  leaser_ = std::make_unique<LearnerLeaser>(stub_, options_.actor_id, options_.run_id);
}

Actor::~Actor() {
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
  producer_ready_ = false;
  producer_.reset();
  weights_.reset();  // closes the watch, leaves the group, joins their threads
  streamer_->Close();
}

StreamerCounters Actor::counters() const { return streamer_->counters(); }

bool Actor::Flush(absl::Duration timeout) { return streamer_->Flush(timeout); }

int64_t Actor::version() const { return producer_ready_.load() ? producer_->version() : -1; }

absl::Status Actor::Register() {
  v1::RegisterRequest req;
  req.set_actor_id(options_.actor_id);
  req.set_run_id(options_.run_id);
  req.add_transports(v1::TRANSPORT_KIND_GRPC);
  v1::RegisterResponse resp;
  RHYTHM_RETURN_IF_ERROR(FromGrpc(stub_.Register(Context(10).get(), req, &resp), "register"));
  learner_config_ = resp.config();
  learner_version_ = resp.current().version();
  if (producer_) {
    if (resp.learner_session() != learner_session_) producer_->ForgetVersion();
    producer_->SetGenerationConfig(learner_config_.generation(),
                                   RolloutProducer::TapsWanted(learner_config_.credit()));
  }
  learner_session_ = resp.learner_session();
  reregister_ = false;
  return absl::OkStatus();
}

absl::Status Actor::RegisterWithRetry() {
  const v1::ActorConfig& a = options_.config.actor();
  common::Backoff backoff(
      {absl::Seconds(a.backoff_initial_s()), absl::Seconds(a.backoff_max_s()), 2.0, 0.5},
      options_.config.runtime().seed());
  while (!stop_.load()) {
    absl::Status s = Register();
    if (s.ok()) return s;
    const absl::Duration wait = backoff.Next();
    RHYTHM_LOG(Warning) << "actor: cannot reach the learner (" << s << "); retrying in " << wait;
    absl::SleepFor(wait);
  }
  return absl::CancelledError("stopped before registering");
}

absl::Status Actor::BuildProducer() {
  const v1::RhythmConfig& c = learner_config_;
  // The device is the actor's own setting (its machine), not the learner's.
  RHYTHM_ASSIGN_OR_RETURN(const c10::Device device,
                          common::ResolveDevice(options_.config.runtime().device()));
  // (A fresh tiny model's weights do not matter here: the learner's replace them.)
  // The dtype: the actor's own actor.dtype when set, else the learner's model.dtype.
  const v1::DType dtype = options_.config.actor().dtype() != v1::DTYPE_UNSPECIFIED
                              ? options_.config.actor().dtype()
                              : c.model().dtype();
  RHYTHM_ASSIGN_OR_RETURN(common::model::ModelAndTokenizer loaded,
                          common::model::LoadModelAndTokenizer(c.model().path(), c.model().tiny(),
                                                               0, device, dtype));
  model_ = std::move(loaded.model);
  tokenizer_ = std::move(loaded.tokenizer);
  RHYTHM_ASSIGN_OR_RETURN(task_, common::tasks::CreateTask(c.task(), c.runtime().seed()));

  const v1::ActorConfig& a = options_.config.actor();
  common::weights::ActorWeightSourceOptions wo;
  wo.actor_id = options_.actor_id;
  wo.reconnect = {absl::Seconds(a.backoff_initial_s()), absl::Seconds(a.backoff_max_s()), 2.0, 0.5};
  wo.seed = options_.config.runtime().seed();
  wo.metrics = &metrics_->weights;
  wo.cuda_device = device.is_cuda() ? device.index() : 0;  // NCCL receives on the model's GPU
  weights_ = common::weights::NewActorWeightSource(weights_stub_, options_.config.transport(), wo);

  RolloutProducer::Options po;
  po.actor_id = options_.actor_id;
  po.run_id = options_.run_id;
  po.prompts_per_batch = static_cast<uint32_t>(a.prompts_per_batch());
  po.seed = options_.config.runtime().seed();
  po.generation = c.generation();
  po.taps = RolloutProducer::TapsWanted(c.credit());
  producer_ =
      std::make_unique<RolloutProducer>(std::move(po), *model_, *tokenizer_, *task_, *leaser_,
                                        *weights_, *streamer_, *metrics_, common::RealClock::Get());
  producer_ready_ = true;
  return absl::OkStatus();
}

void Actor::HeartbeatLoop() {
  const absl::Duration every = absl::Seconds(options_.config.actor().heartbeat_interval_s());
  while (!stop_.load()) {
    v1::HeartbeatRequest req;
    req.set_actor_id(options_.actor_id);
    req.set_run_id(options_.run_id);
    req.set_policy_version(producer_->version());
    req.set_unacked(static_cast<uint32_t>(streamer_->counters().unacked));
    std::vector<uint64_t> renew = streamer_->UnackedGroups();
    const std::vector<uint64_t> generating = producer_->GeneratingLeases();
    renew.insert(renew.end(), generating.begin(), generating.end());
    for (uint64_t id : renew) req.add_renew_lease_ids(id);
    v1::HeartbeatResponse resp;
    if (stub_.Heartbeat(Context(5).get(), req, &resp).ok()) {
      learner_version_ = resp.latest_version();
      if (resp.reregister()) reregister_ = true;
    }
    const StreamerCounters c = streamer_->counters();
    metrics_->unacked.Set(static_cast<double>(c.unacked));
    // The streamer keeps running totals; the counters catch up to them.
    metrics_->reconnects.Increment(
        std::max(0.0, static_cast<double>(c.reconnects) - metrics_->reconnects.Value()));
    metrics_->rollouts_resent.Increment(
        std::max(0.0, static_cast<double>(c.resent) - metrics_->rollouts_resent.Value()));
    metrics_->version_lag.Set(static_cast<double>(learner_version_.load() - producer_->version()));
    for (absl::Duration slept; slept < every && !stop_.load(); slept += absl::Milliseconds(50)) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
}

absl::Status Actor::Run() {
  RHYTHM_RETURN_IF_ERROR(RegisterWithRetry());
  RHYTHM_RETURN_IF_ERROR(BuildProducer());
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  common::Backoff backoff({absl::Seconds(options_.config.actor().backoff_initial_s()),
                           absl::Seconds(options_.config.actor().backoff_max_s()), 2.0, 0.5},
                          options_.config.runtime().seed() + 1);
  while (!stop_.load()) {
    if (reregister_.load()) {
      if (!Register().ok()) {
        absl::SleepFor(backoff.Next());
        continue;
      }
    }
    absl::Status s = producer_->RunBatch();
    if (s.code() == absl::StatusCode::kCancelled) break;
    if (!s.ok()) {
      if (s.code() == absl::StatusCode::kInvalidArgument) return s;  // e.g. model does not fit
      RHYTHM_LOG(Warning) << "actor: " << s;
      absl::SleepFor(backoff.Next());
      continue;
    }
    backoff.Reset();
  }
  return absl::OkStatus();
}

}  // namespace rhythm::actor

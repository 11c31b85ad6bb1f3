#include "actor/actor.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/backoff.h"
#include "common/crc32c.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/metric_builders.h"
#include "common/model/flat_weights.h"
#include "common/model/load_model.h"
#include "common/rollout/engine.h"
#include "common/rollout/summary_codec.h"
#include "common/runtime.h"
#include "common/status.h"
#include "common/weights/communicator.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace rhythm::actor {
namespace {

using common::FromGrpc;

std::unique_ptr<grpc::ClientContext> Context(double seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// The actor's Prometheus metrics (rhythm_actor_*).
struct ActorMetrics {
  explicit ActorMetrics(prometheus::Registry& r)
      : tokens_per_second(common::AddGauge(r, "rhythm_actor_tokens_per_second",
                                           "Tokens generated per second, last batch")),
        rollouts_sent(
            common::AddCounter(r, "rhythm_actor_rollouts_sent_total", "Rollouts produced")),
        rollouts_acked(common::AddCounter(r, "rhythm_actor_rollouts_acked_total",
                                          "Rollouts the learner acknowledged (durable)")),
        rollouts_rejected(common::AddCounter(r, "rhythm_actor_rollouts_rejected_total",
                                             "Rollouts the learner rejected as invalid")),
        rollouts_resent(common::AddCounter(r, "rhythm_actor_rollouts_resent_total",
                                           "Rollouts written again after a reconnect")),
        unacked(
            common::AddGauge(r, "rhythm_actor_unacked_rollouts", "Rollouts kept for resending")),
        reward_mean(
            common::AddGauge(r, "rhythm_actor_reward_mean", "Mean reward of the last batch")),
        response_length(common::AddHistogram(r, "rhythm_actor_response_length_tokens",
                                             "Response lengths",
                                             {4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096})),
        policy_version(
            common::AddGauge(r, "rhythm_actor_policy_version", "Version generating now")),
        version_lag(
            common::AddGauge(r, "rhythm_actor_version_lag", "Newest version - version in use")),
        reconnects(common::AddCounter(r, "rhythm_actor_reconnects_total",
                                      "Rollout-stream reconnects")),
        generation_seconds(common::AddHistogram(r, "rhythm_actor_generation_seconds",
                                                "Seconds per batch",
                                                {0.1, 0.5, 1, 2, 5, 10, 30, 60, 120})),
        verification_seconds(common::AddHistogram(r, "rhythm_actor_verification_seconds",
                                                  "Seconds to verify a batch",
                                                  {0.0001, 0.001, 0.01, 0.1, 1})) {}
  prometheus::Gauge& tokens_per_second;
  prometheus::Counter& rollouts_sent;
  prometheus::Counter& rollouts_acked;
  prometheus::Counter& rollouts_rejected;
  prometheus::Counter& rollouts_resent;
  prometheus::Gauge& unacked;
  prometheus::Gauge& reward_mean;
  prometheus::Histogram& response_length;
  prometheus::Gauge& policy_version;
  prometheus::Gauge& version_lag;
  prometheus::Counter& reconnects;
  prometheus::Histogram& generation_seconds;
  prometheus::Histogram& verification_seconds;
};

Actor::Actor(v1::Learner::Stub& stub, v1::Weights::Stub& weights, Options options)
    : stub_(stub), weights_stub_(weights), options_(std::move(options)) {
  if (!options_.registry) options_.registry = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<ActorMetrics>(*options_.registry);
  weight_metrics_ = std::make_unique<common::weights::ActorWeightMetrics>(*options_.registry);
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
}

Actor::~Actor() {
  stop_ = true;
  {
    absl::MutexLock lock(&group_mu_);
    if (member_) member_->Stop();
  }
  if (group_thread_.joinable()) group_thread_.join();
  if (heartbeat_.joinable()) heartbeat_.join();
  streamer_->Close();
}

StreamerCounters Actor::counters() const { return streamer_->counters(); }

bool Actor::Flush(absl::Duration timeout) { return streamer_->Flush(timeout); }

absl::Status Actor::Register() {
  v1::RegisterRequest req;
  req.set_actor_id(options_.actor_id);
  req.set_run_id(options_.run_id);
  req.add_transports(v1::TRANSPORT_KIND_GRPC);
  v1::RegisterResponse resp;
  RHYTHM_RETURN_IF_ERROR(FromGrpc(stub_.Register(Context(10).get(), req, &resp), "register"));
  learner_config_ = resp.config();
  latest_version_ = resp.current().version();
  if (!learner_session_.empty() && resp.learner_session() != learner_session_) version_ = -1;
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

absl::Status Actor::BuildModel(const v1::RhythmConfig& c) {
  // The device is the actor's own setting (its machine), not the learner's.
  RHYTHM_ASSIGN_OR_RETURN(const c10::Device device,
                          common::ResolveDevice(options_.config.runtime().device()));
  // (A fresh tiny model's weights do not matter here: the learner's replace them.)
  RHYTHM_ASSIGN_OR_RETURN(
      common::model::ModelAndTokenizer loaded,
      common::model::LoadModelAndTokenizer(c.model().path(), c.model().tiny(), 0, device));
  model_ = std::move(loaded.model);
  tokenizer_ = std::move(loaded.tokenizer);
  RHYTHM_ASSIGN_OR_RETURN(task_, common::tasks::CreateTask(c.task(), c.runtime().seed()));
  return absl::OkStatus();
}

absl::Status Actor::FetchLatestOverGrpc() {
  const auto start = std::chrono::steady_clock::now();
  // The announcement (tensors, chunks, checksum) comes from WatchVersions' first message.
  v1::WatchVersionsRequest wreq;
  wreq.set_actor_id(options_.actor_id);
  auto ctx = Context(10);
  auto watch = weights_stub_.WatchVersions(ctx.get(), wreq);
  v1::WeightVersion announced;
  const bool got = watch->Read(&announced);
  // The watch stays open until the download is done: the learner keeps the version it
  // announced on it, however many newer ones it publishes meanwhile.
  absl::Cleanup close_watch = [&] {
    ctx->TryCancel();
    (void)watch->Finish();
  };
  if (!got) return absl::UnavailableError("weights: no version announcement");
  common::weights::FetchOptions fo;
  fo.streams = options_.config.transport().fetch_streams();
  fo.metrics = weight_metrics_.get();
  RHYTHM_ASSIGN_OR_RETURN(std::string bytes,
                          common::weights::FetchOverGrpc(weights_stub_, announced, fo));
  const v1::TransportKind kind = options_.config.transport().kind();
  if (kind == v1::TRANSPORT_KIND_GLOO || kind == v1::TRANSPORT_KIND_NCCL) {
    weight_metrics_->sync.fallbacks.Increment();
  }
  return ApplyWeights(announced, bytes, start);
}

absl::Status Actor::ApplyWeights(const v1::WeightVersion& v, const std::string& bytes,
                                 std::chrono::steady_clock::time_point pause_start) {
  RHYTHM_RETURN_IF_ERROR(common::model::ApplyFlatWeights({v.tensors().begin(), v.tensors().end()},
                                                         bytes, v.wire_dtype(), *model_));
  version_ = v.version();
  weight_metrics_->pause_seconds.Observe(Since(pause_start));
  metrics_->policy_version.Set(static_cast<double>(v.version()));
  RHYTHM_LOG(Info) << "actor: now generating with version " << v.version();
  return absl::OkStatus();
}

bool Actor::GroupConnected() {
  absl::MutexLock lock(&group_mu_);
  return member_ != nullptr && member_->connected();
}

void Actor::GroupLoop() {
  const v1::TransportConfig& t = options_.config.transport();
  common::weights::CollectiveOptions co;
  co.host = t.collective_host();
  common::Backoff backoff({absl::Seconds(1), absl::Seconds(10), 2.0, 0.5},
                          options_.config.runtime().seed() + 7);
  while (!stop_.load()) {
    auto factory = common::weights::NewCommunicatorFactory(t.kind(), co);
    if (!factory.ok()) {
      RHYTHM_LOG(Warning) << "actor: cannot use the " << common::weights::TransportName(t.kind())
                          << " weight group, using gRPC: " << factory.status();
      return;
    }
    // Only this thread replaces member_, so the member stays alive while it runs; Run is not
    // called under group_mu_, which its callback and GroupConnected take.
    common::weights::GroupMember* member;
    {
      absl::MutexLock lock(&group_mu_);
      if (stop_.load()) return;
      member_ = std::make_unique<common::weights::GroupMember>(
          &weights_stub_, options_.actor_id, std::move(*factory), weight_metrics_.get());
      member = member_.get();
    }
    absl::Status s = member->Run([this](common::weights::ReceivedVersion r) {
      absl::MutexLock lock(&group_mu_);
      received_ = std::make_unique<common::weights::ReceivedVersion>(std::move(r));
    });
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      RHYTHM_LOG(Warning) << "actor: " << s.message() << "; using gRPC";
      return;
    }
    if (stop_.load()) return;
    const absl::Duration wait = backoff.Next();
    RHYTHM_LOG(Warning) << "actor: " << s << "; using gRPC, joining again in " << wait;
    absl::SleepFor(wait);
  }
}

void Actor::HeartbeatLoop() {
  const absl::Duration every = absl::Seconds(options_.config.actor().heartbeat_interval_s());
  while (!stop_.load()) {
    v1::HeartbeatRequest req;
    req.set_actor_id(options_.actor_id);
    req.set_run_id(options_.run_id);
    req.set_policy_version(version_.load());
    req.set_unacked(static_cast<uint32_t>(streamer_->counters().unacked));
    std::vector<uint64_t> renew = streamer_->UnackedGroups();
    {
      absl::MutexLock lock(&leases_mu_);
      renew.insert(renew.end(), generating_.begin(), generating_.end());
    }
    for (uint64_t id : renew) req.add_renew_lease_ids(id);
    v1::HeartbeatResponse resp;
    if (stub_.Heartbeat(Context(5).get(), req, &resp).ok()) {
      latest_version_ = resp.latest_version();
      if (resp.reregister()) reregister_ = true;
    }
    const StreamerCounters c = streamer_->counters();
    metrics_->unacked.Set(static_cast<double>(c.unacked));
    // The streamer keeps running totals; the counters catch up to them.
    metrics_->reconnects.Increment(
        std::max(0.0, static_cast<double>(c.reconnects) - metrics_->reconnects.Value()));
    metrics_->rollouts_resent.Increment(
        std::max(0.0, static_cast<double>(c.resent) - metrics_->rollouts_resent.Value()));
    metrics_->version_lag.Set(static_cast<double>(latest_version_.load() - version_.load()));
    for (absl::Duration slept; slept < every && !stop_.load(); slept += absl::Milliseconds(50)) {
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
}

absl::Status Actor::GenerateBatch() {
  v1::LeaseRequest req;
  req.set_actor_id(options_.actor_id);
  req.set_run_id(options_.run_id);
  req.set_max_prompts(static_cast<uint32_t>(options_.config.actor().prompts_per_batch()));
  v1::LeaseResponse leases;
  RHYTHM_RETURN_IF_ERROR(FromGrpc(stub_.LeasePrompts(Context(10).get(), req, &leases), "lease"));
  if (leases.leases_size() == 0) {
    absl::SleepFor(absl::Seconds(std::max(0.05, leases.retry_after_s())));
    return absl::OkStatus();
  }
  {
    absl::MutexLock lock(&leases_mu_);
    generating_.clear();
    for (const v1::PromptLease& l : leases.leases()) generating_.push_back(l.lease_id());
  }
  common::rollout::GenerationOptions o =
      common::rollout::GenerationOptionsFromConfig(learner_config_.generation());
  o.samples_per_prompt = leases.leases(0).group_size();
  o.seed = options_.config.runtime().seed() * 1000003 + batches_++;
  o.stop_token_ids = {tokenizer_->eos_id()};
  const common::Tokenizer* tok = tokenizer_.get();
  o.decode = [tok](const std::vector<int32_t>& ids) { return tok->Decode(ids).value_or(""); };
  o.pad_id = tokenizer_->pad_id();
  std::vector<std::vector<int32_t>> prompts;
  for (const v1::PromptLease& l : leases.leases()) {
    prompts.emplace_back(l.prompt_token_ids().begin(), l.prompt_token_ids().end());
  }
  const auto gen_start = std::chrono::steady_clock::now();
  common::rollout::GenerationStats stats;
  RHYTHM_ASSIGN_OR_RETURN(std::vector<common::rollout::GeneratedSample> samples,
                          common::rollout::GenerationEngine(*model_).Generate(prompts, o, &stats));
  const double gen_seconds = Since(gen_start);
  metrics_->generation_seconds.Observe(gen_seconds);
  metrics_->tokens_per_second.Set(stats.new_tokens / std::max(gen_seconds, 1e-9));

  const auto verify_start = std::chrono::steady_clock::now();
  double reward_sum = 0;
  std::vector<v1::Rollout> rollouts;
  for (const common::rollout::GeneratedSample& s : samples) {
    const v1::PromptLease& lease = leases.leases(static_cast<int>(s.prompt_index));
    // A lease that completes an earlier group asks for some sample indices only: the j-th
    // sample generated becomes the j-th index asked for, and the rest are not sent.
    uint32_t sample_index = static_cast<uint32_t>(s.sample_index);
    if (lease.sample_indices_size() > 0) {
      if (s.sample_index >= lease.sample_indices_size()) continue;
      sample_index = lease.sample_indices(static_cast<int>(s.sample_index));
    }
    std::vector<int32_t> body = s.response_ids;
    if (!body.empty() && body.back() == tokenizer_->eos_id()) body.pop_back();
    const std::string completion = tokenizer_->Decode(body).value_or("");
    v1::Rollout r;
    *r.mutable_verifier() = task_->Verify(lease.answer(), completion);
    reward_sum += r.verifier().reward();
    r.set_rollout_id(next_rollout_id_++);
    r.set_actor_id(options_.actor_id);
    r.set_run_id(options_.run_id);
    r.set_prompt_id(lease.prompt_id());
    r.set_group_id(lease.lease_id());
    r.set_sample_index(sample_index);
    r.set_group_size(lease.group_size());
    v1::VersionSpan* span = r.add_version_spans();
    span->set_begin(0);
    span->set_version(version_.load());
    for (int32_t t : s.prompt_ids) r.add_prompt_token_ids(static_cast<uint32_t>(t));
    for (int32_t t : s.response_ids) r.add_response_token_ids(static_cast<uint32_t>(t));
    for (float lp : s.logprobs) r.add_behaviour_logprobs(lp);
    for (float e : s.entropy) r.add_entropy(e);
    r.set_finish_reason(s.finish == common::rollout::FinishReason::kEos ? v1::FINISH_REASON_EOS
                        : s.finish == common::rollout::FinishReason::kStopString
                            ? v1::FINISH_REASON_STOP_STRING
                            : v1::FINISH_REASON_LENGTH);
    if (s.summary) {
      common::rollout::SummaryFields f;
      f.waad = s.summary->waad;
      f.fai = s.summary->fai;
      f.window = o.tap.window;
      f.band_lo = o.tap.band_lo;
      f.band_hi = o.tap.band_hi;
      f.tap_layers = s.summary->tap_layers;
      f.heads_per_layer = s.summary->heads_per_layer;
      f.local_heads = s.summary->local_heads;
      f.global_heads = s.summary->global_heads;
      *r.mutable_summary() = common::rollout::EncodeSummary(f);
    }
    r.set_generation_seconds(gen_seconds);
    metrics_->response_length.Observe(static_cast<double>(s.response_ids.size()));
    rollouts.push_back(std::move(r));
  }
  metrics_->verification_seconds.Observe(Since(verify_start));
  metrics_->reward_mean.Set(reward_sum / std::max<size_t>(1, samples.size()));
  for (v1::Rollout& r : rollouts) {
    RHYTHM_RETURN_IF_ERROR(streamer_->Send(std::move(r)));
    metrics_->rollouts_sent.Increment();
  }
  // From here the streamer's unacked rollouts name them until the learner has them.
  absl::MutexLock lock(&leases_mu_);
  generating_.clear();
  return absl::OkStatus();
}

absl::Status Actor::Run() {
  RHYTHM_RETURN_IF_ERROR(RegisterWithRetry());
  RHYTHM_RETURN_IF_ERROR(BuildModel(learner_config_));
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  const v1::TransportKind kind = options_.config.transport().kind();
  if (kind == v1::TRANSPORT_KIND_GLOO || kind == v1::TRANSPORT_KIND_NCCL) {
    group_thread_ = std::thread([this] { GroupLoop(); });
  }
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
    // Weights change only here, between batches.
    std::unique_ptr<common::weights::ReceivedVersion> received;
    {
      absl::MutexLock lock(&group_mu_);
      received = std::move(received_);
    }
    if (received && received->announcement.version() > version_.load()) {
      absl::Status s =
          ApplyWeights(received->announcement, received->bytes, std::chrono::steady_clock::now());
      {
        absl::MutexLock lock(&group_mu_);
        if (member_) member_->Recycle(std::move(received->bytes));
      }
      if (s.code() == absl::StatusCode::kInvalidArgument) return s;  // model does not fit
    } else if (latest_version_.load() != version_.load() &&
               (!GroupConnected() || version_.load() < 0)) {
      absl::Status s = FetchLatestOverGrpc();
      if (!s.ok()) {
        if (s.code() == absl::StatusCode::kInvalidArgument) return s;  // model does not fit
        RHYTHM_LOG(Warning) << "actor: " << s;
        // With weights in hand, generate with them meanwhile (the learner judges how stale
        // they are) rather than stand idle until a download succeeds.
        if (version_.load() < 0) {
          absl::SleepFor(backoff.Next());
          continue;
        }
      }
    }
    absl::Status s = GenerateBatch();
    if (s.code() == absl::StatusCode::kCancelled) break;
    if (!s.ok()) {
      if (s.code() == absl::StatusCode::kInvalidArgument) return s;
      RHYTHM_LOG(Warning) << "actor: " << s;
      absl::SleepFor(backoff.Next());
      continue;
    }
    backoff.Reset();
  }
  return absl::OkStatus();
}

}  // namespace rhythm::actor

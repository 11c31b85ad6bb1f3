#include "actor/rollout_producer.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "common/logging.h"
#include "common/model/flat_weights.h"
#include "common/rollout/engine.h"
#include "common/rollout/rollout_proto.h"
#include "common/status.h"

namespace rhythm::actor {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

RolloutProducer::RolloutProducer(Options options, common::model::Transformer& model,
                                 const common::Tokenizer& tokenizer,
                                 const common::tasks::Task& task, PromptLeaser& leaser,
                                 common::weights::WeightSource& weights, RolloutSink& sink,
                                 ActorMetrics& metrics, common::Clock& clock)
    : options_(std::move(options)),
      model_(model),
      tokenizer_(tokenizer),
      task_(task),
      leaser_(leaser),
      weights_(weights),
      sink_(sink),
      metrics_(metrics),
      clock_(clock) {}

std::vector<uint64_t> RolloutProducer::GeneratingLeases() const {
  absl::MutexLock lock(&leases_mu_);
  return generating_;
}

absl::Status RolloutProducer::UpdateWeights() {
  // Generation stands still from here until the swap is done (a gRPC download included).
  const auto pause_start = std::chrono::steady_clock::now();
  const int64_t have = version_.load();
  absl::StatusOr<std::optional<common::weights::WeightUpdate>> got = weights_.Newer(have);
  if (!got.ok()) {
    if (got.status().code() == absl::StatusCode::kInvalidArgument) return got.status();
    if (have < 0) return got.status();
    // With weights in hand, generate with them meanwhile (the learner judges how stale they
    // are) rather than stand idle until a download succeeds.
    RHYTHM_LOG(Warning) << "actor: " << got.status() << "; generating with version " << have;
    return absl::OkStatus();
  }
  if (!got->has_value()) {
    if (have < 0) return absl::UnavailableError("actor: no weights to generate with yet");
    return absl::OkStatus();
  }
  common::weights::WeightUpdate& u = **got;
  const v1::WeightVersion& v = u.announcement;
  // INVALID_ARGUMENT (the model does not fit the learner's weights) leaves the model untouched.
  RHYTHM_RETURN_IF_ERROR(common::model::ApplyFlatWeights({v.tensors().begin(), v.tensors().end()},
                                                         u.bytes, v.wire_dtype(), model_));
  version_ = v.version();
  metrics_.weights.pause_seconds.Observe(Since(pause_start));
  metrics_.policy_version.Set(static_cast<double>(v.version()));
  RHYTHM_LOG(Info) << "actor: now generating with version " << v.version() << " (by "
                   << common::weights::TransportName(u.transport) << ")";
  weights_.Recycle(std::move(u.bytes));
  return absl::OkStatus();
}

absl::Status RolloutProducer::RunBatch() {
  // Weights change only here, between batches.
  RHYTHM_RETURN_IF_ERROR(UpdateWeights());
  RHYTHM_ASSIGN_OR_RETURN(v1::LeaseResponse leases, leaser_.Lease(options_.prompts_per_batch));
  if (leases.leases_size() == 0) {
    clock_.SleepFor(absl::Seconds(std::max(0.05, leases.retry_after_s())));
    return absl::OkStatus();
  }
  {
    absl::MutexLock lock(&leases_mu_);
    generating_.clear();
    for (const v1::PromptLease& l : leases.leases()) generating_.push_back(l.lease_id());
  }
  // Delivered rollouts are named by the sink's unacked ones from here; undelivered ones (an
  // error) are dropped and their leases left to expire.
  absl::Cleanup done = [this] {
    absl::MutexLock lock(&leases_mu_);
    generating_.clear();
  };
  RHYTHM_ASSIGN_OR_RETURN(std::vector<std::vector<v1::Rollout>> groups, Generate(leases));
  for (std::vector<v1::Rollout>& group : groups) {
    const double n = static_cast<double>(group.size());
    RHYTHM_RETURN_IF_ERROR(sink_.Deliver(std::move(group)));
    metrics_.rollouts_sent.Increment(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<v1::Rollout>>> RolloutProducer::Generate(
    const v1::LeaseResponse& leases) {
  common::rollout::GenerationOptions o =
      common::rollout::GenerationOptionsFromConfig(options_.generation);
  o.samples_per_prompt = leases.leases(0).group_size();
  o.taps = options_.taps;
  o.seed = options_.seed * 1000003 + batches_++;
  o.stop_token_ids = {tokenizer_.eos_id()};
  const common::Tokenizer* tok = &tokenizer_;
  o.decode = [tok](const std::vector<int32_t>& ids) { return tok->Decode(ids).value_or(""); };
  o.pad_id = tokenizer_.pad_id();
  std::vector<std::vector<int32_t>> prompts;
  for (const v1::PromptLease& l : leases.leases()) {
    prompts.emplace_back(l.prompt_token_ids().begin(), l.prompt_token_ids().end());
  }
  const auto gen_start = std::chrono::steady_clock::now();
  common::rollout::GenerationStats stats;
  RHYTHM_ASSIGN_OR_RETURN(std::vector<common::rollout::GeneratedSample> samples,
                          common::rollout::GenerationEngine(model_).Generate(prompts, o, &stats));
  const double gen_seconds = Since(gen_start);
  metrics_.generation_seconds.Observe(gen_seconds);
  metrics_.tokens_per_second.Set(stats.new_tokens / std::max(gen_seconds, 1e-9));

  const auto verify_start = std::chrono::steady_clock::now();
  const int64_t version = version_.load();
  double reward_sum = 0;
  size_t built = 0;
  std::vector<std::vector<v1::Rollout>> groups(leases.leases_size());
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
    if (!body.empty() && body.back() == tokenizer_.eos_id()) body.pop_back();
    const std::string completion = tokenizer_.Decode(body).value_or("");
    v1::Rollout r;
    *r.mutable_verifier() = task_.Verify(lease.answer(), completion);
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
    span->set_version(version);
    common::rollout::FillFromSample(s, o.tap, r);
    r.set_generation_seconds(gen_seconds);
    metrics_.response_length.Observe(static_cast<double>(s.response_ids.size()));
    groups[static_cast<size_t>(s.prompt_index)].push_back(std::move(r));
    ++built;
  }
  metrics_.verification_seconds.Observe(Since(verify_start));
  metrics_.reward_mean.Set(reward_sum / static_cast<double>(std::max<size_t>(1, built)));
  groups.erase(std::remove_if(groups.begin(), groups.end(),
                              [](const std::vector<v1::Rollout>& g) { return g.empty(); }),
               groups.end());
  return groups;
}

}  // namespace rhythm::actor

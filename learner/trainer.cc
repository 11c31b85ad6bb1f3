#include "learner/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <tuple>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "common/analysis/rhythm_stats.h"
#include "common/credit/advantages.h"
#include "common/credit/logprob_mismatch.h"
#include "common/credit/policy_loss.h"
#include "common/credit/token_credit.h"
#include "common/model/hf_checkpoint.h"
#include "common/model/mixed_precision.h"
#include "common/rollout/sampler.h"
#include "common/rollout/summary_codec.h"
#include "common/status.h"
#include "common/torch_status.h"
#include "learner/checkpoint.h"
#include "learner/rank_group.h"
#include "learner/rollout_validation.h"

namespace rhythm::learner {

namespace credit = common::credit;

// One response, ready for the loss.
struct Trainer::Sequence {
  const v1::Rollout* rollout = nullptr;  // in the batch Step was given
  std::vector<int64_t> ids;              // prompt + response
  int64_t prompt_len = 0;
  int64_t response_len = 0;
  int64_t staleness = 0;       // version before the step - the rollout's oldest version
  std::vector<float> entropy;  // [T] the sampling entropy the actor reported
  size_t group = 0;            // index of its group in the batch
  double reward = 0;           // verifier reward + overlong penalty (before the reward KL)
  bool truncated = false;      // finish_reason length
  double ref_kl_sum = 0;       // sum over its tokens of KL(pi_old || pi_ref) (kl_coef > 0)
  at::Tensor advantage;        // [1] the group advantage
  // The learner's summary under pi_old, filled by OldLogprobsAndSummaries when wanted.
  bool wants_learner_summary = false;
  std::optional<common::rollout::AttentionSummary> learner_summary;
  at::Tensor shaped;           // float [T], filled by CreditPerResponse
  at::Tensor behaviour;        // float [T]
  at::Tensor preplan, anchor;  // float [T] masks
  at::Tensor old_logprobs;     // float [T], filled before the updates
  at::Tensor ref_logprobs;     // float [T], the reference's (kl_coef > 0, kl_placement loss)
  at::Tensor in_filter;        // float [T]: 1 where pi_old's replayed filter keeps the token
  at::Tensor loss_mask;        // float [T]: 1 on the tokens the loss takes
};

namespace {

using Sequence = Trainer::Sequence;

bool AllFinite(const at::Tensor& t) { return !t.defined() || t.isfinite().all().item<bool>(); }

// The trainer guard's culprits among `mbs` (one failing mini-batch or mini-batch chunk): the
// rollouts whose reward, advantage, shaped advantages or log-probs are not finite; all of them
// when none is (the overflow happened inside the model or the loss).
std::vector<uint64_t> OffendingRollouts(const std::vector<const Sequence*>& mbs) {
  std::vector<uint64_t> bad, all;
  for (const Sequence* s : mbs) {
    const uint64_t id = s->rollout != nullptr ? s->rollout->rollout_id() : 0;
    all.push_back(id);
    if (!std::isfinite(s->reward) || !AllFinite(s->advantage) || !AllFinite(s->shaped) ||
        !AllFinite(s->old_logprobs) || !AllFinite(s->behaviour) || !AllFinite(s->ref_logprobs)) {
      bad.push_back(id);
    }
  }
  return bad.empty() ? all : bad;
}

// Padded [n, L] ids and mask, and [n, Tmax] gather indices for the response tokens, on the
// model's device. (Per-sequence tensors stay on the CPU: they are small, and the credit math
// and the guard read them there; Stack moves them over for the loss.)
struct MicroBatch {
  at::Tensor ids, mask, positions, targets, response_mask;
  int64_t tmax = 0;
};

MicroBatch Pack(const std::vector<Sequence*>& seqs, at::Device device) {
  MicroBatch mb;
  int64_t len = 0;
  for (const Sequence* s : seqs) {
    len = std::max<int64_t>(len, s->ids.size());
    mb.tmax = std::max(mb.tmax, s->response_len);
  }
  const int64_t n = static_cast<int64_t>(seqs.size());
  std::vector<int64_t> ids(n * len, 0), pos(n * mb.tmax, 0), tgt(n * mb.tmax, 0);
  std::vector<float> mask(n * len, 0.f), rmask(n * mb.tmax, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    const Sequence& s = *seqs[i];
    for (size_t j = 0; j < s.ids.size(); ++j) {
      ids[i * len + j] = s.ids[j];
      mask[i * len + j] = 1.f;
    }
    for (int64_t j = 0; j < s.response_len; ++j) {
      pos[i * mb.tmax + j] = s.prompt_len - 1 + j;  // the logits that predicted token j
      tgt[i * mb.tmax + j] = s.ids[s.prompt_len + j];
      rmask[i * mb.tmax + j] = 1.f;
    }
  }
  mb.ids = at::tensor(ids, at::kLong).view({n, len}).to(device);
  mb.mask = at::tensor(mask, at::kFloat).view({n, len}).to(device);
  mb.positions = at::tensor(pos, at::kLong).view({n, mb.tmax}).to(device);
  mb.targets = at::tensor(tgt, at::kLong).view({n, mb.tmax}).to(device);
  mb.response_mask = at::tensor(rmask, at::kFloat).view({n, mb.tmax}).to(device);
  return mb;
}

// Per-token [n, Tmax] tensor from per-sequence [T_i] tensors, zero padded, on `device`.
at::Tensor Stack(const std::vector<Sequence*>& seqs, at::Tensor Sequence::*field, int64_t tmax,
                 at::Device device) {
  std::vector<at::Tensor> rows;
  for (const Sequence* s : seqs) {
    const at::Tensor& t = s->*field;
    rows.push_back(at::constant_pad_nd(t.to(at::kFloat), {0, tmax - t.size(0)}, 0));
  }
  return at::stack(rows).to(device);
}

// The log-probs of one forward's response positions, all [n, Tmax].
struct TokenLogprobs {
  at::Tensor logp;       // log pi(token) under the sampler's distribution (filter replayed)
  at::Tensor raw;        // log pi(token) at the temperature, unfiltered (want_raw; = logp
                         // when nothing is filtered)
  at::Tensor entropy;    // entropy of the unfiltered distribution (want_entropy)
  at::Tensor in_filter;  // float: 1 where the filter keeps the token (filtering only)
};

// A CPU copy (a per-sequence tensor out of a forward on the model's device).
at::Tensor ToHost(const at::Tensor& t) {
  return t.to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
}

bool Filters(const ActorSettings& a, double temperature) {
  return temperature > 0 && (a.top_k > 0 || a.top_p < 1.0);
}

// From a forward's logits [n, L, V]. With the actors' top-k / top-p, the sampler's own filter
// (common/rollout/sampler.h FilterLogits) picks the kept set, without gradient (the set is
// piecewise constant in the logits); the token itself is always kept, so a token pi's filter
// would drop (only possible when the weights moved since sampling) gets a finite log-prob and
// in_filter = 0 instead of -inf.
TokenLogprobs ResponseLogprobs(at::Tensor logits, const MicroBatch& mb, bool want_entropy,
                               bool want_raw, double temperature, const ActorSettings& filter) {
  if (temperature > 0 && temperature != 1.0) logits = logits / temperature;
  const int64_t v = logits.size(-1);
  const at::Tensor picked =
      logits.gather(1, mb.positions.unsqueeze(-1).expand({-1, -1, v}));  // [n, Tmax, V]
  const at::Tensor target = mb.targets.unsqueeze(-1);
  TokenLogprobs out;
  at::Tensor logp;
  if (Filters(filter, temperature)) {
    at::Tensor removed;
    {
      at::NoGradGuard no_grad;
      removed =
          at::isinf(common::rollout::FilterLogits(picked.detach(), filter.top_k, filter.top_p));
      out.in_filter = at::logical_not(removed.gather(-1, target).squeeze(-1)).to(at::kFloat);
      removed = removed.scatter(-1, target, false);
    }
    const at::Tensor kept_logp =
        at::log_softmax(picked.masked_fill(removed, -std::numeric_limits<double>::infinity()), -1);
    out.logp = kept_logp.gather(-1, target).squeeze(-1);
    if (want_raw || want_entropy) logp = at::log_softmax(picked, -1);
    if (want_raw) out.raw = logp.gather(-1, target).squeeze(-1);
  } else {
    logp = at::log_softmax(picked, -1);
    out.logp = logp.gather(-1, target).squeeze(-1);
    out.raw = out.logp;
  }
  if (want_entropy) out.entropy = -(logp.exp() * logp).sum(-1);
  return out;
}

// max_t |a_t - l_t| / (2^-11 |l_t| + 1e-5) over the tokens both define; +inf where exactly
// one side is NaN (they disagree on where the signal is defined); 0 over no tokens.
double Fp16ErrorRatio(const std::vector<float>& actor, const std::vector<float>& learner) {
  constexpr double kFp16Rounding = 1.0 / 2048;  // 2^-11: half an fp16 ulp, relative
  double worst = 0;
  for (size_t t = 0; t < std::min(actor.size(), learner.size()); ++t) {
    const bool a_nan = std::isnan(actor[t]), l_nan = std::isnan(learner[t]);
    if (a_nan && l_nan) continue;
    if (a_nan != l_nan) return std::numeric_limits<double>::infinity();
    const double l = learner[t];
    worst = std::max(worst, std::abs(actor[t] - l) / (kFp16Rounding * std::abs(l) + 1e-5));
  }
  return worst;
}

// The per-response options of the configured strategy: one seed per rollout, whichever
// summary feeds it.
credit::TokenCreditOptions CreditOptionsFor(const v1::CreditConfig& config, uint64_t seed,
                                            const v1::Rollout& r) {
  credit::TokenCreditOptions o = credit::TokenCreditOptionsFromConfig(config);
  o.seed = credit::MixSeed(seed, r.rollout_id() ^ std::hash<std::string>()(r.run_id()));
  return o;
}

absl::StatusOr<credit::TokenCredit> CreditFrom(const std::vector<float>& waad,
                                               const std::vector<float>& fai,
                                               const std::vector<float>& entropy,
                                               const credit::TokenCreditOptions& o,
                                               const v1::Rollout& r, const char* source) {
  absl::StatusOr<credit::TokenCredit> c =
      credit::ComputeTokenCredit({at::tensor(waad), at::tensor(fai), at::tensor(entropy)}, o);
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat("rollout ", r.rollout_id(), " (", source,
                                                        " summary): ", c.status().message()));
  }
  return c;
}

}  // namespace

ActorSettings ActorSettings::FromConfig(const v1::GenerationConfig& generation) {
  ActorSettings a;
  a.top_k = generation.top_k();
  a.top_p = generation.top_p();
  a.max_new_tokens = generation.max_new_tokens();
  return a;
}

namespace {

// A mask's bounds: each 0 (off) or on the right side of 1, and low below high.
absl::Status CheckMaskBounds(const char* low_name, double low, const char* high_name, double high) {
  if (low > 0 && low >= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("trainer.", low_name, " = ", low,
                     ": a low bound must be below 1 (or 0 = off), or it "
                     "masks on-policy tokens, whose pi_old / pi_behaviour is 1"));
  }
  if (high > 0 && high <= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("trainer.", high_name, " = ", high,
                     ": a high bound must be above 1 (or 0 = off), or it "
                     "masks on-policy tokens, whose pi_old / pi_behaviour is 1"));
  }
  if (low > 0 && high > 0 && low >= high) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trainer.", low_name, " = ", low, " is not below trainer.", high_name, " = ", high));
  }
  return absl::OkStatus();
}

// The frozen reference: trainer.reference_path, or a copy of `model` as it is now.
absl::StatusOr<std::unique_ptr<common::model::Transformer>> MakeReference(
    const common::model::Transformer& model, const std::string& path) {
  std::unique_ptr<common::model::Transformer> ref;
  if (path.empty()) {
    common::model::CheckpointTensors copy;
    RHYTHM_RETURN_IF_ERROR(common::TorchCall("reference copy", [&]() {
      at::NoGradGuard no_grad;
      for (const auto& [name, t] : model.NamedParameters()) copy.tensors[name] = t.detach();
    }));
    RHYTHM_ASSIGN_OR_RETURN(ref, common::model::Transformer::FromTensors(
                                     model.config(), copy, model.dtype(), model.device()));
    ref->SetRequiresGrad(false);
    return ref;
  }
  const std::string where = absl::StrCat("trainer.reference_path = ", path, ": ");
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(where, "no such directory"));
  }
  absl::StatusOr<std::unique_ptr<common::model::Transformer>> loaded =
      common::model::LoadHfModel(path, model.dtype(), model.device());
  if (!loaded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, loaded.status().message()));
  }
  ref = *std::move(loaded);
  const common::model::ModelConfig& a = model.config();
  const common::model::ModelConfig& b = ref->config();
  const std::string file = absl::StrCat(path, "/config.json");
  if (a.architecture != b.architecture) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, file, " is ", common::model::ArchitectureName(b.architecture),
                     ", the policy ", common::model::ArchitectureName(a.architecture)));
  }
  for (const auto& [field, pa, pb] : std::vector<std::tuple<const char*, int64_t, int64_t>>{
           {"vocab_size", a.vocab_size, b.vocab_size},
           {"hidden_size", a.hidden_size, b.hidden_size},
           {"num_hidden_layers", a.num_layers, b.num_layers},
           {"num_attention_heads", a.num_heads, b.num_heads},
           {"num_key_value_heads", a.num_kv_heads, b.num_kv_heads},
           {"head_dim", a.head_dim, b.head_dim},
           {"intermediate_size", a.intermediate_size, b.intermediate_size}}) {
    if (pa != pb) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, file, " has ", field, " ", pb, ", the policy ", pa));
    }
  }
  ref->SetRequiresGrad(false);
  return ref;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(
    common::model::Transformer& model, const v1::TrainerConfig& trainer,
    const v1::CreditConfig& credit, uint64_t seed, int64_t version, double sampling_temperature,
    const common::rollout::TapOptions& tap, const ActorSettings& actor, RankGroup* ranks) {
  if (credit.summary_source() != v1::SUMMARY_SOURCE_ACTOR &&
      credit.summary_source() != v1::SUMMARY_SOURCE_LEARNER) {
    return absl::InvalidArgumentError(
        absl::StrCat("credit.summary_source = ", v1::SummarySource_Name(credit.summary_source()),
                     " (", static_cast<int>(credit.summary_source()), "): want actor or learner"));
  }
  if (trainer.kl_estimator() == v1::KL_ESTIMATOR_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "trainer.kl_estimator = KL_ESTIMATOR_UNSPECIFIED: want k1, k2 or k3");
  }
  if (trainer.kl_placement() == v1::KL_PLACEMENT_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "trainer.kl_placement = KL_PLACEMENT_UNSPECIFIED: want loss or reward");
  }
  if (trainer.ratio_level() == v1::RATIO_LEVEL_UNSPECIFIED) {
    return absl::InvalidArgumentError(
        "trainer.ratio_level = RATIO_LEVEL_UNSPECIFIED: want token or sequence");
  }
  RHYTHM_RETURN_IF_ERROR(CheckMaskBounds("token_mask_low", trainer.token_mask_low(),
                                         "token_mask_high", trainer.token_mask_high()));
  RHYTHM_RETURN_IF_ERROR(CheckMaskBounds("sequence_mask_low", trainer.sequence_mask_low(),
                                         "sequence_mask_high", trainer.sequence_mask_high()));
  if (trainer.overlong_buffer() > 0 && actor.max_new_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "trainer.overlong_buffer = ", trainer.overlong_buffer(),
        ": the overlong penalty needs generation.max_new_tokens, which the trainer was not given"));
  }
  if (trainer.overlong_buffer() > actor.max_new_tokens && trainer.overlong_buffer() > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("trainer.overlong_buffer = ", trainer.overlong_buffer(),
                     " exceeds generation.max_new_tokens = ", actor.max_new_tokens));
  }
  if (actor.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation.top_k = ", actor.top_k, ": want >= 0 (0 = off)"));
  }
  if (!(actor.top_p > 0 && actor.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation.top_p = ", actor.top_p, ": want a value in (0, 1] (1 = off)"));
  }
  common::rollout::TapOptions resolved = tap;
  if (credit.summary_source() == v1::SUMMARY_SOURCE_LEARNER || credit.summary_agreement()) {
    absl::StatusOr<common::rollout::TapOptions> r =
        common::rollout::ResolveTapOptions(tap, model.config().num_layers);
    if (!r.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "generation tap settings (tap_layers, waad_window, fai_band_lo / fai_band_hi, "
          "head_quantile) for the learner's summaries (credit.summary_source = ",
          credit.summary_source() == v1::SUMMARY_SOURCE_LEARNER ? "learner" : "actor",
          ", credit.summary_agreement = ", credit.summary_agreement() ? "true" : "false",
          "): ", r.status().message()));
    }
    resolved = *std::move(r);
  }
  std::unique_ptr<common::model::Transformer> reference;
  if (trainer.kl_coef() > 0) {
    RHYTHM_ASSIGN_OR_RETURN(reference, MakeReference(model, trainer.reference_path()));
  }
  model.SetRequiresGrad(true);
  if (ranks != nullptr && ranks->world_size() == 1) ranks = nullptr;
  return std::unique_ptr<Trainer>(new Trainer(model, trainer, credit, seed, version,
                                              sampling_temperature, std::move(resolved), actor,
                                              std::move(reference), ranks));
}

Trainer::Trainer(common::model::Transformer& model, const v1::TrainerConfig& trainer,
                 const v1::CreditConfig& credit, uint64_t seed, int64_t version, double temperature,
                 common::rollout::TapOptions tap, ActorSettings actor,
                 std::unique_ptr<common::model::Transformer> reference, RankGroup* ranks)
    : model_(model),
      config_(trainer),
      credit_(credit),
      seed_(seed),
      temperature_(temperature),
      tap_(std::move(tap)),
      actor_(actor),
      reference_(std::move(reference)),
      version_(version),
      ranks_(ranks) {
  const common::model::AdamW::Options o{trainer.adam_beta1(), trainer.adam_beta2(), 1e-8,
                                        trainer.weight_decay()};
  // A bf16 model (model.dtype) computes; AdamW steps fp32 masters of its weights: here, or
  // with ranks sharded in ShardedAdamW (each rank keeps the masters of its shard).
  if (model.dtype() != at::kFloat && ranks_ == nullptr) {
    masters_ = common::model::MasterWeights::From(model);
  }
  const common::model::TensorMap params =
      masters_ ? masters_->parameters() : model.NamedParameters();
  if (ranks_ != nullptr) {
    sharded_ = std::make_unique<common::model::ShardedAdamW>(params, o, ranks_->rank(),
                                                             ranks_->world_size());
    synced_ = ranks_->rank() != 0;  // only rank 0 hands out its state
  } else {
    optimizer_ = std::make_unique<common::model::AdamW>(params, o);
  }
}

Trainer::~Trainer() { StopRanks(); }

absl::StatusOr<StepStats> Trainer::Step(const std::vector<Group>& batch) {
  if (ranks_ != nullptr && ranks_->rank() == 0) {
    RHYTHM_RETURN_IF_ERROR(SyncRanks());
    RHYTHM_RETURN_IF_ERROR(Command(static_cast<int>(RankCommand::kStep), 0));
    std::string bytes = EncodeBatch(batch);
    RHYTHM_RETURN_IF_ERROR(ranks_->BroadcastBytes(bytes));
  }
  return RunStep(batch);
}

absl::StatusOr<StepStats> Trainer::RunStep(const std::vector<Group>& batch) {
  const auto start = std::chrono::steady_clock::now();
  StepStats stats;
  std::vector<Sequence> seqs;
  // 1. Advantages per group, one sequence per response.
  RHYTHM_RETURN_IF_ERROR(BuildSequences(batch, seqs, stats));
  // 2. Old log-probs under the weights that start this step (the reference's, the learner's
  //    summaries).
  RHYTHM_RETURN_IF_ERROR(OldLogprobsAndSummaries(seqs, stats));
  // 3. Advantages per group (after the reward KL) and the loss masks.
  RHYTHM_RETURN_IF_ERROR(AdvantagesAndMasks(seqs, batch.size(), stats));
  // 4. Gamma and shaped advantages per response.
  RHYTHM_RETURN_IF_ERROR(CreditPerResponse(seqs, stats));
  // 5. Mini-batch updates.
  RHYTHM_RETURN_IF_ERROR(Update(seqs, stats));
  // A step the guard abandoned trained nothing: the version stays.
  if (!stats.skipped()) ++version_;
  stats.version = version_;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

absl::Status Trainer::BuildSequences(const std::vector<Group>& batch, std::vector<Sequence>& seqs,
                                     StepStats& stats) const {
  double reward_sum = 0, correct = 0, entropy_sum = 0, staleness = 0;
  int64_t entropy_tokens = 0;
  const bool agreement = credit_.summary_agreement();
  const bool learner_source = credit_.summary_source() == v1::SUMMARY_SOURCE_LEARNER;
  double penalty_sum = 0;
  for (size_t gi = 0; gi < batch.size(); ++gi) {
    const Group& g = batch[gi];
    staleness += static_cast<double>(version_ - BatchAssembler::OldestVersion(g));
    for (size_t i = 0; i < g.size(); ++i) {
      const v1::Rollout& r = g[i];
      Sequence s;
      s.rollout = &r;
      s.prompt_len = r.prompt_token_ids_size();
      s.response_len = r.response_token_ids_size();
      s.ids.assign(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
      s.ids.insert(s.ids.end(), r.response_token_ids().begin(), r.response_token_ids().end());
      s.entropy.assign(r.entropy().begin(), r.entropy().end());
      s.behaviour = at::tensor(
          std::vector<float>(r.behaviour_logprobs().begin(), r.behaviour_logprobs().end()));
      s.group = gi;
      const double penalty =
          credit::OverlongPenalty(s.response_len, actor_.max_new_tokens, config_.overlong_buffer(),
                                  config_.overlong_penalty());
      s.reward = r.verifier().reward() + penalty;
      penalty_sum += penalty;
      stats.overlong_penalized += penalty < 0 ? 1 : 0;
      s.truncated = r.finish_reason() == v1::FINISH_REASON_LENGTH;
      s.staleness = std::max<int64_t>(0, version_ - BatchAssembler::OldestVersion({r}));
      s.wants_learner_summary = learner_source || (agreement && r.has_summary());
      reward_sum += r.verifier().reward();
      correct += r.verifier().correct() ? 1 : 0;
      for (float e : s.entropy) entropy_sum += e;
      entropy_tokens += s.response_len;
      stats.tokens += s.response_len;
      seqs.push_back(std::move(s));
    }
  }
  stats.sequences = static_cast<int64_t>(seqs.size());
  if (seqs.empty()) return absl::InvalidArgumentError("empty batch");
  stats.reward_mean = reward_sum / stats.sequences;
  stats.accuracy = correct / stats.sequences;
  stats.entropy_mean = entropy_tokens > 0 ? entropy_sum / entropy_tokens : 0;
  stats.response_length_mean = static_cast<double>(stats.tokens) / stats.sequences;
  stats.staleness_mean = staleness / batch.size();
  stats.overlong_penalty_mean = penalty_sum / stats.sequences;
  return absl::OkStatus();
}

absl::Status Trainer::OldLogprobsAndSummaries(std::vector<Sequence>& seqs, StepStats& stats) const {
  const size_t micro = static_cast<size_t>(std::max<int64_t>(1, config_.micro_batch_size()));
  // With ranks, each computes every world-th sequence and ShareOldLogprobs hands the results
  // to all (a sequence the learner summarises is computed on every rank: its summary stays
  // where it was made).
  std::vector<size_t> todo;
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (!sharded() || seqs[i].wants_learner_summary ||
        static_cast<int>(i % ranks_->world_size()) == ranks_->rank()) {
      todo.push_back(i);
    }
  }
  absl::Status inner;  // an error a summary returned (not threw): kept as it is
  absl::Status status = common::TorchCall("training step", [&]() {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < todo.size(); i += micro) {
      std::vector<Sequence*> chunk;
      bool capture = false;
      for (size_t j = i; j < std::min(todo.size(), i + micro); ++j) {
        chunk.push_back(&seqs[todo[j]]);
        capture = capture || seqs[todo[j]].wants_learner_summary;
      }
      const MicroBatch mb = Pack(chunk, model_.device());
      // The maps are the softmax probabilities this pass computes anyway; capturing keeps the
      // tapped layers' [n, heads, L, L] alive until the chunk's summaries are taken.
      // Attention as the gradient forward computes it (trainer.attention_chunk), so that
      // pi_old is the first mini-batch's pi to float tolerance, and no untapped layer holds
      // [n, heads, L, L]; the tapped layers attend explicitly when the learner summarises.
      common::model::ForwardOptions fo =
          common::model::ForwardOptions::Training(config_.attention_chunk(), false);
      if (capture) fo.capture_layers = tap_.layers;
      common::model::ForwardOutput out = model_.Forward(mb.ids, mb.mask, fo).value();
      const bool kl = reference_ != nullptr;
      const TokenLogprobs old =
          ResponseLogprobs(std::move(out.logits), mb, false, kl, temperature_, actor_);
      // The reference in the same micro-batch, at the temperature, unfiltered: the KL
      // regularises the model, not the sampler (a token outside the reference's own top-k would
      // otherwise have probability 0 under it).
      at::Tensor ref, kl_tokens;
      if (kl) {
        ref = ResponseLogprobs(reference_->Forward(mb.ids, mb.mask).value().logits, mb, false,
                               false, temperature_, ActorSettings{})
                  .logp;
        kl_tokens = credit::KlPerToken(ref, old.raw, config_.kl_estimator()) * mb.response_mask;
      }
      for (size_t j = 0; j < chunk.size(); ++j) {
        Sequence& s = *chunk[j];
        s.old_logprobs = ToHost(old.logp[j].narrow(0, 0, s.response_len));
        s.in_filter = old.in_filter.defined()
                          ? ToHost(old.in_filter[j].narrow(0, 0, s.response_len))
                          : at::ones({s.response_len});
        if (kl) {
          s.ref_logprobs = ToHost(ref[j].narrow(0, 0, s.response_len));
          s.ref_kl_sum = kl_tokens[j].sum().item<double>();
        }
        if (!s.wants_learner_summary) continue;
        std::vector<at::Tensor> maps;
        for (const at::Tensor& layer : out.attention) {
          maps.push_back(layer[static_cast<int64_t>(j)].to(at::kCPU, at::kFloat));
        }
        absl::StatusOr<common::rollout::AttentionSummary> summary =
            common::rollout::SummaryFromMaps(tap_, maps, s.prompt_len, s.response_len);
        if (!summary.ok()) {
          inner = absl::Status(summary.status().code(),
                               absl::StrCat("rollout ", s.rollout->rollout_id(),
                                            ": learner summary: ", summary.status().message()));
          return;
        }
        s.learner_summary = *std::move(summary);
      }
    }
  });
  RHYTHM_RETURN_IF_ERROR(status);
  RHYTHM_RETURN_IF_ERROR(inner);
  stats.old_pass_sequences = static_cast<int64_t>(todo.size());
  if (sharded()) RHYTHM_RETURN_IF_ERROR(ShareOldLogprobs(seqs));
  if (reference_ != nullptr) {
    double ref_kl_sum = 0;
    int64_t ref_kl_tokens = 0;
    for (const Sequence& s : seqs) {
      ref_kl_sum += s.ref_kl_sum;
      ref_kl_tokens += s.response_len;
    }
    stats.ref_kl = ref_kl_tokens > 0 ? ref_kl_sum / ref_kl_tokens : 0;
  }
  return absl::OkStatus();
}

absl::Status Trainer::ShareOldLogprobs(std::vector<Sequence>& seqs) const {
  const int64_t n = static_cast<int64_t>(seqs.size());
  int64_t tmax = 0;
  for (const Sequence& s : seqs) tmax = std::max(tmax, s.response_len);
  const bool kl = reference_ != nullptr;
  // Rows [old log-probs | in filter | ref log-probs] and a ref KL sum per sequence, filled by
  // the sequence's owner and zero elsewhere: one all-reduce sum makes them every rank's.
  at::Tensor rows = at::zeros({n, (kl ? 3 : 2) * tmax + 1}, at::kDouble);
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int>(i % ranks_->world_size()) != ranks_->rank()) continue;
    const Sequence& s = seqs[static_cast<size_t>(i)];
    const int64_t t = s.response_len;
    rows[i].narrow(0, 0, t).copy_(s.old_logprobs);
    rows[i].narrow(0, tmax, t).copy_(s.in_filter);
    if (kl) rows[i].narrow(0, 2 * tmax, t).copy_(s.ref_logprobs);
    rows[i][-1] = s.ref_kl_sum;
  }
  at::Tensor flat = rows.view({-1});
  RHYTHM_RETURN_IF_ERROR(ranks_->AllReduceSum(flat));
  for (int64_t i = 0; i < n; ++i) {
    Sequence& s = seqs[static_cast<size_t>(i)];
    const int64_t t = s.response_len;
    s.old_logprobs = rows[i].narrow(0, 0, t).to(at::kFloat);
    s.in_filter = rows[i].narrow(0, tmax, t).to(at::kFloat);
    if (kl) s.ref_logprobs = rows[i].narrow(0, 2 * tmax, t).to(at::kFloat);
    s.ref_kl_sum = rows[i][-1].item<double>();
  }
  return absl::OkStatus();
}

absl::Status Trainer::AdvantagesAndMasks(std::vector<Sequence>& seqs, size_t groups,
                                         StepStats& stats) const {
  // Rewards per group, less kl_coef * the response's summed KL with kl_placement reward.
  const bool reward_kl = reference_ != nullptr && config_.kl_placement() == v1::KL_PLACEMENT_REWARD;
  std::vector<std::vector<Sequence*>> by_group(groups);
  for (Sequence& s : seqs) by_group[s.group].push_back(&s);
  const credit::GroupAdvantageOptions adv_opts{credit_.advantage(), credit_.advantage_eps()};
  for (const std::vector<Sequence*>& g : by_group) {
    std::vector<double> rewards;
    for (const Sequence* s : g) {
      rewards.push_back(s->reward - (reward_kl ? config_.kl_coef() * s->ref_kl_sum : 0.0));
    }
    RHYTHM_ASSIGN_OR_RETURN(
        credit::GroupAdvantages adv,
        credit::ComputeGroupAdvantages(
            at::tensor(rewards, at::kDouble).view({1, static_cast<int64_t>(g.size())}), adv_opts));
    for (size_t i = 0; i < g.size(); ++i) g[i]->advantage = adv.advantages[0][i].view({1});
  }
  // Loss masks: truncated responses, tokens outside pi_old's replayed filter, then the
  // off-policy masks on what is left.
  credit::OffPolicyMaskOptions mo;
  mo.token_low = config_.token_mask_low();
  mo.token_high = config_.token_mask_high();
  mo.sequence_low = config_.sequence_mask_low();
  mo.sequence_high = config_.sequence_mask_high();
  mo.tis_cap = config_.tis_cap();
  double weight_sum = 0;
  int64_t weighed = 0, capped = 0;
  common::credit::LogprobMismatch mismatch;  // rollouts of the current weights only
  for (Sequence& s : seqs) {
    at::Tensor mask = s.in_filter.to(at::kFloat);
    if (s.staleness == 0) {
      common::credit::AddLogprobMismatch(s.old_logprobs, s.behaviour, mask, mismatch);
    }
    stats.out_of_filter_tokens +=
        s.response_len - static_cast<int64_t>(std::llround(mask.sum().item<double>()));
    if (config_.mask_truncated() && s.truncated) {
      ++stats.truncated_masked;
      mask = at::zeros_like(mask);
    }
    absl::StatusOr<credit::OffPolicyMask> m = credit::ComputeOffPolicyMask(
        s.old_logprobs.unsqueeze(0), s.behaviour.unsqueeze(0), mask.unsqueeze(0), mo);
    if (!m.ok()) {
      return absl::Status(m.status().code(), absl::StrCat("rollout ", s.rollout->rollout_id(), ": ",
                                                          m.status().message()));
    }
    s.loss_mask = m->keep[0];
    stats.masked_tokens += m->masked_tokens;
    stats.masked_sequences += m->masked_sequences;
    weight_sum += m->weight_sum;
    weighed += m->tokens;
    capped += m->capped_tokens;
  }
  stats.tis_weight_mean = weighed > 0 ? weight_sum / weighed : 0;
  stats.tis_capped_fraction = weighed > 0 ? static_cast<double>(capped) / weighed : 0;
  stats.logprob_mismatch_tokens = mismatch.tokens;
  stats.logprob_mismatch_mean = mismatch.mean_abs();
  stats.logprob_mismatch_max = mismatch.abs_max;
  stats.tis_weight_stddev = mismatch.weight_stddev();
  stats.tis_weight_min = mismatch.tokens > 0 ? mismatch.weight_min : 0;
  stats.tis_weight_max = mismatch.weight_max;
  return absl::OkStatus();
}

absl::Status Trainer::CreditPerResponse(std::vector<Sequence>& seqs, StepStats& stats) const {
  const bool learner_source = credit_.summary_source() == v1::SUMMARY_SOURCE_LEARNER;
  int64_t fai_defined_tokens = 0, amplified_tokens = 0;
  for (Sequence& s : seqs) {
    const v1::Rollout& r = *s.rollout;
    std::optional<common::rollout::SummaryFields> actor;
    if (r.has_summary()) actor = common::rollout::DecodeSummary(r.summary());
    const credit::TokenCreditOptions o = CreditOptionsFor(credit_, seed_, r);
    at::Tensor gamma = at::ones({s.response_len});
    s.preplan = at::zeros({s.response_len});
    s.anchor = at::zeros({s.response_len});
    const std::vector<float>* waad = nullptr;
    const std::vector<float>* fai = nullptr;
    if (learner_source) {
      waad = &s.learner_summary->waad;
      fai = &s.learner_summary->fai;
    } else if (actor) {
      waad = &actor->waad;
      fai = &actor->fai;
    }
    std::optional<credit::TokenCredit> used;
    if (waad != nullptr) {
      RHYTHM_ASSIGN_OR_RETURN(
          used, CreditFrom(*waad, *fai, s.entropy, o, r, learner_source ? "learner" : "actor"));
      const credit::TokenCredit& c = *used;
      int64_t defined = 0;
      for (float f : *fai) defined += std::isnan(f) ? 0 : 1;
      fai_defined_tokens += defined;
      if (defined == 0) ++stats.fai_undefined_responses;
      amplified_tokens += static_cast<int64_t>(c.selected.size());
      gamma = c.gamma;
      for (int64_t t : c.preplan) s.preplan[t] = 1.0;
      for (int64_t t : c.anchor) s.anchor[t] = 1.0;
    } else {
      ++stats.missing_summaries;
    }
    s.shaped =
        credit::ShapeAdvantages(gamma.unsqueeze(0), s.advantage, credit_.shape_negative())[0];
    if (credit_.summary_agreement() && actor && s.learner_summary) {
      const common::rollout::AttentionSummary& l = *s.learner_summary;
      // The source the credit did not use, for the selection's Jaccard.
      RHYTHM_ASSIGN_OR_RETURN(const credit::TokenCredit other,
                              learner_source
                                  ? CreditFrom(actor->waad, actor->fai, s.entropy, o, r, "actor")
                                  : CreditFrom(l.waad, l.fai, s.entropy, o, r, "learner"));
      SummaryAgreement a;
      a.staleness = s.staleness;
      a.waad_spearman = common::analysis::Spearman(actor->waad, l.waad);
      a.fai_spearman = common::analysis::Spearman(actor->fai, l.fai);
      a.selection_jaccard = common::analysis::Jaccard(used->selected, other.selected);
      a.waad_fp16_error_ratio = Fp16ErrorRatio(actor->waad, l.waad);
      a.fai_fp16_error_ratio = Fp16ErrorRatio(actor->fai, l.fai);
      a.same_heads = actor->local_heads == l.local_heads && actor->global_heads == l.global_heads;
      stats.agreement.push_back(a);
    }
    // The learner's summary is not needed past this point.
    s.learner_summary.reset();
  }
  stats.fai_defined_fraction =
      stats.tokens > 0 ? static_cast<double>(fai_defined_tokens) / stats.tokens : 0;
  stats.amplified_token_fraction =
      stats.tokens > 0 ? static_cast<double>(amplified_tokens) / stats.tokens : 0;
  return absl::OkStatus();
}

absl::Status Trainer::Update(std::vector<Sequence>& seqs, StepStats& stats) {
  absl::Status inner;  // an error the step returned (not threw): kept as it is
  absl::Status status = common::TorchCall("training step", [&]() {
    const int64_t micro = std::max<int64_t>(1, config_.micro_batch_size());
    const int64_t n = static_cast<int64_t>(seqs.size());
    const int64_t chunks = std::min<int64_t>(n, std::max(1, config_.mini_batches()));
    const bool token_mean = config_.loss_aggregation() == v1::LOSS_AGGREGATION_TOKEN_MEAN;
    const bool kl_loss = reference_ != nullptr && config_.kl_placement() == v1::KL_PLACEMENT_LOSS;
    const bool filters = Filters(actor_, temperature_);
    const at::Device device = model_.device();
    credit::PolicyLossOptions loss_opts;
    loss_opts.clip_eps_low = config_.clip_eps_low();
    loss_opts.clip_eps_high = config_.clip_eps_high();
    loss_opts.tis_cap = config_.tis_cap();
    loss_opts.aggregation = config_.loss_aggregation();
    loss_opts.entropy_coef = config_.entropy_coef();
    loss_opts.kl_coef = kl_loss ? config_.kl_coef() : 0.0;
    loss_opts.kl_estimator = config_.kl_estimator();
    loss_opts.ratio_level = config_.ratio_level();
    std::vector<double> kept(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) kept[i] = seqs[i].loss_mask.sum().item<double>();
    double weight_total = 0;
    // The guard (see Step): with several mini-batches, the earlier ones' AdamW steps are undone
    // from this copy when a later one turns out non-finite. One mini-batch needs no copy: the
    // check comes before its only optimizer step.
    std::vector<std::pair<at::Tensor, at::Tensor>> saved_params;  // (parameter, copy)
    common::model::TensorMap saved_moments;
    const int64_t saved_steps = optimizer_steps();
    // With ranks: this rank's share of each mini-batch, and where it sits among them.
    const int64_t rank = ranks_ != nullptr ? ranks_->rank() : 0;
    const int64_t world = ranks_ != nullptr ? ranks_->world_size() : 1;
    auto zero_grad = [&] {
      sharded() ? sharded_->ZeroGrad() : optimizer_->ZeroGrad();
      if (masters_) common::model::MasterWeights::DropGrads(model_);
    };
    if (chunks > 1) {
      at::NoGradGuard no_grad;
      for (const auto& [name, p] : masters_ ? masters_->parameters() : model_.NamedParameters()) {
        saved_params.push_back({p, p.clone()});
      }
      for (const auto& [name, t] : OptimizerState()) saved_moments[name] = t.clone();
    }
    int64_t stepped = 0;  // optimizer steps this call has taken
    auto abandon = [&](const char* reason, std::vector<uint64_t> ids) {
      zero_grad();
      if (stepped > 0) {
        at::NoGradGuard no_grad;
        for (auto& [p, copy] : saved_params) p.copy_(copy);
        if (masters_) masters_->CopyTo(model_);
        inner = sharded() ? sharded_->RestoreLocal(saved_moments, saved_steps)
                          : optimizer_->Restore(saved_moments, saved_steps);
      }
      stats.skipped_reason = reason;
      stats.offending_rollout_ids = std::move(ids);
    };
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
      // The chunk's aggregate divides by its kept tokens or responses: every micro-batch
      // divides by that, so their gradients add up to the chunk's.
      double chunk_tokens = 0, chunk_responses = 0;
      for (int64_t i = begin; i < end; ++i) {
        chunk_tokens += kept[i];
        chunk_responses += kept[i] > 0 ? 1 : 0;
      }
      loss_opts.loss_denominator = std::max(1.0, token_mean ? chunk_tokens : chunk_responses);
      zero_grad();
      // This rank's sequences of the chunk (all of them alone).
      std::vector<int64_t> mine;
      for (int64_t i = begin + rank; i < end; i += world) mine.push_back(i);
      bool local_non_finite = false;  // with ranks: decided together below
      for (size_t i = 0; i < mine.size(); i += static_cast<size_t>(micro)) {
        std::vector<Sequence*> mbs;
        double mb_tokens = 0;
        for (size_t q = i; q < std::min(mine.size(), i + static_cast<size_t>(micro)); ++q) {
          mbs.push_back(&seqs[mine[q]]);
          mb_tokens += kept[mine[q]];
        }
        const MicroBatch mb = Pack(mbs, device);
        // Chunked attention and checkpointing as trainer.attention_chunk and
        // trainer.activation_checkpointing say: no layer keeps a [L, L] tensor for backward.
        const TokenLogprobs lp = ResponseLogprobs(
            model_.Forward(mb.ids, mb.mask,
                           common::model::ForwardOptions::Training(
                               config_.attention_chunk(), config_.activation_checkpointing()))
                .value()
                .logits,
            mb, config_.entropy_coef() > 0, kl_loss && filters, temperature_, actor_);
        credit::PolicyLossInputs in;
        in.logprobs = lp.logp;
        if (kl_loss) {
          in.ref_logprobs = Stack(mbs, &Sequence::ref_logprobs, mb.tmax, device);
          in.kl_logprobs = lp.raw;
        }
        in.old_logprobs = Stack(mbs, &Sequence::old_logprobs, mb.tmax, device);
        in.advantages = Stack(mbs, &Sequence::shaped, mb.tmax, device);
        in.behaviour_logprobs = Stack(mbs, &Sequence::behaviour, mb.tmax, device);
        in.mask = Stack(mbs, &Sequence::loss_mask, mb.tmax, device);
        in.entropy = lp.entropy;
        in.preplan_mask = Stack(mbs, &Sequence::preplan, mb.tmax, device);
        in.anchor_mask = Stack(mbs, &Sequence::anchor, mb.tmax, device);
        absl::StatusOr<credit::PolicyLossResult> loss = credit::ComputePolicyLoss(in, loss_opts);
        if (!loss.ok()) {
          inner = loss.status();
          return;
        }
        credit::PolicyLossResult& r = *loss;
        const double loss_value = r.loss.item<double>();
        if (!std::isfinite(loss_value)) {
          if (sharded()) {
            local_non_finite = true;
            break;
          }
          return abandon("non_finite_loss",
                         OffendingRollouts(std::vector<const Sequence*>(mbs.begin(), mbs.end())));
        }
        r.loss.backward();
        // Each micro-batch's gradients into the fp32 sum (bf16: the masters').
        if (masters_) masters_->AccumulateGrads(model_);
        if (sharded()) sharded_->AccumulateGrads();
        stats.loss += loss_value / chunks;
        weight_total += mb_tokens;
        stats.clip_fraction += r.clip_fraction * mb_tokens;
        stats.mean_ratio += r.mean_ratio * mb_tokens;
        stats.approx_kl += r.approx_kl * mb_tokens;
        stats.preplan_token_fraction += r.preplan_token_fraction * mb_tokens;
        stats.anchor_token_fraction += r.anchor_token_fraction * mb_tokens;
        stats.preplan_credit_fraction += r.preplan_credit_fraction * mb_tokens;
        stats.anchor_credit_fraction += r.anchor_credit_fraction * mb_tokens;
      }
      if (sharded()) {
        // The ranks' verdict on the loss first (a rank that broke off has partial gradients),
        // then the gradients, clipping, this rank's shard of AdamW, and every rank's shard.
        std::vector<const Sequence*> chunk;
        for (int64_t i = begin; i < end; ++i) chunk.push_back(&seqs[i]);
        at::Tensor flag = at::full({1}, local_non_finite ? 1.0 : 0.0, at::kDouble);
        if (absl::Status s = ranks_->AllReduceSum(flag); !s.ok()) {
          inner = s;
          return;
        }
        if (flag.item<double>() > 0) return abandon("non_finite_loss", OffendingRollouts(chunk));
        at::Tensor flat = sharded_->FlatGrads();
        if (absl::Status s = ranks_->AllReduceSum(flat); !s.ok()) {
          inner = s;
          return;
        }
        stats.grad_norm = std::sqrt(flat.to(at::kDouble).pow(2).sum().item<double>());
        if (!std::isfinite(stats.grad_norm)) {
          return abandon("non_finite_grad_norm", OffendingRollouts(chunk));
        }
        if (config_.grad_clip() > 0 && stats.grad_norm > config_.grad_clip()) {
          flat.mul_(config_.grad_clip() / (stats.grad_norm + 1e-12));
        }
        const double warm = config_.warmup_steps() > 0
                                ? std::min(1.0, static_cast<double>(sharded_->steps() + 1) /
                                                    config_.warmup_steps())
                                : 1.0;
        stats.lr = config_.lr() * warm;
        const at::Tensor shard = sharded_->Step(stats.lr, flat);
        absl::StatusOr<at::Tensor> full = ranks_->AllGather(shard);
        if (!full.ok()) {
          inner = full.status();
          return;
        }
        sharded_->SetParams(*full);
        if (masters_) masters_->CopyTo(model_);
        zero_grad();
        ++stepped;
        continue;
      }
      // Global-norm clipping, then AdamW with linear warm-up (on the fp32 masters with bf16).
      stats.grad_norm = optimizer_->GradNorm();
      if (!std::isfinite(stats.grad_norm)) {
        std::vector<const Sequence*> chunk;
        for (int64_t i = begin; i < end; ++i) chunk.push_back(&seqs[i]);
        return abandon("non_finite_grad_norm", OffendingRollouts(chunk));
      }
      if (config_.grad_clip() > 0 && stats.grad_norm > config_.grad_clip()) {
        optimizer_->ScaleGrads(config_.grad_clip() / (stats.grad_norm + 1e-12));
      }
      const double warm =
          config_.warmup_steps() > 0
              ? std::min(1.0, static_cast<double>(optimizer_->steps() + 1) / config_.warmup_steps())
              : 1.0;
      stats.lr = config_.lr() * warm;
      optimizer_->Step(stats.lr);
      if (masters_) masters_->CopyTo(model_);
      ++stepped;
    }
    if (sharded()) {
      // The loss statistics are sums over the ranks' micro-batches.
      double* sums[] = {&stats.loss,           &weight_total,
                        &stats.clip_fraction,  &stats.mean_ratio,
                        &stats.approx_kl,      &stats.preplan_token_fraction,
                        &stats.anchor_token_fraction, &stats.preplan_credit_fraction,
                        &stats.anchor_credit_fraction};
      at::Tensor t = at::empty({static_cast<int64_t>(std::size(sums))}, at::kDouble);
      for (size_t k = 0; k < std::size(sums); ++k) t[static_cast<int64_t>(k)] = *sums[k];
      if (absl::Status s = ranks_->AllReduceSum(t); !s.ok()) {
        inner = s;
        return;
      }
      for (size_t k = 0; k < std::size(sums); ++k) {
        *sums[k] = t[static_cast<int64_t>(k)].item<double>();
      }
    }
    for (double* v : {&stats.clip_fraction, &stats.mean_ratio, &stats.approx_kl,
                      &stats.preplan_token_fraction, &stats.anchor_token_fraction,
                      &stats.preplan_credit_fraction, &stats.anchor_credit_fraction}) {
      *v /= std::max(weight_total, 1.0);
    }
  });
  RHYTHM_RETURN_IF_ERROR(status);
  return inner;
}

int64_t Trainer::optimizer_steps() const {
  return sharded() ? sharded_->steps() : optimizer_->steps();
}

common::model::TensorMap Trainer::OptimizerState() const {
  return sharded() ? sharded_->LocalState() : optimizer_->State();
}

int64_t Trainer::optimizer_state_numel() const {
  int64_t n = 0;
  for (const auto& [name, t] : OptimizerState()) n += t.numel();
  return n;
}

absl::Status Trainer::RestoreWeightsFromMasters(const common::model::TensorMap& state) {
  at::NoGradGuard no_grad;
  const common::model::TensorMap targets =
      masters_ ? masters_->parameters() : model_.NamedParameters();
  int64_t found = 0;
  for (const auto& [name, t] : targets) found += state.count(name + kMasterSuffix);
  if (found == 0) return absl::OkStatus();  // a checkpoint of an fp32 run
  for (const auto& [name, t] : targets) {
    auto it = state.find(name + kMasterSuffix);
    if (it == state.end() || it->second.sizes() != t.sizes() ||
        !at::isfinite(it->second).all().item<bool>()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state: missing, misshapen or non-finite '", name, kMasterSuffix, "'"));
    }
  }
  for (auto& [name, t] : targets) t.copy_(state.at(name + kMasterSuffix));
  if (masters_) masters_->CopyTo(model_);
  return absl::OkStatus();
}

absl::Status Trainer::RestoreOptimizerState(const common::model::TensorMap& state,
                                            int64_t optimizer_steps, int64_t version) {
  RHYTHM_RETURN_IF_ERROR(RestoreWeightsFromMasters(state));
  if (sharded()) {
    RHYTHM_RETURN_IF_ERROR(sharded_->RestoreNamed(state, optimizer_steps));
    if (ranks_->rank() == 0) {
      pending_state_ = state;  // the other ranks' shards, handed out by SyncRanks
      synced_ = false;
    }
  } else {
    RHYTHM_RETURN_IF_ERROR(optimizer_->Restore(state, optimizer_steps));
  }
  version_ = version;
  return absl::OkStatus();
}

absl::StatusOr<common::model::TensorMap> Trainer::GatherOptimizerState() {
  common::model::TensorMap state;
  if (!sharded()) {
    state = optimizer_->State();
  } else {
    if (ranks_->rank() == 0) {
      RHYTHM_RETURN_IF_ERROR(SyncRanks());
      RHYTHM_RETURN_IF_ERROR(Command(static_cast<int>(RankCommand::kGatherState), 0));
    }
    RHYTHM_ASSIGN_OR_RETURN(state, GatherShards());
    if (ranks_->rank() != 0) return state;
  }
  // Alone, a bf16 model's fp32 masters (the model beside them is their rounding); with ranks
  // GatherShards gathered them with the moments.
  if (masters_) {
    for (const auto& [name, t] : masters_->parameters()) {
      state[name + kMasterSuffix] = t.detach().to(at::kCPU, false, /*copy=*/true);
    }
  }
  return state;
}

absl::StatusOr<common::model::TensorMap> Trainer::GatherShards() {
  const common::model::TensorMap local = sharded_->LocalState();
  RHYTHM_ASSIGN_OR_RETURN(at::Tensor m, ranks_->GatherToRank0(local.at("exp_avg")));
  RHYTHM_ASSIGN_OR_RETURN(at::Tensor v, ranks_->GatherToRank0(local.at("exp_avg_sq")));
  at::Tensor master;
  if (local.count("master") > 0) {
    RHYTHM_ASSIGN_OR_RETURN(master, ranks_->GatherToRank0(local.at("master")));
  }
  if (ranks_->rank() != 0) return common::model::TensorMap{};
  return sharded_->NamedState(m.cpu(), v.cpu(), master.defined() ? master.cpu() : master);
}

absl::Status Trainer::Command(int command, int64_t payload) {
  RankCommand c = static_cast<RankCommand>(command);
  last_command_ = std::chrono::steady_clock::now();
  return ranks_->ExchangeCommand(c, payload);
}

absl::Status Trainer::SyncRanks() {
  if (synced_) return absl::OkStatus();
  const bool with_state = !pending_state_.empty();
  RHYTHM_RETURN_IF_ERROR(Command(static_cast<int>(RankCommand::kSync), with_state ? 1 : 0));
  at::Tensor meta = at::tensor({version_, sharded_->steps()}, at::kLong);
  RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(meta));
  // The weights: with bf16 parameters the fp32 masters, a restored state's when it has them
  // (rank 0 holds only its shard of the masters it trains).
  at::Tensor params = sharded_->FlatParams();
  if (sharded_->keeps_masters() && with_state) {
    absl::StatusOr<at::Tensor> masters = sharded_->FlattenMasters(pending_state_);
    if (masters.ok()) {
      params = *masters;
    } else if (masters.status().code() != absl::StatusCode::kNotFound) {
      return masters.status();
    }
  }
  RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(params));
  sharded_->SetParams(params);
  RHYTHM_RETURN_IF_ERROR(BroadcastReference());
  if (with_state) {
    RHYTHM_ASSIGN_OR_RETURN(auto flat, sharded_->FlattenNamed(pending_state_));
    RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(flat.first));
    RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(flat.second));
    pending_state_.clear();
  }
  synced_ = true;
  return absl::OkStatus();
}

absl::Status Trainer::BroadcastReference() {
  if (reference_ == nullptr) return absl::OkStatus();
  // A reference copied from the weights a resumed rank 0 started with is not the other ranks'.
  at::NoGradGuard no_grad;
  for (auto& [name, t] : reference_->NamedParameters()) {
    at::Tensor c = t.contiguous();
    RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(c));
    if (ranks_->rank() != 0) t.copy_(c);
  }
  return absl::OkStatus();
}

absl::Status Trainer::ReceiveSync(bool with_state) {
  at::Tensor meta = at::zeros({2}, at::kLong);
  RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(meta));
  version_ = meta[0].item<int64_t>();
  const int64_t steps = meta[1].item<int64_t>();
  at::Tensor params = sharded_->FlatParams();
  RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(params));
  sharded_->SetParams(params);  // with bf16 parameters: rounded, and this rank's master shard
  RHYTHM_RETURN_IF_ERROR(BroadcastReference());
  common::model::TensorMap local = sharded_->LocalState();
  if (with_state) {
    at::Tensor m = at::zeros_like(params), v = at::zeros_like(params);
    RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(m));
    RHYTHM_RETURN_IF_ERROR(ranks_->Broadcast(v));
    const int64_t b = sharded_->shard_begin(), n = sharded_->shard_size();
    local["exp_avg"] = m.narrow(0, b, n);
    local["exp_avg_sq"] = v.narrow(0, b, n);
  } else {
    local["exp_avg"] = at::zeros_like(local["exp_avg"]);
    local["exp_avg_sq"] = at::zeros_like(local["exp_avg_sq"]);
  }
  // (local["master"], with bf16 parameters, is the shard SetParams just took.)
  return sharded_->RestoreLocal(local, steps);
}

absl::Status Trainer::Heartbeat() {
  if (ranks_ == nullptr || ranks_->rank() != 0) return absl::OkStatus();
  const auto interval = std::chrono::duration<double>(
      std::min(0.5, absl::ToDoubleSeconds(ranks_->timeout()) / 4));
  if (std::chrono::steady_clock::now() - last_command_ < interval) return absl::OkStatus();
  return Command(static_cast<int>(RankCommand::kIdle), 0);
}

absl::Status Trainer::FollowRank0() {
  if (ranks_ == nullptr || ranks_->rank() == 0) {
    return absl::FailedPreconditionError("FollowRank0: not a data-parallel rank above 0");
  }
  while (true) {
    RankCommand command = RankCommand::kIdle;
    int64_t payload = 0;
    RHYTHM_RETURN_IF_ERROR(ranks_->ExchangeCommand(command, payload));
    switch (command) {
      case RankCommand::kIdle:
        break;
      case RankCommand::kSync:
        RHYTHM_RETURN_IF_ERROR(ReceiveSync(payload != 0));
        break;
      case RankCommand::kStep: {
        std::string bytes;
        RHYTHM_RETURN_IF_ERROR(ranks_->BroadcastBytes(bytes));
        RHYTHM_ASSIGN_OR_RETURN(const std::vector<Group> batch, DecodeBatch(bytes));
        absl::StatusOr<StepStats> s = RunStep(batch);
        if (!s.ok()) return s.status();
        break;
      }
      case RankCommand::kGatherState:
        RHYTHM_RETURN_IF_ERROR(GatherShards().status());
        break;
      case RankCommand::kStop:
        return absl::OkStatus();
      default:
        return absl::InternalError(absl::StrCat("learner rank ", ranks_->rank(),
                                                ": unknown command ",
                                                static_cast<int64_t>(command), " from rank 0"));
    }
  }
}

void Trainer::StopRanks() {
  if (ranks_ == nullptr || ranks_->rank() != 0 || stopped_ || ranks_->aborted()) return;
  stopped_ = true;
  (void)Command(static_cast<int>(RankCommand::kStop), 0);
}

}  // namespace rhythm::learner

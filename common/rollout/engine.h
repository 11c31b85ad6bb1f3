// GenerationEngine: batched sampling from the policy with a preallocated KV cache, and the
// attention summaries of every response computed inside the decode loop.
//
//   prompts x G ─ left-pad ─ prefill ─┐
//                                     ▼
//        ┌── sample r_q (temperature / top-k / top-p, seeded) ◀── logits
//        │   stop on EOS, stop string or max_new_tokens
//        └─▶ feed r_q ─ KV cache ─ logits ─┐        (taps: attention rows of r_q for the
//                                          └───────  tapped layers → SummaryAccumulator)
//
// The row of every response token, the last one's included, comes from the step that feeds it,
// so a finished sequence costs one more step (skipped when taps are off). Per step the host
// receives only the sampled ids (to check stops); log-probs, entropies and summary state stay on
// the model's device until the batch ends. Thread-safety: Generate is const and may run
// concurrently with other Generate calls on the same model (each call owns its cache), but not
// with a weight update.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/transformer.h"
#include "common/rollout/attention_summary.h"
#include "common/rollout/sampler.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::rollout {

enum class FinishReason { kEos, kStopString, kLength };

struct GenerationOptions {
  SamplingOptions sampling;
  int64_t max_new_tokens = 64;
  // G: samples per prompt.
  int64_t samples_per_prompt = 1;
  uint64_t seed = 0;
  // Token ids that end a sample (EOS); the id is kept as the last response token.
  std::vector<int32_t> stop_token_ids;
  // Strings that end a sample once the decoded response contains one; needs `decode`.
  std::vector<std::string> stop_strings;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  // Compute attention summaries.
  bool taps = true;
  TapOptions tap;
  // Fed for finished sequences and left padding; never attended to.
  int32_t pad_id = 0;
};

// Sampling, length, stop strings and taps from the typed config; the caller adds what is per
// call (samples per prompt, seed, stop ids, decode, pad id).
GenerationOptions GenerationOptionsFromConfig(const v1::GenerationConfig& config);

struct GeneratedSample {
  int64_t prompt_index = 0;
  int64_t sample_index = 0;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> response_ids;
  std::vector<float> logprobs;  // behaviour log-prob of each response token
  std::vector<float> entropy;   // entropy of the distribution each token was sampled from
  FinishReason finish = FinishReason::kLength;
  std::optional<AttentionSummary> summary;  // when taps are on
};

struct GenerationStats {
  int64_t sequences = 0;
  int64_t new_tokens = 0;         // response tokens generated
  int64_t decode_steps = 0;
  int64_t summary_state_bytes = 0;  // on-device summary state (0 with taps off)
  double seconds = 0;
};

class GenerationEngine {
 public:
  // Borrows `model`, which must outlive the engine.
  explicit GenerationEngine(const model::Transformer& model) : model_(model) {}

  // Samples G responses for every prompt; results are prompt-major (prompt 0's G samples
  // first). INVALID_ARGUMENT names the prompt, position and id for an empty prompt or an id
  // outside the vocabulary, and the option for a bad option.
  absl::StatusOr<std::vector<GeneratedSample>> Generate(
      const std::vector<std::vector<int32_t>>& prompts, const GenerationOptions& options,
      GenerationStats* stats = nullptr) const;

 private:
  const model::Transformer& model_;
};

}  // namespace rhythm::common::rollout

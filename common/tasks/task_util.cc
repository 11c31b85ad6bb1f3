#include "common/tasks/task_util.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace rhythm::common::tasks::internal {

uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t HashCombine(uint64_t h, uint64_t value) {
  return Mix64(h ^ Mix64(value + 0x632be59bd9b4e019ULL * (h | 1)));
}

uint64_t HashBytes(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix64(h ^ bytes.size());
}

uint64_t Rng::Next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t Rng::Below(uint64_t n) {
  // Reject the top partial block so every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do {
    x = Next();
  } while (x >= limit);
  return x % n;
}

int64_t Rng::Between(int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (span == UINT64_MAX) return static_cast<int64_t>(Next());
  return static_cast<int64_t>(static_cast<uint64_t>(lo) + Below(span + 1));
}

uint64_t ProblemId(uint64_t fingerprint, Split split, uint64_t index) {
  const uint64_t h = HashCombine(HashCombine(fingerprint, split == Split::kHeldOut), index);
  return (h & ~kHeldOutIdBit) | (split == Split::kHeldOut ? kHeldOutIdBit : 0);
}


std::string SanitizeUtf8(absl::string_view text, size_t max_bytes) {
  static constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD
  static constexpr absl::string_view kEllipsis = "...";
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + kEllipsis.size());
  size_t i = 0;
  while (i < text.size()) {
    int subpart = 0;
    const size_t len = static_cast<size_t>(Utf8SequenceAt(text, i, &subpart));
    const absl::string_view piece = len == 0 ? kReplacement : text.substr(i, len);
    if (out.size() + piece.size() > max_bytes) {
      out.append(kEllipsis.data(), kEllipsis.size());
      return out;
    }
    out.append(piece.data(), piece.size());
    i += len == 0 ? 1 : len;
  }
  return out;
}

absl::string_view TrimAsciiWhitespace(absl::string_view text) {
  const auto is_space = [](char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
  };
  size_t begin = 0, end = text.size();
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  return text.substr(begin, end - begin);
}

absl::string_view FirstLine(absl::string_view text) {
  const size_t newline = text.find('\n');
  return newline == absl::string_view::npos ? text : text.substr(0, newline);
}

v1::VerifierResult MakeResult(double reward, bool correct, bool parsed, absl::string_view extracted,
                              absl::string_view detail) {
  v1::VerifierResult result;
  result.set_reward(reward);
  result.set_correct(correct);
  result.set_parsed(parsed);
  result.set_extracted_answer(SanitizeUtf8(extracted));
  result.set_detail(SanitizeUtf8(detail));
  return result;
}

// ------------------------------------------------------------------------------------------
// GeneratedTask

namespace {

// Stream tags: each split draws from its own family of generators.
constexpr uint64_t kTrainStream = 0x7472;
constexpr uint64_t kHeldOutStream = 0x686f;
constexpr uint64_t kFallbackStream = 0x6662;

uint64_t StreamSeed(uint64_t seed, uint64_t stream, uint64_t index) {
  return HashCombine(HashCombine(HashCombine(0x5eed, seed), stream), index);
}

Problem ToProblem(const Generated& g, uint64_t id) {
  return Problem{id, g.prompt, g.answer, g.reference_solution};
}

}  // namespace

absl::Status GeneratedTask::Init(uint64_t requested_heldout, uint64_t space_size) {
  uint64_t target = requested_heldout;
  if (space_size > 0 && target > space_size / 2) {
    target = space_size / 2;
    warnings_.push_back(absl::StrCat(name(), ": heldout_size ", requested_heldout, " reduced to ",
                                     target, ", half of the ", space_size,
                                     " distinct problems of this difficulty"));
  }
  // Draw held-out problems until `target` distinct keys, or until the space looks exhausted:
  // 2000 successful draws in a row without a new key (the chance of that while at least 1% of
  // the space is still unseen is below 0.99^2000 = 2e-9).
  constexpr int kExhaustedStreak = 2000;
  int streak = 0;
  uint64_t draws = 0;
  const uint64_t max_draws = 20 * target + kMaxDraws;
  for (uint64_t j = 0; heldout_.size() < target && streak < kExhaustedStreak && draws < max_draws;
       ++j) {
    Rng rng(StreamSeed(seed_, kHeldOutStream, j));
    ++draws;
    std::optional<Generated> g = Generate(rng);
    if (!g.has_value()) continue;
    if (!heldout_keys_.insert(g->key).second) {
      ++streak;
      continue;
    }
    streak = 0;
    heldout_.push_back(*std::move(g));
  }
  if (heldout_.size() < target) {
    // The space (or what the generator reaches of it) is small: keep half for training.
    const uint64_t found = heldout_.size();
    const uint64_t keep = found / 2;
    warnings_.push_back(absl::StrCat(name(), ": only ", found,
                                     " distinct problems found; heldout_size ", requested_heldout,
                                     " reduced to ", keep));
    heldout_.resize(keep);
    heldout_keys_.clear();
    for (const Generated& g : heldout_) heldout_keys_.insert(g.key);
  }
  for (uint64_t j = 0; j < static_cast<uint64_t>(kMaxDraws); ++j) {
    Rng rng(StreamSeed(seed_, kFallbackStream, j));
    std::optional<Generated> g = Generate(rng);
    if (g.has_value() && !heldout_keys_.contains(g->key)) {
      fallback_ = *std::move(g);
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(name(), ": no training problem could be drawn in ", kMaxDraws,
                   " draws; the configured difficulty admits too few problems"));
}

Problem GeneratedTask::TrainProblem(uint64_t index) const {
  Rng rng(StreamSeed(seed_, kTrainStream, index));
  for (int draw = 0; draw < kMaxDraws; ++draw) {
    std::optional<Generated> g = Generate(rng);
    if (g.has_value() && !heldout_keys_.contains(g->key)) {
      return ToProblem(*g, ProblemId(fingerprint_, Split::kTrain, index));
    }
  }
  return ToProblem(fallback_, ProblemId(fingerprint_, Split::kTrain, index));
}

Problem GeneratedTask::HeldOutProblem(uint64_t index) const {
  if (heldout_.empty()) return Problem{};
  index %= heldout_.size();
  return ToProblem(heldout_[index], ProblemId(fingerprint_, Split::kHeldOut, index));
}

}  // namespace rhythm::common::tasks::internal

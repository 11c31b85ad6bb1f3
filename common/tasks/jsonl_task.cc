#include "common/tasks/jsonl_task.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/tasks/math_answer.h"
#include "common/tasks/task_util.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::tasks {
namespace {

constexpr size_t kMaxWarnings = 100;

struct Line {
  uint64_t line_number = 0;  // 1-based
  std::string prompt;
  std::string answer;
  std::string reference;
};

class JsonlTask final : public Task {
 public:
  JsonlTask(std::string marker, uint64_t fingerprint, std::vector<Line> train,
            std::vector<Line> heldout, std::vector<std::string> warnings)
      : marker_(std::move(marker)),
        fingerprint_(fingerprint),
        train_(std::move(train)),
        heldout_(std::move(heldout)),
        warnings_(std::move(warnings)) {}

  absl::string_view name() const override { return "jsonl"; }

  Problem TrainProblem(uint64_t index) const override {
    const Line& line = train_[index % train_.size()];
    return ToProblem(line, internal::Split::kTrain);
  }

  Problem HeldOutProblem(uint64_t index) const override {
    if (heldout_.empty()) return Problem{};
    return ToProblem(heldout_[index % heldout_.size()], internal::Split::kHeldOut);
  }

  uint64_t heldout_size() const override { return heldout_.size(); }

  v1::VerifierResult Verify(absl::string_view answer, absl::string_view completion) const override {
    return VerifyMath(answer, completion, marker_);
  }

  const std::vector<std::string>& warnings() const override { return warnings_; }

 private:
  Problem ToProblem(const Line& line, internal::Split split) const {
    return Problem{internal::ProblemId(fingerprint_, split, line.line_number), line.prompt,
                   line.answer, line.reference};
  }

  std::string marker_;
  uint64_t fingerprint_;
  std::vector<Line> train_;  // never empty
  std::vector<Line> heldout_;
  std::vector<std::string> warnings_;
};

// Parses one non-blank line; an error message when it is not a usable problem.
absl::StatusOr<Line> ParseLine(absl::string_view text, absl::string_view marker) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("not a JSON object");
  const auto prompt = j.find("prompt");
  if (prompt == j.end() || !prompt->is_string()) {
    return absl::InvalidArgumentError("\"prompt\" missing or not a string");
  }
  const auto answer = j.find("answer");
  if (answer == j.end() || !(answer->is_string() || answer->is_number())) {
    return absl::InvalidArgumentError("\"answer\" missing or not a string or number");
  }
  Line line;
  line.prompt = prompt->get<std::string>();
  if (line.prompt.empty()) return absl::InvalidArgumentError("\"prompt\" is empty");
  line.answer = answer->is_string() ? answer->get<std::string>() : answer->dump();
  line.answer = std::string(internal::TrimAsciiWhitespace(line.answer));
  if (line.answer.empty()) return absl::InvalidArgumentError("\"answer\" is empty");
  if (line.answer.find_first_of("\r\n") != std::string::npos) {
    return absl::InvalidArgumentError("\"answer\" spans several lines");
  }
  line.reference = marker.empty() ? absl::StrCat("\\boxed{", line.answer, "}")
                                  : absl::StrCat(marker, " ", line.answer);
  const v1::VerifierResult check = VerifyMath(line.answer, line.reference, marker);
  if (!check.correct()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the answer cannot be verified: its reference solution \"",
        internal::SanitizeUtf8(line.reference, 80), "\" scores as wrong (", check.detail(), ")"));
  }
  return line;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Task>> CreateJsonlTask(const v1::TaskConfig& config) {
  const std::string& path = config.dataset_path();
  if (path.empty()) return absl::InvalidArgumentError("task.dataset_path is empty (jsonl task)");
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("jsonl dataset ", path, " does not exist"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in || std::filesystem::is_directory(path, ec)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot open jsonl dataset ", path));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return absl::FailedPreconditionError(absl::StrCat("cannot read ", path));
  const std::string contents = buffer.str();

  std::vector<std::string> warnings;
  uint64_t malformed = 0;
  std::string first_problem;
  const auto report = [&](uint64_t line_number, absl::string_view problem) {
    // nlohmann's messages quote the bytes it read, which may be invalid UTF-8.
    const std::string message =
        internal::SanitizeUtf8(absl::StrCat(path, ":", line_number, ": ", problem), 300);
    if (first_problem.empty()) first_problem = message;
    ++malformed;
    if (warnings.size() < kMaxWarnings) warnings.push_back(message);
  };

  std::vector<Line> valid;
  uint64_t line_number = 0;
  size_t begin = 0;
  while (begin < contents.size()) {
    size_t end = contents.find('\n', begin);
    if (end == std::string::npos) end = contents.size();
    ++line_number;
    absl::string_view text(contents.data() + begin, end - begin);
    begin = end + 1;
    if (internal::TrimAsciiWhitespace(text).empty()) continue;
    absl::StatusOr<Line> line = ParseLine(text, config.answer_marker());
    if (!line.ok()) {
      report(line_number, line.status().message());
      continue;
    }
    line->line_number = line_number;
    valid.push_back(*std::move(line));
  }
  if (malformed > kMaxWarnings) {
    warnings.push_back(
        absl::StrCat(path, ": ", malformed - kMaxWarnings, " more malformed lines not listed"));
  }
  if (valid.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "jsonl dataset ", path, " has no valid line (", line_number, " lines, ", malformed,
        " malformed", first_problem.empty() ? "" : "; first: ", first_problem, ")"));
  }

  const uint64_t requested = config.heldout_size() < 0 ? 0 : config.heldout_size();
  const uint64_t held = std::min<uint64_t>(requested, valid.size() - 1);
  if (held < requested) {
    warnings.push_back(absl::StrCat(path, ": heldout_size ", requested, " reduced to ", held,
                                    " to keep a training line (", valid.size(), " valid lines)"));
  }
  std::vector<Line> heldout(valid.end() - held, valid.end());
  absl::flat_hash_map<std::string, uint64_t> heldout_prompts;
  for (const Line& line : heldout) heldout_prompts.emplace(line.prompt, line.line_number);
  std::vector<Line> train;
  for (size_t k = 0; k + held < valid.size(); ++k) {
    const auto it = heldout_prompts.find(valid[k].prompt);
    if (it != heldout_prompts.end()) {
      warnings.push_back(absl::StrCat(path, ":", valid[k].line_number,
                                      ": same prompt as held-out line ", it->second,
                                      "; not used for training"));
      continue;
    }
    train.push_back(std::move(valid[k]));
  }
  if (train.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("jsonl dataset ", path, ": every training line repeats a held-out prompt"));
  }

  uint64_t fingerprint = internal::HashBytes("jsonl");
  fingerprint = internal::HashCombine(fingerprint, internal::HashBytes(contents));
  fingerprint = internal::HashCombine(fingerprint, internal::HashBytes(config.answer_marker()));
  fingerprint = internal::HashCombine(fingerprint, held);
  return std::make_unique<JsonlTask>(config.answer_marker(), fingerprint, std::move(train),
                                     std::move(heldout), std::move(warnings));
}

}  // namespace rhythm::common::tasks

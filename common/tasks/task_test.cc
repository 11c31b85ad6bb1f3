// Properties every task must have (reference solutions verify, splits are disjoint, ids and
// problems are deterministic), CreateTask's dispatch and errors, and the verifier fuzz test.
#include "common/tasks/task.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/tasks/countdown.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common::tasks {
namespace {

using ::testing::HasSubstr;

std::string WriteDataset(int lines) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                                    ("rhythm_task_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / ("maths" + std::to_string(lines) + ".jsonl");
  std::ofstream out(path);
  for (int i = 0; i < lines; ++i) {
    // A few answer styles: integers, fractions, decimals, LaTeX.
    std::string answer;
    switch (i % 4) {
      case 0:
        answer = std::to_string(i * 7);
        break;
      case 1:
        answer = std::to_string(i) + "/" + std::to_string(i + 2);
        break;
      case 2:
        answer = std::to_string(i) + ".25";
        break;
      default:
        answer = "\\\\frac{" + std::to_string(i) + "}{3}";
        break;
    }
    out << "{\"prompt\": \"Problem " << i << "\", \"answer\": \"" << answer << "\"}\n";
  }
  return path.string();
}

struct Case {
  std::string label;
  v1::TaskConfig config;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  v1::TaskConfig c;
  c.set_kind(v1::TASK_KIND_COUNTDOWN);
  cases.push_back({"countdown_default", c});
  c.mutable_countdown()->set_num_numbers(4);
  c.mutable_countdown()->set_max_number(50);
  c.mutable_countdown()->set_max_target(500);
  c.set_heldout_size(100);
  cases.push_back({"countdown_4x50", c});
  c = v1::TaskConfig();
  c.set_kind(v1::TASK_KIND_ARITHMETIC);
  cases.push_back({"arithmetic_default", c});
  c.mutable_arithmetic()->set_digits(3);
  c.mutable_arithmetic()->set_multiplication(true);
  cases.push_back({"arithmetic_3_mul", c});
  c = v1::TaskConfig();
  c.set_kind(v1::TASK_KIND_JSONL);
  c.set_dataset_path(WriteDataset(300));
  cases.push_back({"jsonl", c});
  return cases;
}

bool IsShortAscii(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return (c >= 32 && c < 127) || c == '\n'; });
}

// Countdown's split key: sorted numbers and target, from the prompt "3 7 20 -> 27\n".
std::string CountdownKey(const std::string& prompt) {
  const size_t arrow = prompt.find(" -> ");
  std::vector<int> numbers;
  for (absl::string_view n : absl::StrSplit(prompt.substr(0, arrow), ' ')) {
    numbers.push_back(std::stoi(std::string(n)));
  }
  std::sort(numbers.begin(), numbers.end());
  std::string key;
  for (int n : numbers) key += std::to_string(n) + ",";
  return key + prompt.substr(arrow + 4);
}

class TaskProperties : public ::testing::TestWithParam<Case> {};

TEST_P(TaskProperties, ReferenceSolutionsVerifyAndSplitsAreDisjoint) {
  const v1::TaskConfig& config = GetParam().config;
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(config, 42);
  ASSERT_TRUE(task.ok()) << task.status();
  const bool countdown = config.kind() == v1::TASK_KIND_COUNTDOWN;
  const bool jsonl = config.kind() == v1::TASK_KIND_JSONL;
  EXPECT_TRUE((*task)->warnings().empty()) << ::testing::PrintToString((*task)->warnings());
  const uint64_t expected_heldout = static_cast<uint64_t>(config.heldout_size());
  ASSERT_EQ((*task)->heldout_size(), expected_heldout);

  std::set<std::string> heldout_prompts, heldout_keys;
  std::set<uint64_t> heldout_ids;
  const auto check = [&](const Problem& p) {
    const v1::VerifierResult r = (*task)->Verify(p.answer, p.reference_solution);
    EXPECT_TRUE(r.correct()) << p.prompt << " / " << p.answer << " / " << p.reference_solution
                             << ": " << r.detail();
    EXPECT_EQ(r.reward(), 1.0);
    if (!jsonl) {
      EXPECT_TRUE(IsShortAscii(p.prompt) && IsShortAscii(p.answer) &&
                  IsShortAscii(p.reference_solution))
          << p.prompt;
      EXPECT_EQ(p.reference_solution.find('\n'), std::string::npos);
    }
    if (countdown) {
      // Numbers and target in range, target not offered, answer consistent with the prompt.
      absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer(p.answer);
      ASSERT_TRUE(spec.ok()) << spec.status();
      EXPECT_EQ(static_cast<int>(spec->numbers.size()), config.countdown().num_numbers());
      for (int64_t n : spec->numbers) {
        EXPECT_GE(n, 1);
        EXPECT_LE(n, config.countdown().max_number());
        EXPECT_NE(n, spec->target) << p.prompt;
      }
      EXPECT_GE(spec->target, 1);
      EXPECT_LE(spec->target, config.countdown().max_target());
      std::string prompt;
      for (int64_t n : spec->numbers) prompt += (prompt.empty() ? "" : " ") + std::to_string(n);
      EXPECT_EQ(p.prompt, prompt + " -> " + std::to_string(spec->target) + "\n");
    }
  };
  for (uint64_t i = 0; i < (*task)->heldout_size(); ++i) {
    const Problem p = (*task)->HeldOutProblem(i);
    check(p);
    EXPECT_NE(p.id & kHeldOutIdBit, 0u);
    heldout_ids.insert(p.id);
    heldout_prompts.insert(p.prompt);
    if (countdown) heldout_keys.insert(CountdownKey(p.prompt));
  }
  EXPECT_EQ(heldout_prompts.size(), (*task)->heldout_size()) << "held-out problems repeat";
  EXPECT_EQ(heldout_ids.size(), (*task)->heldout_size());

  const uint64_t n_train = config.countdown().num_numbers() == 4 ? 1000 : 4000;
  std::set<uint64_t> train_ids;
  for (uint64_t i = 0; i < n_train; ++i) {
    const Problem p = (*task)->TrainProblem(i);
    check(p);
    EXPECT_EQ(p.id & kHeldOutIdBit, 0u);
    EXPECT_EQ(heldout_prompts.count(p.prompt), 0u) << "held-out prompt in training: " << p.prompt;
    if (countdown) {
      EXPECT_EQ(heldout_keys.count(CountdownKey(p.prompt)), 0u) << p.prompt;
    }
    train_ids.insert(p.id);
  }
  // Generated tasks: one id per index. jsonl: one id per training line.
  EXPECT_EQ(train_ids.size(), jsonl ? 100u : n_train);
}

TEST_P(TaskProperties, DeterministicInSeed) {
  const v1::TaskConfig& config = GetParam().config;
  absl::StatusOr<std::unique_ptr<Task>> a = CreateTask(config, 7);
  absl::StatusOr<std::unique_ptr<Task>> b = CreateTask(config, 7);
  absl::StatusOr<std::unique_ptr<Task>> c = CreateTask(config, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  int same_as_other_seed = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    for (bool train : {true, false}) {
      const Problem pa = train ? (*a)->TrainProblem(i) : (*a)->HeldOutProblem(i);
      const Problem pb = train ? (*b)->TrainProblem(i) : (*b)->HeldOutProblem(i);
      const Problem pc = train ? (*c)->TrainProblem(i) : (*c)->HeldOutProblem(i);
      EXPECT_EQ(pa.id, pb.id);
      EXPECT_EQ(pa.prompt, pb.prompt);
      EXPECT_EQ(pa.answer, pb.answer);
      EXPECT_EQ(pa.reference_solution, pb.reference_solution);
      same_as_other_seed += pa.prompt == pc.prompt;
    }
  }
  if (config.kind() == v1::TASK_KIND_JSONL) {
    EXPECT_EQ(same_as_other_seed, 400);  // the seed is not used
  } else {
    EXPECT_LT(same_as_other_seed, 40);
  }
}

TEST_P(TaskProperties, ConcurrentCallsMatchSequentialOnes) {
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(GetParam().config, 5);
  ASSERT_TRUE(task.ok()) << task.status();
  constexpr int kThreads = 4;
  constexpr uint64_t kPerThread = 150;
  std::vector<std::vector<std::string>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < kPerThread; ++i) {
        // Every thread walks the same indices, in a different order (strides coprime to 150).
        const uint64_t stride[kThreads] = {1, 7, 11, 13};
        const uint64_t index = (i * stride[t]) % kPerThread;
        const Problem p = (*task)->TrainProblem(index);
        const Problem h = (*task)->HeldOutProblem(index);
        seen[t].push_back(std::to_string(index) + p.prompt + h.prompt +
                          std::to_string((*task)->Verify(p.answer, p.reference_solution).reward()));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    std::sort(seen[t].begin(), seen[t].end());
    EXPECT_EQ(seen[t], seen[0]);
  }
  std::vector<std::string> sequential;
  for (uint64_t index = 0; index < kPerThread; ++index) {
    const Problem p = (*task)->TrainProblem(index);
    sequential.push_back(std::to_string(index) + p.prompt + (*task)->HeldOutProblem(index).prompt +
                         std::to_string((*task)->Verify(p.answer, p.reference_solution).reward()));
  }
  std::sort(sequential.begin(), sequential.end());
  EXPECT_EQ(seen[0], sequential);
}

INSTANTIATE_TEST_SUITE_P(AllTasks, TaskProperties, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.label;
                         });

TEST(CountdownTask, DefaultDifficultyIsShort) {
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(v1::TaskConfig(), 1);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->name(), "countdown");
  size_t max_prompt = 0, max_answer = 0, max_reference = 0;
  std::set<int> used_numbers;  // how many numbers the references use
  for (uint64_t i = 0; i < 3000; ++i) {
    const Problem p = (*task)->TrainProblem(i);
    max_prompt = std::max(max_prompt, p.prompt.size());
    max_answer = std::max(max_answer, p.answer.size());
    max_reference = std::max(max_reference, p.reference_solution.size());
    used_numbers.insert(
        static_cast<int>(ParseCountdownExpression(p.reference_solution)->numbers.size()));
  }
  EXPECT_LE(max_prompt, 16u);  // "20 20 20 -> 100\n"
  EXPECT_LE(max_answer, 12u);  // "20,20,20|100"
  EXPECT_LE(max_reference, 14u);
  EXPECT_EQ(used_numbers, (std::set<int>{2, 3}));
}

TEST(CountdownTask, TinySpaceReducesHeldOut) {
  v1::TaskConfig config;
  config.mutable_countdown()->set_num_numbers(2);
  config.mutable_countdown()->set_max_number(2);
  config.mutable_countdown()->set_max_target(1);  // only "2 2 -> 1" exists
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(config, 1);
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->heldout_size(), 0u);
  ASSERT_EQ((*task)->warnings().size(), 1u);
  EXPECT_THAT((*task)->warnings()[0],
              HasSubstr("only 1 distinct problems found; heldout_size 200 reduced to 0"));
  EXPECT_EQ((*task)->TrainProblem(0).prompt, "2 2 -> 1\n");
  EXPECT_EQ((*task)->TrainProblem(0).reference_solution, "2/2");

  config.mutable_countdown()->set_max_number(3);
  config.mutable_countdown()->set_max_target(3);
  task = CreateTask(config, 1);
  ASSERT_TRUE(task.ok()) << task.status();
  // {1,1}->2, {1,2}->3, {1,3}->2, {2,2}->1, {2,3}->1, {3,3}->1: 6 problems, 3 held out.
  EXPECT_EQ((*task)->heldout_size(), 3u);
  std::set<std::string> heldout, train;
  for (uint64_t i = 0; i < 3; ++i) heldout.insert(CountdownKey((*task)->HeldOutProblem(i).prompt));
  for (uint64_t i = 0; i < 2000; ++i) train.insert(CountdownKey((*task)->TrainProblem(i).prompt));
  EXPECT_EQ(heldout.size(), 3u);
  EXPECT_EQ(train.size(), 3u);
  for (const std::string& k : train) EXPECT_EQ(heldout.count(k), 0u) << k;
}

TEST(CreateTask, Errors) {
  v1::TaskConfig config;
  config.set_kind(v1::TASK_KIND_UNSPECIFIED);
  absl::Status s = CreateTask(config, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("TASK_KIND_UNSPECIFIED"));
  config.set_kind(v1::TASK_KIND_COUNTDOWN);
  config.set_heldout_size(-1);
  EXPECT_EQ(CreateTask(config, 1).status().code(), absl::StatusCode::kInvalidArgument);
  config.set_heldout_size(10);
  for (int n : {1, 7}) {
    config.mutable_countdown()->set_num_numbers(n);
    EXPECT_EQ(CreateTask(config, 1).status().code(), absl::StatusCode::kInvalidArgument) << n;
  }
  config.mutable_countdown()->set_num_numbers(3);
  config.mutable_countdown()->set_max_number(1);
  EXPECT_EQ(CreateTask(config, 1).status().code(), absl::StatusCode::kInvalidArgument);
  config.mutable_countdown()->set_max_number(20);
  config.mutable_countdown()->set_max_target(0);
  EXPECT_EQ(CreateTask(config, 1).status().code(), absl::StatusCode::kInvalidArgument);
  config.set_kind(v1::TASK_KIND_JSONL);
  EXPECT_EQ(CreateTask(config, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Fuzz: random bytes and random strings over each verifier's own alphabet. Every result must
// have an allowed reward consistent with its flags, and survive a serialize/parse round trip
// (proto3 parsing rejects invalid UTF-8 in string fields).

struct FuzzStats {
  int correct = 0, format = 0, parsed = 0;
};

void CheckResult(const v1::VerifierResult& r, const std::vector<double>& allowed,
                 FuzzStats& stats) {
  ASSERT_TRUE(std::isfinite(r.reward()));
  ASSERT_NE(std::find(allowed.begin(), allowed.end(), r.reward()), allowed.end()) << r.reward();
  ASSERT_EQ(r.correct(), r.reward() == 1.0);
  if (!r.parsed()) {
    ASSERT_EQ(r.reward(), 0.0);
  }
  std::string wire;
  ASSERT_TRUE(r.SerializeToString(&wire));
  v1::VerifierResult back;
  ASSERT_TRUE(back.ParseFromString(wire)) << "invalid UTF-8 in " << r.ShortDebugString();
  ASSERT_LE(r.extracted_answer().size(), 256u);
  ASSERT_LE(r.detail().size(), 256u);
  stats.correct += r.correct();
  stats.format += r.reward() > 0 && r.reward() < 1;
  stats.parsed += r.parsed();
}

std::string RandomBytes(std::mt19937_64& rng) {
  // Mostly short, sometimes long.
  const size_t len = rng() % 10 == 0 ? rng() % 4000 : rng() % 48;
  std::string s(len, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

std::string RandomTokens(std::mt19937_64& rng, const std::vector<std::string>& tokens) {
  const size_t n = 1 + rng() % 8;
  std::string s;
  for (size_t k = 0; k < n; ++k) s += tokens[rng() % tokens.size()];
  return s;
}

constexpr int kFuzzBytes = 200000;
constexpr int kFuzzTokens = 100000;

TEST(VerifierFuzz, CountdownNeverFailsAndRewardsAreAllowed) {
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(v1::TaskConfig(), 3);
  ASSERT_TRUE(task.ok());
  std::vector<Problem> problems;
  for (uint64_t i = 0; i < 64; ++i) problems.push_back((*task)->TrainProblem(i));
  std::mt19937_64 rng(99);
  const std::vector<double> allowed = {0.0, kCountdownFormatReward, 1.0};
  FuzzStats stats;
  for (int i = 0; i < kFuzzBytes; ++i) {
    const Problem& p = problems[i % problems.size()];
    const std::string answer = i % 10 == 0 ? RandomBytes(rng) : p.answer;
    CheckResult((*task)->Verify(answer, RandomBytes(rng)), allowed, stats);
  }
  FuzzStats token_stats;
  for (int i = 0; i < kFuzzTokens; ++i) {
    const Problem& p = problems[i % problems.size()];
    absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer(p.answer);
    // Offered numbers and the four operators often, the rest rarely.
    std::vector<std::string> tokens = {"(", ")", " ", "0", "1", "\n"};
    for (int k = 0; k < 6; ++k) {
      for (int64_t n : spec->numbers) tokens.push_back(std::to_string(n));
      for (const char* op : {"+", "-", "*", "/"}) tokens.push_back(op);
    }
    CheckResult((*task)->Verify(p.answer, RandomTokens(rng, tokens)), allowed, token_stats);
  }
  // The alphabet fuzz reaches every outcome (seen with this seed: 25 correct).
  EXPECT_GT(token_stats.correct, 10);
  EXPECT_GT(token_stats.format, 5000);
  EXPECT_GT(token_stats.parsed, 10000);
}

TEST(VerifierFuzz, CountdownStepsNeverFailsAndRewardsAreAllowed) {
  v1::TaskConfig config;
  config.mutable_countdown()->set_format(v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS);
  config.mutable_countdown()->set_num_numbers(4);
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(config, 3);
  ASSERT_TRUE(task.ok()) << task.status();
  std::vector<Problem> problems;
  for (uint64_t i = 0; i < 64; ++i) problems.push_back((*task)->TrainProblem(i));
  std::mt19937_64 rng(98);
  const std::vector<double> allowed = {0.0, kCountdownFormatReward, 1.0};
  FuzzStats stats;
  for (int i = 0; i < kFuzzBytes; ++i) {
    const Problem& p = problems[i % problems.size()];
    const std::string answer = i % 10 == 0 ? RandomBytes(rng) : p.answer;
    CheckResult((*task)->Verify(answer, RandomBytes(rng)), allowed, stats);
  }
  // Random strings over the steps alphabet (and a few other bytes) mixed with whole lines of the
  // reference trace (from a random line on, usually in order), and random edits of the
  // reference: a cut at any point, a character replaced or inserted from the alphabet.
  const std::string alphabet = "0123456789+-*/=\nback \r\xff";
  FuzzStats alphabet_stats, edit_stats;
  for (int i = 0; i < kFuzzTokens; ++i) {
    const Problem& p = problems[i % problems.size()];
    const std::vector<std::string> lines = absl::StrSplit(p.reference_solution, '\n');
    std::string s;
    size_t next = rng() % lines.size();
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int k = 0; k < n; ++k) {
      if (rng() % 4 != 0 && next < lines.size()) {
        s += lines[next++] + "\n";
      } else {
        s += alphabet[rng() % (rng() % 4 == 0 ? alphabet.size() : 16)];
        if (rng() % 2 == 0) next = rng() % lines.size();
      }
    }
    CheckResult((*task)->Verify(p.answer, s), allowed, alphabet_stats);
    std::string edit = p.reference_solution;
    switch (rng() % 4) {
      case 0:
        break;  // unchanged: correct
      case 1:
        edit.resize(rng() % (edit.size() + 1));
        break;
      case 2:
        edit[rng() % edit.size()] = alphabet[rng() % alphabet.size()];
        break;
      default:
        edit.insert(rng() % (edit.size() + 1), 1, alphabet[rng() % alphabet.size()]);
        break;
    }
    CheckResult((*task)->Verify(p.answer, edit), allowed, edit_stats);
  }
  // Every outcome is reached (seen with this seed: tokens 921 correct, 6421 format, 24479
  // parsed; edits 26632 correct, 5242 format, 49855 parsed, of 100000 each).
  EXPECT_GT(alphabet_stats.correct, 400);
  EXPECT_GT(alphabet_stats.format, 3000);
  EXPECT_GT(alphabet_stats.parsed, 12000);
  EXPECT_LT(alphabet_stats.parsed, kFuzzTokens / 2);  // and many rewards of 0
  EXPECT_GT(edit_stats.correct, 20000);
  EXPECT_GT(edit_stats.format, 3000);
  EXPECT_LT(edit_stats.parsed, kFuzzTokens * 6 / 10);
}

TEST(VerifierFuzz, ArithmeticNeverFailsAndRewardsAreAllowed) {
  v1::TaskConfig config;
  config.set_kind(v1::TASK_KIND_ARITHMETIC);
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(config, 3);
  ASSERT_TRUE(task.ok());
  std::mt19937_64 rng(100);
  const std::vector<double> allowed = {0.0, 1.0};
  FuzzStats stats, token_stats;
  for (int i = 0; i < kFuzzBytes; ++i) {
    const std::string answer = i % 10 == 0 ? RandomBytes(rng) : (*task)->TrainProblem(i).answer;
    CheckResult((*task)->Verify(answer, RandomBytes(rng)), allowed, stats);
  }
  const std::vector<std::string> tokens = {"1", "2", "3", " ", "\n", "-", "0", "\t"};
  for (int i = 0; i < kFuzzTokens; ++i) {
    CheckResult((*task)->Verify(std::to_string(i % 400), RandomTokens(rng, tokens)), allowed,
                token_stats);
  }
  EXPECT_GT(token_stats.correct, 30);  // seen with this seed: 76
  EXPECT_GT(token_stats.parsed, 10000);
}

TEST(VerifierFuzz, JsonlNeverFailsAndRewardsAreAllowed) {
  v1::TaskConfig config;
  config.set_kind(v1::TASK_KIND_JSONL);
  config.set_dataset_path(WriteDataset(50));
  absl::StatusOr<std::unique_ptr<Task>> task = CreateTask(config, 3);
  ASSERT_TRUE(task.ok());
  std::mt19937_64 rng(101);
  const std::vector<double> allowed = {0.0, 1.0};
  FuzzStats stats, token_stats;
  for (int i = 0; i < kFuzzBytes; ++i) {
    const std::string answer = i % 10 == 0 ? RandomBytes(rng) : (*task)->TrainProblem(i).answer;
    CheckResult((*task)->Verify(answer, RandomBytes(rng)), allowed, stats);
  }
  const std::vector<std::string> tokens = {"\\boxed{", "}",  "{", "\\frac", "Answer:", "1",  "2",
                                           "/",        ".",  ",", "-",      "$",       " ",  "\n",
                                           "\\text{",  "x=", "%", "\\left", "\\",      "000"};
  const std::vector<std::string> answers = {"1", "2", "1/2", "-1", "12", "0.5", "1,000"};
  for (int i = 0; i < kFuzzTokens; ++i) {
    CheckResult((*task)->Verify(answers[i % answers.size()], RandomTokens(rng, tokens)), allowed,
                token_stats);
  }
  EXPECT_GT(token_stats.correct, 100);
  EXPECT_GT(token_stats.parsed, 10000);
}

}  // namespace
}  // namespace rhythm::common::tasks

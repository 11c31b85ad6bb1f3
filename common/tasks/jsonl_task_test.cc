#include "common/tasks/jsonl_task.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rhythm::common::tasks {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Writes `contents` to a fresh file under the test's temporary directory.
std::string WriteFile(const std::string& name, const std::string& contents) {
  const char* base = std::getenv("TEST_TMPDIR");
  const std::filesystem::path dir = std::filesystem::path(base ? base : "/tmp") /
                                    ("rhythm_tasks_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / name;
  std::ofstream(path, std::ios::binary) << contents;
  return path.string();
}

v1::TaskConfig Config(const std::string& path, int heldout) {
  v1::TaskConfig config;
  config.set_kind(v1::TASK_KIND_JSONL);
  config.set_dataset_path(path);
  config.set_heldout_size(heldout);
  return config;
}

std::string Lines(int n, int first = 1) {
  std::string out;
  for (int i = first; i < first + n; ++i) {
    out += "{\"prompt\": \"What is " + std::to_string(i) + " + 1?\", \"answer\": \"" +
           std::to_string(i + 1) + "\"}\n";
  }
  return out;
}

TEST(JsonlTask, SplitsLastLinesAndCyclesTraining) {
  const std::string path = WriteFile("ten.jsonl", Lines(10));
  absl::StatusOr<std::unique_ptr<Task>> task = CreateJsonlTask(Config(path, 3));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->name(), "jsonl");
  EXPECT_TRUE((*task)->warnings().empty());
  ASSERT_EQ((*task)->heldout_size(), 3u);
  EXPECT_EQ((*task)->HeldOutProblem(0).prompt, "What is 8 + 1?");
  EXPECT_EQ((*task)->HeldOutProblem(2).prompt, "What is 10 + 1?");
  EXPECT_EQ((*task)->HeldOutProblem(5).prompt, "What is 10 + 1?");  // wraps
  for (uint64_t i = 0; i < 30; ++i) {
    const Problem p = (*task)->TrainProblem(i);
    EXPECT_EQ(p.prompt, "What is " + std::to_string(i % 7 + 1) + " + 1?");
    EXPECT_EQ(p.answer, std::to_string(i % 7 + 2));
    EXPECT_EQ(p.reference_solution, "Answer: " + p.answer);
    EXPECT_TRUE((*task)->Verify(p.answer, p.reference_solution).correct());
    EXPECT_EQ(p.id, (*task)->TrainProblem(i % 7).id);  // same line, same id
    EXPECT_EQ(p.id & kHeldOutIdBit, 0u);
  }
  std::set<uint64_t> ids;
  for (uint64_t i = 0; i < 7; ++i) ids.insert((*task)->TrainProblem(i).id);
  for (uint64_t i = 0; i < 3; ++i) {
    const Problem p = (*task)->HeldOutProblem(i);
    EXPECT_NE(p.id & kHeldOutIdBit, 0u);
    ids.insert(p.id);
    EXPECT_TRUE((*task)->Verify(p.answer, p.reference_solution).correct());
  }
  EXPECT_EQ(ids.size(), 10u);
}

TEST(JsonlTask, SmallFileKeepsOneTrainingLine) {
  const std::string path = WriteFile("two.jsonl", Lines(2));
  absl::StatusOr<std::unique_ptr<Task>> task = CreateJsonlTask(Config(path, 200));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->heldout_size(), 1u);
  EXPECT_EQ((*task)->TrainProblem(5).prompt, "What is 1 + 1?");
  EXPECT_EQ((*task)->HeldOutProblem(0).prompt, "What is 2 + 1?");
  ASSERT_EQ((*task)->warnings().size(), 1u);
  EXPECT_THAT((*task)->warnings()[0], HasSubstr("heldout_size 200 reduced to 1"));

  const std::string one = WriteFile("one.jsonl", Lines(1));
  task = CreateJsonlTask(Config(one, 200));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ((*task)->heldout_size(), 0u);
  EXPECT_EQ((*task)->HeldOutProblem(0).prompt, "");
  EXPECT_EQ((*task)->TrainProblem(0).prompt, "What is 1 + 1?");
}

TEST(JsonlTask, MalformedLinesAreReportedWithLineNumbersAndSkipped) {
  const std::string contents =
      "{\"prompt\": \"p1\", \"answer\": \"1\"}\n"                      // 1 ok
      "\n"                                                             // 2 blank: skipped silently
      "{\"prompt\": \"p3\", \"answer\": 3}\n"                          // 3 ok: a number answer
      "not json\n"                                                     // 4
      "[1, 2]\n"                                                       // 5
      "{\"answer\": \"6\"}\n"                                          // 6
      "{\"prompt\": 6, \"answer\": \"6\"}\n"                           // 7
      "{\"prompt\": \"p8\"}\n"                                         // 8
      "{\"prompt\": \"p9\", \"answer\": \"  \"}\n"                     // 9
      "{\"prompt\": \"\", \"answer\": \"10\"}\n"                       // 10
      "{\"prompt\": \"p\xff\", \"answer\": \"11\"}\n"                  // 11 invalid UTF-8
      "{\"prompt\": \"p12\", \"answer\": \"a\\nb\"}\n"                 // 12 two-line answer
      "{\"prompt\": \"p13\", \"answer\": \"13\"} x\n"                  // 13 trailing garbage
      "{\"prompt\": \"p14\", \"answer\": \"14\", \"extra\": [1]}\r\n"  // 14 ok, CRLF
      "   \t\n"                                                        // 15 blank
      "{\"prompt\": \"p16\", \"answer\": \"16\"}";                     // 16 ok, no final newline
  const std::string path = WriteFile("mixed.jsonl", contents);
  absl::StatusOr<std::unique_ptr<Task>> task = CreateJsonlTask(Config(path, 1));
  ASSERT_TRUE(task.ok()) << task.status();
  const std::vector<std::string>& w = (*task)->warnings();
  ASSERT_EQ(w.size(), 10u) << ::testing::PrintToString(w);
  EXPECT_THAT(w[0], HasSubstr(path + ":4: not valid JSON"));
  EXPECT_EQ(w[1], path + ":5: not a JSON object");
  EXPECT_EQ(w[2], path + ":6: \"prompt\" missing or not a string");
  EXPECT_EQ(w[3], path + ":7: \"prompt\" missing or not a string");
  EXPECT_EQ(w[4], path + ":8: \"answer\" missing or not a string or number");
  EXPECT_EQ(w[5], path + ":9: \"answer\" is empty");
  EXPECT_EQ(w[6], path + ":10: \"prompt\" is empty");
  EXPECT_THAT(w[7], HasSubstr(path + ":11: not valid JSON"));
  EXPECT_EQ(w[8], path + ":12: \"answer\" spans several lines");
  EXPECT_THAT(w[9], HasSubstr(path + ":13: not valid JSON"));
  // Valid: lines 1, 3, 14, 16; the last is held out.
  EXPECT_EQ((*task)->heldout_size(), 1u);
  EXPECT_EQ((*task)->HeldOutProblem(0).prompt, "p16");
  EXPECT_EQ((*task)->TrainProblem(0).prompt, "p1");
  EXPECT_EQ((*task)->TrainProblem(1).answer, "3");
  EXPECT_EQ((*task)->TrainProblem(2).prompt, "p14");
  EXPECT_EQ((*task)->TrainProblem(3).prompt, "p1");
}

TEST(JsonlTask, UnverifiableAnswersAreSkipped) {
  v1::TaskConfig config = Config(WriteFile("brace.jsonl",
                                           "{\"prompt\": \"a\", \"answer\": \"{\"}\n"
                                           "{\"prompt\": \"b\", \"answer\": \"2\"}\n"),
                                 0);
  config.set_answer_marker("");  // reference "\boxed{{}" cannot balance
  absl::StatusOr<std::unique_ptr<Task>> task = CreateJsonlTask(config);
  ASSERT_TRUE(task.ok()) << task.status();
  ASSERT_EQ((*task)->warnings().size(), 1u);
  EXPECT_THAT((*task)->warnings()[0], HasSubstr(":1: the answer cannot be verified"));
  EXPECT_EQ((*task)->TrainProblem(0).reference_solution, "\\boxed{2}");
  EXPECT_TRUE((*task)->Verify("2", "\\boxed{2}").correct());
  EXPECT_FALSE((*task)->Verify("2", "Answer: 2").correct());  // marker disabled
}

TEST(JsonlTask, HeldOutPromptsNeverTrain) {
  // Line 2 repeats held-out line 4's prompt.
  const std::string path = WriteFile("dup.jsonl",
                                     "{\"prompt\": \"a\", \"answer\": \"1\"}\n"
                                     "{\"prompt\": \"q\", \"answer\": \"2\"}\n"
                                     "{\"prompt\": \"b\", \"answer\": \"3\"}\n"
                                     "{\"prompt\": \"q\", \"answer\": \"2\"}\n");
  absl::StatusOr<std::unique_ptr<Task>> task = CreateJsonlTask(Config(path, 1));
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_THAT((*task)->warnings(),
              ElementsAre(path + ":2: same prompt as held-out line 4; not used for training"));
  EXPECT_EQ((*task)->TrainProblem(0).prompt, "a");
  EXPECT_EQ((*task)->TrainProblem(1).prompt, "b");
  EXPECT_EQ((*task)->TrainProblem(2).prompt, "a");

  const std::string all_dup = WriteFile("alldup.jsonl",
                                        "{\"prompt\": \"q\", \"answer\": \"2\"}\n"
                                        "{\"prompt\": \"q\", \"answer\": \"2\"}\n");
  EXPECT_EQ(CreateJsonlTask(Config(all_dup, 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(JsonlTask, Errors) {
  absl::Status s = CreateJsonlTask(Config("/nonexistent/rhythm/x.jsonl", 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  s = CreateJsonlTask(Config("", 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string dir = std::filesystem::path(WriteFile("x", "")).parent_path().string();
  s = CreateJsonlTask(Config(dir, 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  s = CreateJsonlTask(Config(WriteFile("empty.jsonl", ""), 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = CreateJsonlTask(Config(WriteFile("bad.jsonl", "\n\nnope\n{}\n"), 1)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("4 lines, 2 malformed; first: "));
  EXPECT_THAT(s.message(), HasSubstr("bad.jsonl:3: not valid JSON"));
}

TEST(JsonlTask, ManyMalformedLinesAreCounted) {
  std::string contents = Lines(1);
  for (int i = 0; i < 250; ++i) contents += "garbage\n";
  const std::string path = WriteFile("garbage.jsonl", contents);
  absl::StatusOr<std::unique_ptr<Task>> task = CreateJsonlTask(Config(path, 0));
  ASSERT_TRUE(task.ok()) << task.status();
  ASSERT_EQ((*task)->warnings().size(), 101u);
  EXPECT_EQ((*task)->warnings().back(), path + ": 150 more malformed lines not listed");
}

TEST(JsonlTask, IdsDependOnTheFile) {
  const std::string a = WriteFile("a.jsonl", Lines(5));
  const std::string b = WriteFile("b.jsonl", Lines(5, 2));
  absl::StatusOr<std::unique_ptr<Task>> ta = CreateJsonlTask(Config(a, 1));
  absl::StatusOr<std::unique_ptr<Task>> ta2 = CreateJsonlTask(Config(a, 1));
  absl::StatusOr<std::unique_ptr<Task>> tb = CreateJsonlTask(Config(b, 1));
  ASSERT_TRUE(ta.ok() && ta2.ok() && tb.ok());
  EXPECT_EQ((*ta)->TrainProblem(3).id, (*ta2)->TrainProblem(3).id);
  EXPECT_NE((*ta)->TrainProblem(3).id, (*tb)->TrainProblem(3).id);
}

}  // namespace
}  // namespace rhythm::common::tasks

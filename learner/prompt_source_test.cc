#include "learner/prompt_source.h"

#include "common/tasks/prompt_format.h"
#include "common/tasks/task.h"
#include "common/tokenizer/char_tokenizer.h"
#include "gtest/gtest.h"

namespace rhythm::learner {
namespace {

// A tokenizer that encodes nothing (as a byte-level BPE does with invalid UTF-8).
class Refusing : public common::Tokenizer {
 public:
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view) const override {
    return absl::InvalidArgumentError("text: cannot encode");
  }
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>&) const override { return ""; }
  int32_t vocab_size() const override { return 3; }
  int32_t eos_id() const override { return 2; }
  int32_t pad_id() const override { return 0; }
  std::optional<int32_t> TokenId(absl::string_view) const override { return std::nullopt; }
  absl::Status Save(const std::string&) const override { return absl::OkStatus(); }
};

std::unique_ptr<common::tasks::Task> Arithmetic() {
  v1::TaskConfig c;
  c.set_kind(v1::TASK_KIND_ARITHMETIC);
  auto t = common::tasks::CreateTask(c, 3);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(t).value();
}

TEST(PromptSourceTest, EncodesTheTasksProblemsAndSkipsWhatCannotBeGenerated) {
  auto task = Arithmetic();
  auto chars = common::CharTokenizer::CreateDefault();
  const common::tasks::PromptFormatter verbatim;
  const common::tasks::Problem p = task->TrainProblem(4);
  const PromptSpec ok = TaskPromptSource(*task, *chars, verbatim, 1000)(4);
  EXPECT_EQ(ok.prompt_id, p.id);
  EXPECT_EQ(ok.text, p.prompt);
  EXPECT_EQ(ok.answer, p.answer);
  EXPECT_TRUE(ok.skip_reason.empty());
  const absl::StatusOr<std::vector<int32_t>> encoded = chars->Encode(p.prompt);
  ASSERT_TRUE(encoded.ok());
  std::vector<uint32_t> want;
  for (int32_t id : *encoded) want.push_back(static_cast<uint32_t>(id));
  EXPECT_EQ(ok.token_ids, want);

  const int64_t len = static_cast<int64_t>(want.size());
  EXPECT_TRUE(TaskPromptSource(*task, *chars, verbatim, len)(4).skip_reason.empty())
      << "exactly fits";
  const PromptSpec long_one = TaskPromptSource(*task, *chars, verbatim, len - 1)(4);
  EXPECT_EQ(long_one.skip_reason, "too_long");
  EXPECT_NE(long_one.skip_detail.find("at most " + std::to_string(len - 1)), std::string::npos)
      << long_one.skip_detail;
  EXPECT_TRUE(long_one.token_ids.empty());

  const Refusing refusing;
  const PromptSpec bad = TaskPromptSource(*task, refusing, verbatim, 1000)(4);
  EXPECT_EQ(bad.skip_reason, "unencodable");
  EXPECT_EQ(bad.skip_detail, "text: cannot encode");
}

TEST(PromptSourceTest, PromptsAreRenderedByTheTasksPromptFormat) {
  auto task = Arithmetic();
  auto chars = common::CharTokenizer::CreateDefault();
  v1::TaskConfig c;
  c.set_prompt_format(v1::PROMPT_FORMAT_CUSTOM);
  c.set_system_prompt("Add.");
  c.set_prompt_template("{system}\nQ: {prompt}\nA: ");
  absl::StatusOr<common::tasks::PromptFormatter> format =
      common::tasks::PromptFormatter::Create(c, *chars);
  ASSERT_TRUE(format.ok()) << format.status();
  const common::tasks::Problem p = task->TrainProblem(2);
  const PromptSpec spec = TaskPromptSource(*task, *chars, *format, 1000)(2);
  EXPECT_EQ(spec.text, "Add.\nQ: " + p.prompt + "\nA: ");
  const absl::StatusOr<std::vector<int32_t>> encoded = chars->Encode(spec.text);
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(spec.token_ids, std::vector<uint32_t>(encoded->begin(), encoded->end()));
  EXPECT_TRUE(spec.skip_reason.empty());
}

}  // namespace
}  // namespace rhythm::learner

// PromptFormatter on a byte-level tokenizer written here (one id per byte, ChatML markers as
// added tokens), so the expected ids are the rendered text's bytes with the markers' ids: no
// reference file needed. chat_template_test.cc checks rendering against the JS reference.
#include "common/tasks/prompt_format.h"

#include <string>
#include <vector>

#include "common/tokenizer/char_tokenizer.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::tasks {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int32_t kImStart = 256, kImEnd = 257;

// Qwen2's template, as its tokenizer_config.json has it.
constexpr char kChatMl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

// (<|endoftext|>, id 258, is there so that a tokenizer without tokenizer_config.json has an eos.)
// GPT-2's byte-level alphabet: the UTF-8 of the symbol that stands for byte b.
std::string ByteSymbol(int b) {
  int cp = b;
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::unique_ptr<HfBpeTokenizer> ByteTokenizer(std::optional<std::string> config) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteSymbol(b)] = b;
  json added = json::array();
  int id = kImStart;
  for (const char* t : {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}) {
    added.push_back({{"id", id++},
                     {"content", t},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}};
  const json doc = {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"}, {"unk_token", nullptr}, {"vocab", vocab}, {"merges", json::array()}}}};
  HfTokenizerFiles files;
  files.tokenizer_json = doc.dump();
  files.tokenizer_json_source = "m/tokenizer.json";
  files.config_json = std::move(config);
  files.config_json_source = "m/tokenizer_config.json";
  auto tok = HfBpeTokenizer::FromFiles(std::move(files));
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

// The ids ByteTokenizer must give: one per byte, the two markers as their ids.
std::vector<int32_t> ExpectedIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 12, "<|im_start|>") == 0) {
      ids.push_back(kImStart);
      i += 12;
    } else if (text.compare(i, 10, "<|im_end|>") == 0) {
      ids.push_back(kImEnd);
      i += 10;
    } else {
      ids.push_back(static_cast<unsigned char>(text[i++]));
    }
  }
  return ids;
}

v1::TaskConfig Task(v1::PromptFormat format, const std::string& system = "",
                    const std::string& tmpl = "") {
  v1::TaskConfig c;
  c.set_kind(v1::TASK_KIND_JSONL);
  c.set_prompt_format(format);
  c.set_system_prompt(system);
  c.set_prompt_template(tmpl);
  return c;
}

const std::string kConfig = json{{"eos_token", "<|im_end|>"}, {"chat_template", kChatMl}}.dump();

TEST(PromptFormatter, VerbatimByDefault) {
  auto chars = CharTokenizer::CreateDefault();
  v1::TaskConfig c;
  EXPECT_EQ(c.prompt_format(), v1::PROMPT_FORMAT_VERBATIM);
  absl::StatusOr<PromptFormatter> f = PromptFormatter::Create(c, *chars);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->description(), "verbatim");
  EXPECT_EQ(f->Render("3 7 20 -> 27\n"), "3 7 20 -> 27\n");
  EXPECT_EQ(*f->Encode(*chars, "47+38="), *chars->Encode("47+38="));
  EXPECT_EQ(PromptFormatter().Render("x"), "x");
}

TEST(PromptFormatter, ChatRendersTheModelsTemplateAndEncodesMarkersAsSpecialIds) {
  auto tok = ByteTokenizer(kConfig);
  ASSERT_NE(tok, nullptr);
  absl::StatusOr<PromptFormatter> f =
      PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT, "Be brief."), *tok);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->description(), "chat (ChatML with a default system prompt)");
  const std::string want =
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
      "<|im_start|>assistant\n";
  EXPECT_EQ(f->Render("What is 2+2?"), want);
  absl::StatusOr<std::vector<int32_t>> ids = f->Encode(*tok, "What is 2+2?");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, ExpectedIds(want));
  EXPECT_EQ(ids->front(), kImStart);

  // No system prompt: the template's default system turn.
  f = PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT), *tok);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(f->Render("x"), StartsWith("<|im_start|>system\nYou are a helpful assistant."));
}

TEST(PromptFormatter, CustomReplacesThePlaceholders) {
  auto chars = CharTokenizer::CreateDefault();
  absl::StatusOr<PromptFormatter> f = PromptFormatter::Create(
      Task(v1::PROMPT_FORMAT_CUSTOM, "Solve it.", "{system}\nQ: {prompt}\nA:"), *chars);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->description(), "custom");
  EXPECT_EQ(f->Render("1+1"), "Solve it.\nQ: 1+1\nA:");
  EXPECT_EQ(*f->Encode(*chars, "1+1"), *chars->Encode("Solve it.\nQ: 1+1\nA:"));
}

TEST(PromptFormatter, BadInputsAreOneLineErrorsNamingTheFieldOrFile) {
  auto chars = CharTokenizer::CreateDefault();
  absl::Status s = PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT), *chars).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("task.prompt_format=chat"));
  EXPECT_THAT(s.message(), HasSubstr("character tokenizer"));

  auto no_config = ByteTokenizer(std::nullopt);
  ASSERT_NE(no_config, nullptr);
  s = PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT), *no_config).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer_config.json: not found"));

  auto gemma = ByteTokenizer(
      json{{"eos_token", "<|im_end|>"},
           {"chat_template",
            "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
            "{{ message['content'] }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n"}}
          .dump());
  ASSERT_NE(gemma, nullptr);
  s = PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT), *gemma).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              StartsWith("task.prompt_format=chat: m/tokenizer_config.json: "
                         "chat_template \"{{ bos_token }}{% for message"));
  EXPECT_THAT(s.message(), HasSubstr("set task.prompt_format=custom with task.prompt_template"));

  s = PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CUSTOM, "", "Q: {question}"), *chars).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("task.prompt_template = \"Q: {question}\""));
  EXPECT_THAT(s.message(), HasSubstr("{prompt}"));

  for (const absl::Status& e :
       {PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT), *chars).status(),
        PromptFormatter::Create(Task(v1::PROMPT_FORMAT_CHAT), *gemma).status()}) {
    EXPECT_EQ(std::string(e.message()).find('\n'), std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace rhythm::common::tasks

// Chat templates against the JS reference (testdata/make_chat_fixtures.mjs: @huggingface/jinja
// rendering the real templates, tokenizers.js for Qwen3's ids):
//   - the templates rhythm means to support are recognised as the right family;
//   - every template of the fixture set that is recognised (47 real templates: Qwen2/2.5/3,
//     Llama 3/3.1/3.2, and look-alikes such as QwQ, Hermes, SmolLM2, Llama Guard) renders
//     every fixture conversation exactly as the reference does, and the rest are rejected;
//   - Qwen3's template read from the real tokenizer_config.json renders, and HfBpeTokenizer
//     encodes the rendering (special tokens as their ids) to the reference ids.
// Plus the error messages of bad inputs, Python-style trimming, and custom templates.
#include "common/tokenizer/chat_template.h"

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

std::string TestData(const std::string& name) {
  return std::string(RHYTHM_TOKENIZER_TESTDATA_DIR) + "/" + name;
}

std::vector<json> ReadJsonl(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::vector<json> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) lines.push_back(json::parse(line));
  }
  return lines;
}

struct FixtureTemplate {
  std::string bos, text, origin;
};

const std::map<std::string, FixtureTemplate>& Templates() {
  static const auto* const kTemplates = [] {
    auto* m = new std::map<std::string, FixtureTemplate>();
    for (const json& j : ReadJsonl(TestData("chat_templates.jsonl"))) {
      (*m)[j["name"].get<std::string>()] = {
          j["bos_token"].is_string() ? j["bos_token"].get<std::string>() : "",
          j["chat_template"].get<std::string>(), j["origin"].get<std::string>()};
    }
    return m;
  }();
  return *kTemplates;
}

absl::StatusOr<ChatTemplate> Recognize(const std::string& name) {
  const auto it = Templates().find(name);
  if (it == Templates().end()) return absl::NotFoundError("no fixture template " + name);
  return RecognizeChatTemplate(it->second.text, it->second.bos, it->second.origin);
}

std::string Qwen3Dir() {
  if (const char* dir = std::getenv("RHYTHM_QWEN3_TOKENIZER_DIR"); dir && *dir) return dir;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/rhythm/qwen3-tokenizer";
}

TEST(ChatTemplate, RecognisesTheSupportedFamilies) {
  struct Case {
    std::string name;
    ChatFamily family;
    std::string default_system, preamble;
  };
  const std::string kLlama31 = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  const std::vector<Case> cases = {
      {"qwen3", ChatFamily::kChatMl, "", ""},
      {"qwen2:0.5b", ChatFamily::kChatMl, "You are a helpful assistant.", ""},
      {"qwen2.5:0.5b", ChatFamily::kChatMl,
       "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", ""},
      {"qwen2.5-coder:1.5b", ChatFamily::kChatMl,
       "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", ""},
      {"qwq:32b", ChatFamily::kChatMl,  // QwQ-32B-Preview: Qwen2.5's layout, no <think>
       "You are a helpful and harmless assistant. You are Qwen developed by Alibaba. You should "
       "think step-by-step.",
       ""},
      {"llama3", ChatFamily::kLlama3, "", ""},
      {"llama3-unconditional", ChatFamily::kLlama3, "", ""},
      {"llama3.1:8b", ChatFamily::kLlama3, "", kLlama31},
      {"llama3.2:3b", ChatFamily::kLlama3, "", kLlama31},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<ChatTemplate> t = Recognize(c.name);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->family, c.family);
    EXPECT_EQ(t->default_system, c.default_system);
    EXPECT_EQ(t->system_preamble, c.preamble);
    EXPECT_EQ(t->bos, c.family == ChatFamily::kLlama3 ? "<|begin_of_text|>" : "");
  }
}

TEST(ChatTemplate, RejectsLookAlikesThatWriteSomethingElse) {
  // QwQ and DeepSeek-R1 open a <think> block in the generation prompt; Nemotron writes Llama
  // 3.1's system turn without its preamble, stable-code a default system from a variable; the
  // others are other families altogether.
  for (const std::string name :
       {"qwq:32b#38", "qwq:32b#39", "deepseek-r1:8b", "gemma3:1b", "mistral:7b-instruct-fp16",
        "phi4:14b", "granite3.3:2b", "olmo2:7b", "nemotron:70b", "stable-code:3b"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<ChatTemplate> t = Recognize(name);
    ASSERT_FALSE(t.ok()) << t->name;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr(Templates().at(name).origin));
    EXPECT_THAT(t.status().message(), HasSubstr("task.prompt_format=custom"));
    EXPECT_THAT(t.status().message(), HasSubstr("task.prompt_template"));
    EXPECT_THAT(std::string(t.status().message()), Not(HasSubstr("\n")));
  }
  const absl::Status qwq = Recognize("qwq:32b#38").status();
  EXPECT_THAT(qwq.message(), HasSubstr("generation prompt"));
  EXPECT_THAT(qwq.message(), HasSubstr("<think>"));
}

TEST(ChatTemplate, EveryRecognisedTemplateRendersLikeTheReference) {
  const std::vector<json> lines = ReadJsonl(TestData("chat_expected.jsonl"));
  ASSERT_GE(lines.size(), 200u);
  std::set<std::string> recognised, rejected;
  int compared = 0;
  for (const json& line : lines) {
    const std::string name = line["template"].get<std::string>();
    absl::StatusOr<ChatTemplate> t = Recognize(name);
    if (!t.ok()) {
      ASSERT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << name;
      rejected.insert(name);
      continue;
    }
    recognised.insert(name);
    const std::string system = line["system"].get<std::string>();
    const std::string prompt = line["prompt"].get<std::string>();
    EXPECT_EQ(RenderChat(*t, system, prompt), line["text"].get<std::string>())
        << name << " (" << t->name << "), system " << json(system).dump() << ", prompt "
        << json(prompt).dump();
    ++compared;
  }
  // Pinned, so that a change in recognition shows up here: every name below renders exactly as
  // the reference on all its conversations (checked above).
  // (qwen3-coder's template, whose system turn comes from a variable, is rejected: safe, if
  // stricter than needed.)
  const std::set<std::string> kRecognised = {"qwen3",
                                             "qwen2:0.5b",
                                             "qwen2.5:0.5b",
                                             "qwen2.5-coder:1.5b",
                                             "qwq:32b",
                                             "dolphin-mixtral:8x7b",
                                             "llava:34b",
                                             "marco-o1:7b",
                                             "opencoder:8b",
                                             "sailor2:1b",
                                             "smollm2:135m",
                                             "llama3",
                                             "llama3-unconditional",
                                             "llama3.1:8b",
                                             "llama3.2:3b"};
  EXPECT_EQ(recognised, kRecognised);
  EXPECT_GE(compared, 150);
  EXPECT_GE(rejected.size(), 20u);
}

TEST(ChatTemplate, Qwen3FromItsTokenizerFilesEncodesToTheReferenceIds) {
  auto tok = HfBpeTokenizer::Load(Qwen3Dir());
  ASSERT_TRUE(tok.ok()) << tok.status()
                        << "\nRun common/tokenizer/testdata/fetch_qwen3_tokenizer.sh (scripts/"
                           "setup.sh does) or set RHYTHM_QWEN3_TOKENIZER_DIR.";
  std::optional<ChatTemplateFiles> files = (*tok)->chat_template_files();
  ASSERT_TRUE(files.has_value());
  absl::StatusOr<ChatTemplate> t = ChatTemplateFromFiles(*files);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->family, ChatFamily::kChatMl);
  EXPECT_EQ(t->default_system, "");
  int checked = 0;
  for (const json& line : ReadJsonl(TestData("chat_expected.jsonl"))) {
    if (line["template"] != "qwen3") continue;
    const std::string text =
        RenderChat(*t, line["system"].get<std::string>(), line["prompt"].get<std::string>());
    EXPECT_EQ(text, line["text"].get<std::string>());
    absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, line["ids"].get<std::vector<int32_t>>()) << json(text).dump();
    ++checked;
  }
  EXPECT_EQ(checked, 45);
  // The chat markers are single special ids, also inside a prompt (as HF tokenizes them).
  absl::StatusOr<std::vector<int32_t>> ids = (*tok)->Encode(RenderChat(*t, "", "hi"));
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198}));
}

TEST(ChatTemplate, Llama3RenderingByHand) {
  // Independent of the fixtures: the strings of Meta's templates, written out.
  ChatTemplate llama;
  llama.family = ChatFamily::kLlama3;
  llama.bos = "<|begin_of_text|>";
  EXPECT_EQ(RenderChat(llama, "", " hi \n"),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(RenderChat(llama, "Be brief.", "hi"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  llama.system_preamble = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n";
  EXPECT_EQ(RenderChat(llama, "", "hi"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, ChatMlDefaultSystemIsReplacedBySystemPrompt) {
  absl::StatusOr<ChatTemplate> t = Recognize("qwen2.5:0.5b");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(RenderChat(*t, "", "x"),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(RenderChat(*t, " S ", " x "),
            "<|im_start|>system\n S <|im_end|>\n<|im_start|>user\n x <|im_end|>\n"
            "<|im_start|>assistant\n");
}

// Found while fuzzing the tokenizer files (fuzz/): the default system prompt was captured with
// std::regex, which recursed once per character and overflowed the stack (SIGSEGV) on a
// 100 KB prompt. Also: tokenizer_config.json nested 100,000 deep is an error.
TEST(ChatTemplate, LongDefaultSystemPromptAndDeepConfig) {
  const auto it = Templates().find("qwen2.5:0.5b");
  ASSERT_NE(it, Templates().end());
  const std::string qwen = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  const std::string long_system = std::string(50000, 'x') + "\\'" + std::string(50000, 'y');
  const std::string text = absl::StrReplaceAll(it->second.text, {{qwen, long_system}});
  ASSERT_NE(text, it->second.text);
  absl::StatusOr<ChatTemplate> t = RecognizeChatTemplate(text, "", "long.jinja");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system, std::string(50000, 'x') + "'" + std::string(50000, 'y'));

  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  ChatTemplateFiles files;
  files.config_json = R"({"chat_template": )" + deep + "}";
  files.config_json_source = "d/tokenizer_config.json";
  absl::StatusOr<ChatTemplate> c = ChatTemplateFromFiles(files);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message(), "d/tokenizer_config.json: nests deeper than 64 levels");
}

// Found by fuzz/fuzz_tokenizer_json: quoting a template or prompt_template with invalid UTF-8
// (or one cut inside a character at byte 80) in the error message threw nlohmann's type_error
// 316, which nothing caught: the process aborted. Invalid bytes are now quoted as U+FFFD.
TEST(ChatTemplate, InvalidUtf8IsQuotedNotThrown) {
  absl::StatusOr<ChatTemplate> t = RecognizeChatTemplate("{{ x }}\xf1\x80 y", "", "t.jinja");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("t.jinja: chat_template \"{{ x }}\xef\xbf\xbd"));
  // 79 ASCII bytes, then a two-byte character: the 80-byte excerpt ends inside it.
  const std::string prompt = std::string(79, 'a') + "\xc3\xa9 no placeholder";
  absl::Status s = CheckPromptTemplate(prompt, "task.prompt_template");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("task.prompt_template = \"aaaa"));
}

TEST(ChatTemplate, ErrorsNameTheFileAndField) {
  ChatTemplateFiles none;
  none.config_json_source = "m/tokenizer_config.json";
  none.chat_template_jinja_source = "m/chat_template.jinja";
  absl::Status s = ChatTemplateFromFiles(none).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer_config.json: not found"));
  EXPECT_THAT(s.message(), HasSubstr("task.prompt_format=custom"));

  ChatTemplateFiles base = none;
  base.config_json = R"({"eos_token": "<|endoftext|>"})";
  s = ChatTemplateFromFiles(base).status();
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer_config.json: chat_template: missing"));

  ChatTemplateFiles broken = none;
  broken.config_json = "{not json";
  s = ChatTemplateFromFiles(broken).status();
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer_config.json: not a JSON object"));

  ChatTemplateFiles mistral = none;
  mistral.config_json = json{{"chat_template",
                              "{{ bos_token }}{% for message in messages %}{% if message['role']"
                              " == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
                              "{% endif %}{% endfor %}"}}
                            .dump();
  s = ChatTemplateFromFiles(mistral).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer_config.json: chat_template \"{{ bos_token }}"));
  EXPECT_THAT(s.message(), HasSubstr("neither ChatML"));
  EXPECT_THAT(s.message(), HasSubstr("task.prompt_format=custom with task.prompt_template"));

  ChatTemplateFiles llama_no_bos = none;
  llama_no_bos.config_json =
      json{{"chat_template", Templates().at("llama3").text}, {"bos_token", nullptr}}.dump();
  s = ChatTemplateFromFiles(llama_no_bos).status();
  EXPECT_THAT(s.message(), HasSubstr("m/tokenizer_config.json: bos_token: missing"));

  ChatTemplateFiles listed = none;
  listed.config_json =
      json{{"chat_template", json::array({json{{"name", "tool_use"}, {"template", "x"}}})}}.dump();
  s = ChatTemplateFromFiles(listed).status();
  EXPECT_THAT(s.message(), HasSubstr("no \"default\" entry"));
  EXPECT_THAT(s.message(), HasSubstr("tool_use"));
}

TEST(ChatTemplate, ReadsListsAndPrefersChatTemplateJinja) {
  const std::string qwen = Templates().at("qwen2:0.5b").text;
  ChatTemplateFiles listed;
  listed.config_json_source = "m/tokenizer_config.json";
  listed.config_json =
      json{{"chat_template", json::array({json{{"name", "tool_use"}, {"template", "x"}},
                                          json{{"name", "default"}, {"template", qwen}}})}}
          .dump();
  absl::StatusOr<ChatTemplate> t = ChatTemplateFromFiles(listed);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->default_system, "You are a helpful assistant.");

  ChatTemplateFiles jinja = listed;
  jinja.config_json =
      json{{"chat_template", "{{ nonsense }}"}, {"bos_token", "<|begin_of_text|>"}}.dump();
  jinja.chat_template_jinja = Templates().at("llama3.1:8b").text;
  jinja.chat_template_jinja_source = "m/chat_template.jinja";
  t = ChatTemplateFromFiles(jinja);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->family, ChatFamily::kLlama3);
  EXPECT_EQ(t->bos, "<|begin_of_text|>");

  jinja.chat_template_jinja = "{{ nonsense }}";
  EXPECT_THAT(ChatTemplateFromFiles(jinja).status().message(),
              HasSubstr("m/chat_template.jinja: chat_template"));
}

TEST(ChatTemplate, SpellingOfTheTemplateDoesNotMatter) {
  // Qwen2's template with double quotes, attribute access and whitespace control instead.
  const std::string respelled =
      "{%- for message in messages -%}{%- if loop.first and messages[0].role != \"system\" %}"
      "{{- \"<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n\" }}{% endif %}"
      "{{ \"<|im_start|>\" + message.role + \"\\n\" + message.content + \"<|im_end|>\" + "
      "\"\\n\" }}{% endfor %}\n{# generation #}\n{%- if add_generation_prompt %}"
      "{{ \"<|im_start|>assistant\\n\" }}{%- endif %}";
  absl::StatusOr<ChatTemplate> t = RecognizeChatTemplate(respelled, "", "x");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<ChatTemplate> original = Recognize("qwen2:0.5b");
  ASSERT_TRUE(original.ok());
  EXPECT_EQ(RenderChat(*t, "", "q"), RenderChat(*original, "", "q"));

  // ... but writing anything after the generation prompt is not ChatML any more.
  const std::string thinking =
      respelled.substr(0, respelled.size() - std::string("{%- endif %}").size()) +
      "{{ '<think>\\n' }}{%- endif %}";
  absl::Status s = RecognizeChatTemplate(thinking, "", "x").status();
  EXPECT_THAT(s.message(), HasSubstr("writes more after the generation prompt"));
}

TEST(ChatTemplate, PythonStripRemovesUnicodeWhitespace) {
  EXPECT_EQ(PythonStrip(""), "");
  EXPECT_EQ(PythonStrip(" \t\n\v\f\r"), "");
  EXPECT_EQ(PythonStrip("  a b  "), "a b");
  EXPECT_EQ(PythonStrip("\xc2\x85\xc2\xa0x\xe3\x80\x80\xe2\x80\xa8"),
            "x");  // U+0085 U+00A0 U+3000 U+2028
  EXPECT_EQ(PythonStrip("\x1cx\x1f"), "x");
  EXPECT_EQ(PythonStrip("\xe2\x80\x8bx"), "\xe2\x80\x8bx");  // U+200B is not whitespace
  EXPECT_EQ(PythonStrip("\xef\xbb\xbfx"), "\xef\xbb\xbfx");  // nor U+FEFF
  EXPECT_EQ(PythonStrip("é "), "é");
  EXPECT_EQ(PythonStrip(" 🤗"), "🤗");
}

TEST(ChatTemplate, CustomTemplates) {
  EXPECT_TRUE(CheckPromptTemplate("Q: {prompt}\nA:", "task.prompt_template").ok());
  absl::Status s = CheckPromptTemplate("{system} Q: {promt}", "task.prompt_template");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("task.prompt_template = \"{system} Q: {promt}\""));
  EXPECT_THAT(s.message(), HasSubstr("no {prompt} placeholder"));
  EXPECT_EQ(RenderPromptTemplate("<s>{system}|{prompt}|{prompt}{other}", "S", "P {system}"),
            "<s>S|P {system}|P {system}{other}");
  EXPECT_EQ(RenderPromptTemplate("{prompt}", "", ""), "");
}

}  // namespace
}  // namespace rhythm::common

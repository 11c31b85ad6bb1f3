#include "common/tokenizer/chat_template.h"

#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "common/json_limits.h"
#include "nlohmann/json.hpp"

namespace rhythm::common {
namespace {

using nlohmann::json;

// Recognition works on a structural view of the Jinja source, so that the spelling of a
// template (quotes, whitespace control, `message.role` vs `message['role']`, a newline written
// as "\n" or literally) does not matter, while what it writes does:
//   - comments {# #} and whitespace-only text between tags are dropped, `-` / `+` whitespace
//     control is dropped, and whitespace inside a tag outside string literals is dropped;
//   - every string literal is single-quoted, with real newlines and tabs written \n and \t;
//   - message.role / message.content / messages[0].content are written with brackets.
// Non-whitespace text between tags is kept as it is (a template whose turns are raw text is
// then simply not recognised).
std::string Structure(absl::string_view t) {
  std::string out;
  size_t i = 0;
  const size_t n = t.size();
  while (i < n) {
    const bool tag =
        t[i] == '{' && i + 1 < n && (t[i + 1] == '{' || t[i + 1] == '%' || t[i + 1] == '#');
    if (!tag) {
      size_t j = i;
      while (j < n && !(t[j] == '{' && j + 1 < n &&
                        (t[j + 1] == '{' || t[j + 1] == '%' || t[j + 1] == '#'))) {
        ++j;
      }
      absl::string_view raw = t.substr(i, j - i);
      if (raw.find_first_not_of(" \t\r\n") != absl::string_view::npos)
        out.append(raw.data(), raw.size());
      i = j;
      continue;
    }
    const char open = t[i + 1];
    const char close = open == '{' ? '}' : open;  // }} %} #}
    size_t j = i + 2;
    if (j < n && (t[j] == '-' || t[j] == '+')) ++j;
    std::string body;
    while (j < n) {
      const char c = t[j];
      if (j + 1 < n && c == close && t[j + 1] == '}') {
        j += 2;
        break;
      }
      if ((c == '-' || c == '+') && j + 2 < n && t[j + 1] == close && t[j + 2] == '}') {
        ++j;
        continue;
      }
      if (open != '#' && (c == '\'' || c == '"')) {
        body += '\'';
        ++j;
        while (j < n && t[j] != c) {
          if (t[j] == '\\' && j + 1 < n) {
            const char e = t[j + 1];
            if (e == '"') {
              body += '"';
            } else {
              body += '\\';
              body += e;
            }
            j += 2;
            continue;
          }
          if (t[j] == '\n') {
            body += "\\n";
          } else if (t[j] == '\t') {
            body += "\\t";
          } else if (t[j] == '\'') {
            body += "\\'";
          } else {
            body += t[j];
          }
          ++j;
        }
        body += '\'';
        ++j;
        continue;
      }
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') body += c;
      ++j;
    }
    if (open != '#')
      absl::StrAppend(&out, "{", std::string(1, open), body, std::string(1, close), "}");
    i = j;
  }
  return absl::StrReplaceAll(out, {{"messages[0].content", "messages[0]['content']"},
                                   {"messages[0].role", "messages[0]['role']"},
                                   {"message.content", "message['content']"},
                                   {"message.role", "message['role']"}});
}

// The value of a Jinja single-quoted literal's body (as Structure writes it).
std::string Unescape(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char e = s[++i];
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        default:
          out += e;  // \\ \' \"
      }
    } else {
      out += s[i];
    }
  }
  return out;
}

// A one-line excerpt of a template for error messages: whitespace runs collapsed, at most ~80
// bytes (cut at a UTF-8 boundary), quoted.
std::string Excerpt(absl::string_view t, size_t at = 0) {
  std::string flat;
  bool space = false;
  for (size_t i = at; i < t.size() && flat.size() < 80; ++i) {
    const char c = t[i];
    if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
      space = !flat.empty();
      continue;
    }
    if (space) flat += ' ';
    space = false;
    flat += c;
  }
  while (!flat.empty() && (static_cast<unsigned char>(flat.back()) & 0xC0) == 0x80) {
    flat.pop_back();
  }
  if (!flat.empty() && static_cast<unsigned char>(flat.back()) >= 0xC0) flat.pop_back();
  const bool cut = flat.size() + at < t.size();
  // A template is any bytes: dump() would throw type_error 316 on invalid UTF-8, which aborted
  // the process (found by fuzz/fuzz_tokenizer_json); invalid bytes are written as U+FFFD.
  return json(flat + (cut ? "..." : "")).dump(-1, ' ', false, json::error_handler_t::replace);
}

constexpr char kCustomHint[] =
    "set task.prompt_format=custom with task.prompt_template (the rendered prompt, with "
    "{system} and {prompt} placeholders) to give the format explicitly";

absl::Status NotRecognised(absl::string_view source, absl::string_view tmpl,
                           absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      source, ": chat_template ", Excerpt(tmpl),
      " is not a template rhythm renders (ChatML as in Qwen2.5 / Qwen3, or Llama 3): ", why, "; ",
      kCustomHint));
}

// What a recognised template may still contain after its generation prompt: closing tags and
// Qwen3's empty thinking block for enable_thinking=false (which HF does not set by default).
// Returns the first thing that is neither, or "".
std::string WrittenAfter(absl::string_view tail) {
  static constexpr absl::string_view kQwen3NoThinking =
      "{%ifenable_thinkingisdefinedandenable_thinkingisfalse%}{{'<think>\\n\\n</think>\\n\\n'}}"
      "{%endif%}";
  static constexpr absl::string_view kEndIf = "{%endif%}";
  while (!tail.empty()) {
    if (absl::ConsumePrefix(&tail, kEndIf) || absl::ConsumePrefix(&tail, kQwen3NoThinking)) {
      continue;
    }
    return std::string(tail.substr(0, 60));
  }
  return "";
}

// The body of a Jinja '...' literal written right after `prefix` and followed by `suffix`: the
// regex prefix((?:[^'\\]|\\.)*?)suffix (lazy) or ...*)suffix (greedy), leftmost match, written
// out. std::regex recursed once per character and overflowed the stack on a chat template with
// a 100 KB default system prompt (found while fuzzing the tokenizer files, fuzz/).
std::optional<std::string> CaptureQuoted(absl::string_view s, absl::string_view prefix,
                                         absl::string_view suffix, bool lazy) {
  for (size_t from = s.find(prefix); from != absl::string_view::npos;
       from = s.find(prefix, from + 1)) {
    const size_t begin = from + prefix.size();
    std::optional<size_t> end;
    for (size_t b = begin;;) {
      if (absl::StartsWith(s.substr(b), suffix)) {
        end = b;
        if (lazy) break;
      }
      if (b >= s.size() || s[b] == '\'') break;
      if (s[b] != '\\') {
        ++b;
        continue;
      }
      // An escape: the backslash and any character but a line terminator (regex '.').
      if (b + 1 >= s.size() || s[b + 1] == '\n' || s[b + 1] == '\r') break;
      b += 2;
    }
    if (end) return std::string(s.substr(begin, *end - begin));
  }
  return std::nullopt;
}

absl::StatusOr<ChatTemplate> RecognizeChatMl(const std::string& st, absl::string_view tmpl,
                                             absl::string_view source) {
  const bool user_turn =
      absl::StrContains(st,
                        "'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'"
                        "+'\\n'") ||
      absl::StrContains(st,
                        "'<|im_start|>'+message['role']+'\\n'+message['content']+"
                        "'<|im_end|>\\n'");
  if (!user_turn) {
    return NotRecognised(source, tmpl,
                         "it has ChatML markers but does not write a turn as "
                         "'<|im_start|>' + role + '\\n' + content + '<|im_end|>\\n'");
  }
  if (absl::StrContains(st, "bos_token")) {
    return NotRecognised(source, tmpl, "it writes bos_token, which ChatML templates do not");
  }
  // A system turn built from a variable (e.g. stable-code's default 'system_message') is not
  // Qwen's, whose default system text is a literal turn: rendering it would need the variable.
  if (absl::StrContains(st, "system_message")) {
    return NotRecognised(source, tmpl,
                         "it writes its system turn from a variable (system_message), not as "
                         "Qwen's templates do");
  }
  static constexpr absl::string_view kGeneration = "{{'<|im_start|>assistant\\n'}}";
  const size_t at = absl::string_view(st).rfind(kGeneration);
  if (at == std::string::npos) {
    const size_t other = st.rfind("'<|im_start|>assistant");
    return NotRecognised(
        source, tmpl,
        absl::StrCat("its generation prompt is not exactly '<|im_start|>assistant\\n'",
                     other == std::string::npos
                         ? ""
                         : absl::StrCat(" (it writes ", st.substr(other, 50), ")")));
  }
  if (std::string after = WrittenAfter(absl::string_view(st).substr(at + kGeneration.size()));
      !after.empty()) {
    return NotRecognised(source, tmpl,
                         absl::StrCat("it writes more after the generation prompt: ", after));
  }
  ChatTemplate t;
  t.family = ChatFamily::kChatMl;
  t.name = "ChatML";
  if (std::optional<std::string> d =
          CaptureQuoted(st, "'<|im_start|>system\\n", "<|im_end|>\\n'", /*lazy=*/true);
      d && !d->empty()) {
    t.default_system = Unescape(*d);
    t.name = "ChatML with a default system prompt";
  }
  return t;
}

absl::StatusOr<ChatTemplate> RecognizeLlama3(const std::string& st, absl::string_view tmpl,
                                             absl::string_view bos_token,
                                             absl::string_view source) {
  if (!absl::StrContains(st,
                         "'<|start_header_id|>'+message['role']+'<|end_header_id|>\\n\\n'+"
                         "message['content']|trim+'<|eot_id|>'")) {
    return NotRecognised(source, tmpl,
                         "it has Llama 3 markers but does not write a turn as "
                         "'<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + content | "
                         "trim + '<|eot_id|>'");
  }
  static constexpr absl::string_view kGeneration =
      "{{'<|start_header_id|>assistant<|end_header_id|>\\n\\n'}}";
  const size_t at = absl::string_view(st).rfind(kGeneration);
  if (at == std::string::npos) {
    return NotRecognised(source, tmpl,
                         "its generation prompt is not exactly "
                         "'<|start_header_id|>assistant<|end_header_id|>\\n\\n'");
  }
  if (std::string after = WrittenAfter(absl::string_view(st).substr(at + kGeneration.size()));
      !after.empty()) {
    return NotRecognised(source, tmpl,
                         absl::StrCat("it writes more after the generation prompt: ", after));
  }
  ChatTemplate t;
  t.family = ChatFamily::kLlama3;
  t.name = "Llama 3";
  if (!absl::StrContains(st, "bos_token")) {
    return NotRecognised(source, tmpl, "it does not write bos_token, which Llama 3's does");
  }
  if (bos_token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": bos_token: missing or null, and the Llama 3 chat template "
                     "starts with it"));
  }
  t.bos = std::string(bos_token);
  const bool always_system =
      absl::StrContains(st, "{{'<|start_header_id|>system<|end_header_id|>\\n\\n'}}") ||
      absl::StrContains(st, "system_message");
  if (always_system && !absl::StrContains(st, "'Cutting Knowledge Date:")) {
    // e.g. Nemotron 70B: Llama 3.1's layout without the date preamble. Not Llama 3.0 either.
    return NotRecognised(source, tmpl,
                         "it writes its own system turn, but without Llama 3.1's 'Cutting "
                         "Knowledge Date' preamble");
  }
  if (absl::StrContains(st, "'Cutting Knowledge Date:")) {
    // Llama 3.1 / 3.2 / 3.3: the system turn is always written, preamble first.
    const std::optional<std::string> knowledge =
        CaptureQuoted(st, "{{'Cutting Knowledge Date: ", "\\n'}}", /*lazy=*/false);
    const std::optional<std::string> date =
        CaptureQuoted(st, "{%setdate_string='", "'%}", /*lazy=*/false);
    if (!knowledge || !date || !absl::StrContains(st, "{{'Today Date: '+date_string+'\\n\\n'}}") ||
        !absl::StrContains(st, "{{'<|start_header_id|>system<|end_header_id|>\\n\\n'}}") ||
        !absl::StrContains(st, "{%setsystem_message=messages[0]['content']|trim%}") ||
        !absl::StrContains(st, "{{system_message}}{{'<|eot_id|>'}}")) {
      return NotRecognised(source, tmpl,
                           "it has a 'Cutting Knowledge Date' system turn, but not written as "
                           "Llama 3.1's (with a literal date_string)");
    }
    t.system_preamble = absl::StrCat("Cutting Knowledge Date: ", Unescape(*knowledge),
                                     "\nToday Date: ", Unescape(*date), "\n\n");
    t.name = "Llama 3.1";
  }
  return t;
}

bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// The code point that starts at s[i] (s is valid UTF-8) and its length.
uint32_t DecodeAt(absl::string_view s, size_t i, size_t* len) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80 || i + 1 >= s.size()) {
    *len = 1;
    return c;
  }
  if (c < 0xE0) {
    *len = 2;
    return ((c & 0x1Fu) << 6) | (b(1) & 0x3Fu);
  }
  if (c < 0xF0 && i + 2 < s.size()) {
    *len = 3;
    return ((c & 0x0Fu) << 12) | ((b(1) & 0x3Fu) << 6) | (b(2) & 0x3Fu);
  }
  *len = std::min<size_t>(4, s.size() - i);
  return 0x10000;  // outside the BMP: never whitespace
}

}  // namespace

absl::string_view PythonStrip(absl::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t len = 0;
    if (!IsPythonSpace(DecodeAt(text, begin, &len))) break;
    begin += len;
  }
  size_t end = text.size();
  while (end > begin) {
    // Step back to the start of the last code point.
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t len = 0;
    if (!IsPythonSpace(DecodeAt(text, start, &len))) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

absl::StatusOr<ChatTemplate> RecognizeChatTemplate(absl::string_view chat_template,
                                                   absl::string_view bos_token,
                                                   absl::string_view source) {
  const std::string st = Structure(chat_template);
  const bool chatml = absl::StrContains(st, "<|im_start|>") && absl::StrContains(st, "<|im_end|>");
  const bool llama = absl::StrContains(st, "<|start_header_id|>") &&
                     absl::StrContains(st, "<|end_header_id|>") &&
                     absl::StrContains(st, "<|eot_id|>");
  if (chatml == llama) {
    return NotRecognised(source, chat_template,
                         chatml ? "it has both ChatML and Llama 3 markers"
                                : "it has neither ChatML's <|im_start|> / <|im_end|> nor Llama "
                                  "3's <|start_header_id|> / <|eot_id|>");
  }
  return chatml ? RecognizeChatMl(st, chat_template, source)
                : RecognizeLlama3(st, chat_template, bos_token, source);
}

absl::StatusOr<ChatTemplate> ChatTemplateFromFiles(const ChatTemplateFiles& files) {
  const std::string& cfg_src = files.config_json_source;
  std::string bos;
  std::optional<std::string> tmpl;
  std::string tmpl_src;
  if (files.config_json.has_value()) {
    bool too_deep = false;
    const json config = ParseJsonBounded(*files.config_json, &too_deep);
    if (too_deep) {
      return absl::InvalidArgumentError(
          absl::StrCat(cfg_src, ": nests deeper than ", kMaxJsonDepth, " levels"));
    }
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(cfg_src, ": not a JSON object"));
    }
    if (auto it = config.find("bos_token"); it != config.end()) {
      if (it->is_string()) {
        bos = it->get<std::string>();
      } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        bos = (*it)["content"].get<std::string>();
      }
    }
    if (auto it = config.find("chat_template"); it != config.end() && !it->is_null()) {
      tmpl_src = cfg_src;
      if (it->is_string()) {
        tmpl = it->get<std::string>();
      } else if (it->is_array()) {
        std::vector<std::string> names;
        for (const json& entry : *it) {
          if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
              !entry.contains("template") || !entry["template"].is_string()) {
            return absl::InvalidArgumentError(
                absl::StrCat(cfg_src,
                             ": chat_template: expected a string or a list of {\"name\", "
                             "\"template\"}, got an entry ",
                             entry.dump().substr(0, 80)));
          }
          names.push_back(entry["name"].get<std::string>());
          if (names.back() == "default") tmpl = entry["template"].get<std::string>();
        }
        if (!tmpl) {
          return absl::InvalidArgumentError(
              absl::StrCat(cfg_src, ": chat_template: a list with no \"default\" entry (names: ",
                           json(names).dump(), "); ", kCustomHint));
        }
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            cfg_src, ": chat_template: expected a string, got ", it->dump().substr(0, 80)));
      }
    }
  }
  if (files.chat_template_jinja.has_value()) {  // transformers prefers it too
    tmpl = *files.chat_template_jinja;
    tmpl_src = files.chat_template_jinja_source;
  }
  if (!tmpl) {
    if (!files.config_json.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(cfg_src,
                       ": not found, and task.prompt_format=chat reads the model's chat template "
                       "from it; ",
                       kCustomHint));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(cfg_src, ": chat_template: missing (a base model without a chat template?); ",
                     kCustomHint));
  }
  return RecognizeChatTemplate(*tmpl, bos, tmpl_src);
}

std::string RenderChat(const ChatTemplate& t, absl::string_view system, absl::string_view user) {
  std::string out;
  switch (t.family) {
    case ChatFamily::kChatMl: {
      const absl::string_view sys = system.empty() ? absl::string_view(t.default_system) : system;
      if (!sys.empty()) absl::StrAppend(&out, "<|im_start|>system\n", sys, "<|im_end|>\n");
      absl::StrAppend(&out, "<|im_start|>user\n", user, "<|im_end|>\n<|im_start|>assistant\n");
      break;
    }
    case ChatFamily::kLlama3: {
      out = t.bos;
      if (!t.system_preamble.empty() || !system.empty()) {
        absl::StrAppend(&out, "<|start_header_id|>system<|end_header_id|>\n\n", t.system_preamble,
                        PythonStrip(system), "<|eot_id|>");
      }
      absl::StrAppend(&out, "<|start_header_id|>user<|end_header_id|>\n\n", PythonStrip(user),
                      "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    }
  }
  return out;
}

absl::Status CheckPromptTemplate(absl::string_view prompt_template, absl::string_view field) {
  if (!absl::StrContains(prompt_template, "{prompt}")) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " = ",
                     json(std::string(prompt_template.substr(0, 80)))
                         .dump(-1, ' ', false, json::error_handler_t::replace),
                     prompt_template.size() > 80 ? "..." : "",
                     " has no {prompt} placeholder (prompt_format custom renders each prompt "
                     "through it; {system} is replaced by task.system_prompt)"));
  }
  return absl::OkStatus();
}

std::string RenderPromptTemplate(absl::string_view prompt_template, absl::string_view system,
                                 absl::string_view prompt) {
  return absl::StrReplaceAll(prompt_template, {{"{system}", system}, {"{prompt}", prompt}});
}

}  // namespace rhythm::common

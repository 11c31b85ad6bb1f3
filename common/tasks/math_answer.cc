#include "common/tasks/math_answer.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/tasks/task_util.h"

namespace rhythm::common::tasks {
namespace {

// Normalisation is skipped for longer answers (they are compared as trimmed strings): it keeps
// the unwrapping loop, which can be quadratic on adversarial nesting, cheap.
constexpr size_t kMaxNormalizedLength = 4096;
constexpr size_t kMaxNumberLength = 200;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLetter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// For each '{' that opens a group, the position of its '}' (npos if unclosed). A backslash
// escapes the next character, so "\{" and "\}" are literal.
std::vector<size_t> MatchBraces(absl::string_view s) {
  std::vector<size_t> close(s.size(), absl::string_view::npos);
  std::vector<size_t> open;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '{') {
      open.push_back(i);
    } else if (s[i] == '}' && !open.empty()) {
      close[open.back()] = i;
      open.pop_back();
    }
  }
  return close;
}

// Removes `command` (e.g. "\left") where it is not the prefix of a longer command name.
std::string RemoveCommand(absl::string_view s, absl::string_view command) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, command.size()) == command &&
        (i + command.size() == s.size() || !IsLetter(s[i + command.size()]))) {
      i += command.size();
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

bool StartsWith(absl::string_view s, absl::string_view p) { return s.substr(0, p.size()) == p; }
bool EndsWith(absl::string_view s, absl::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// One unwrapping step of the whole answer; false if none applies.
bool UnwrapOnce(absl::string_view& s) {
  if (s.size() >= 4 && StartsWith(s, "$$") && EndsWith(s, "$$")) {
    s = s.substr(2, s.size() - 4);
    return true;
  }
  if (s.size() >= 2 && s.front() == '$' && s.back() == '$') {
    s = s.substr(1, s.size() - 2);
    return true;
  }
  if (s.size() >= 4 && (StartsWith(s, "\\(") && EndsWith(s, "\\)"))) {
    s = s.substr(2, s.size() - 4);
    return true;
  }
  if (s.size() >= 4 && (StartsWith(s, "\\[") && EndsWith(s, "\\]"))) {
    s = s.substr(2, s.size() - 4);
    return true;
  }
  static constexpr absl::string_view kBoxed = "\\boxed{";
  if (StartsWith(s, kBoxed) && s.back() == '}') {
    const std::vector<size_t> close = MatchBraces(s);
    if (close[kBoxed.size() - 1] == s.size() - 1) {
      s = s.substr(kBoxed.size(), s.size() - kBoxed.size() - 1);
      return true;
    }
  }
  if (!s.empty() && s.back() == '.') {
    s.remove_suffix(1);
    return true;
  }
  return false;
}

// Text commands whose argument is either a unit or plain text.
bool TextCommandAt(absl::string_view s, size_t i, size_t* length) {
  for (absl::string_view cmd : {"\\text{", "\\textbf{", "\\textrm{", "\\mathrm{", "\\mbox{"}) {
    if (s.substr(i, cmd.size()) == cmd) {
      *length = cmd.size();
      return true;
    }
  }
  return false;
}

// Removes \text{...}-like groups entirely (keep_contents == false) or only their command and
// braces (keep_contents == true). Linear.
std::string StripTextCommands(absl::string_view s, bool keep_contents) {
  std::string out;
  out.reserve(s.size());
  std::vector<bool> drop_close;  // per open brace: whether its '}' is dropped
  size_t i = 0;
  while (i < s.size()) {
    size_t len = 0;
    if (TextCommandAt(s, i, &len)) {
      if (keep_contents) {
        drop_close.push_back(true);
        i += len;
      } else {
        // Skip to the matching brace (or the end).
        int depth = 1;
        i += len;
        while (i < s.size() && depth > 0) {
          if (s[i] == '\\') {
            i += 2;
            continue;
          }
          if (s[i] == '{') ++depth;
          if (s[i] == '}') --depth;
          ++i;
        }
      }
      continue;
    }
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size()) {
      out.push_back(c);
      out.push_back(s[i + 1]);
      i += 2;
      continue;
    }
    if (c == '{') drop_close.push_back(false);
    if (c == '}' && !drop_close.empty()) {
      const bool drop = drop_close.back();
      drop_close.pop_back();
      if (drop) {
        ++i;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

std::string StripLeadingZeros(absl::string_view digits) {
  size_t k = 0;
  while (k + 1 < digits.size() && digits[k] == '0') ++k;
  return std::string(digits.substr(k));
}

// An unsigned decimal ("42", "1,000", "3.25", ".5") as num/den digit strings (den a power of
// ten). nullopt if `s` is not exactly one.
std::optional<std::pair<std::string, std::string>> ParseDecimal(absl::string_view s) {
  const size_t dot = s.find('.');
  absl::string_view int_part = s.substr(0, dot);
  absl::string_view frac_part = dot == absl::string_view::npos ? "" : s.substr(dot + 1);
  if (dot != absl::string_view::npos && frac_part.empty()) return std::nullopt;
  if (int_part.empty() && frac_part.empty()) return std::nullopt;
  if (!std::all_of(frac_part.begin(), frac_part.end(), IsDigit)) return std::nullopt;
  std::string digits;
  if (int_part.find(',') != absl::string_view::npos) {
    // Thousands separators: 1-3 digits, then groups of ",ddd".
    const size_t first = int_part.find(',');
    if (first == 0 || first > 3) return std::nullopt;
    for (size_t k = 0; k < int_part.size(); ++k) {
      const bool comma_slot = k >= first && (k - first) % 4 == 0;
      if (comma_slot ? int_part[k] != ',' : !IsDigit(int_part[k])) return std::nullopt;
      if (!comma_slot) digits.push_back(int_part[k]);
    }
    if ((int_part.size() - first) % 4 != 0) return std::nullopt;
  } else {
    if (!std::all_of(int_part.begin(), int_part.end(), IsDigit)) return std::nullopt;
    digits = std::string(int_part);
  }
  digits.append(frac_part.data(), frac_part.size());
  std::string den = "1" + std::string(frac_part.size(), '0');
  return std::make_pair(StripLeadingZeros(digits), den);
}

// A decimal with an optional sign.
std::optional<std::pair<bool, std::pair<std::string, std::string>>> ParseSignedDecimal(
    absl::string_view s) {
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  auto d = ParseDecimal(s);
  if (!d.has_value()) return std::nullopt;
  return std::make_pair(negative, *d);
}

// Schoolbook product of two decimal digit strings.
std::string MultiplyDigits(absl::string_view a, absl::string_view b) {
  std::vector<int> acc(a.size() + b.size(), 0);
  for (size_t i = a.size(); i-- > 0;) {
    for (size_t j = b.size(); j-- > 0;) {
      acc[i + j + 1] += (a[i] - '0') * (b[j] - '0');
    }
  }
  for (size_t k = acc.size(); k-- > 1;) {
    acc[k - 1] += acc[k] / 10;
    acc[k] %= 10;
  }
  std::string out;
  for (int d : acc) out.push_back(static_cast<char>('0' + d));
  return StripLeadingZeros(out);
}

// A \frac argument: "{...}" or one character. Advances `s`.
std::optional<absl::string_view> FracArgument(absl::string_view& s) {
  if (s.empty()) return std::nullopt;
  if (s[0] != '{') {
    const absl::string_view arg = s.substr(0, 1);
    s.remove_prefix(1);
    return arg;
  }
  const size_t close = s.find('}');
  if (close == absl::string_view::npos) return std::nullopt;
  const absl::string_view arg = s.substr(1, close - 1);
  s.remove_prefix(close + 1);
  return arg;
}

bool IsZero(absl::string_view digits) { return digits == "0"; }

}  // namespace

std::optional<std::string> ExtractFinalAnswer(absl::string_view completion,
                                              absl::string_view marker) {
  static constexpr absl::string_view kBoxed = "\\boxed{";
  size_t last = completion.rfind(kBoxed);
  if (last != absl::string_view::npos) {
    const std::vector<size_t> close = MatchBraces(completion);
    while (true) {
      const size_t brace = last + kBoxed.size() - 1;
      if (close[brace] != absl::string_view::npos) {
        return std::string(
            internal::TrimAsciiWhitespace(completion.substr(brace + 1, close[brace] - brace - 1)));
      }
      if (last == 0) break;
      last = completion.rfind(kBoxed, last - 1);
      if (last == absl::string_view::npos) break;
    }
  }
  if (!marker.empty()) {
    const size_t at = completion.rfind(marker);
    if (at != absl::string_view::npos) {
      return std::string(internal::TrimAsciiWhitespace(
          internal::FirstLine(completion.substr(at + marker.size()))));
    }
  }
  return std::nullopt;
}

std::string NormalizeMathAnswer(absl::string_view answer) {
  answer = internal::TrimAsciiWhitespace(answer);
  if (answer.size() > kMaxNormalizedLength) return std::string(answer);
  std::string s = absl::StrReplaceAll(answer, {{"\xE2\x88\x92", "-"},
                                               {"\\ ", ""},
                                               {"\\!", ""},
                                               {"\\,", ""},
                                               {"\\;", ""},
                                               {"\\:", ""},
                                               {"\\$", ""},
                                               {"\\%", ""},
                                               {"%", ""},
                                               {"\\dfrac", "\\frac"},
                                               {"\\tfrac", "\\frac"},
                                               {"{,}", ","},
                                               {"^{\\circ}", ""},
                                               {"^\\circ", ""}});
  s = RemoveCommand(s, "\\left");
  s = RemoveCommand(s, "\\right");
  s.erase(std::remove_if(s.begin(), s.end(),
                         [](char c) {
                           return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
                                  c == '\f';
                         }),
          s.end());
  absl::string_view view = s;
  while (UnwrapOnce(view)) {
  }
  if (view.size() >= 2 && IsLetter(view[0]) && view[1] == '=') view.remove_prefix(2);
  return std::string(view);
}

std::optional<MathNumber> ParseMathNumber(absl::string_view s) {
  if (s.empty() || s.size() > kMaxNumberLength) return std::nullopt;
  bool negative = false;
  if (s[0] == '-' || s[0] == '+') {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  std::pair<bool, std::pair<std::string, std::string>> a, b;
  static constexpr absl::string_view kFrac = "\\frac";
  if (StartsWith(s, kFrac)) {
    s.remove_prefix(kFrac.size());
    const std::optional<absl::string_view> x = FracArgument(s);
    if (!x.has_value()) return std::nullopt;
    const std::optional<absl::string_view> y = FracArgument(s);
    if (!y.has_value() || !s.empty()) return std::nullopt;
    auto pa = ParseSignedDecimal(*x);
    auto pb = ParseSignedDecimal(*y);
    if (!pa || !pb) return std::nullopt;
    a = *pa;
    b = *pb;
  } else {
    const size_t slash = s.find('/');
    auto pa = ParseDecimal(s.substr(0, slash));
    if (!pa) return std::nullopt;
    a = {false, *pa};
    if (slash == absl::string_view::npos) {
      b = {false, {"1", "1"}};
    } else {
      auto pb = ParseDecimal(s.substr(slash + 1));
      if (!pb) return std::nullopt;
      b = {false, *pb};
    }
  }
  // (an/ad) / (bn/bd) = (an*bd) / (ad*bn)
  if (IsZero(b.second.first)) return std::nullopt;
  MathNumber n;
  n.num = MultiplyDigits(a.second.first, b.second.second);
  n.den = MultiplyDigits(a.second.second, b.second.first);
  n.negative = (negative != a.first) != b.first;
  if (IsZero(n.num)) n.negative = false;
  return n;
}

bool MathAnswersEqual(absl::string_view expected, absl::string_view got) {
  const std::string ne = NormalizeMathAnswer(expected);
  const std::string ng = NormalizeMathAnswer(got);
  const auto value = [](const std::string& s) -> std::optional<MathNumber> {
    if (s.size() > kMaxNormalizedLength) return std::nullopt;
    std::optional<MathNumber> v = ParseMathNumber(StripTextCommands(s, false));
    if (!v.has_value()) v = ParseMathNumber(StripTextCommands(s, true));
    return v;
  };
  const std::optional<MathNumber> ve = value(ne);
  const std::optional<MathNumber> vg = value(ng);
  if (ve.has_value() && vg.has_value()) {
    return ve->negative == vg->negative &&
           MultiplyDigits(ve->num, vg->den) == MultiplyDigits(vg->num, ve->den);
  }
  if (ve.has_value() != vg.has_value()) return false;
  if (ne.size() > kMaxNormalizedLength || ng.size() > kMaxNormalizedLength) return ne == ng;
  return StripTextCommands(ne, true) == StripTextCommands(ng, true);
}

v1::VerifierResult VerifyMath(absl::string_view answer, absl::string_view completion,
                              absl::string_view marker) {
  if (internal::TrimAsciiWhitespace(answer).empty()) {
    return internal::MakeResult(0.0, false, false, "", "malformed answer: empty");
  }
  const std::optional<std::string> got = ExtractFinalAnswer(completion, marker);
  if (got.has_value() && got->empty()) {
    return internal::MakeResult(0.0, false, false, "", "empty final answer");
  }
  if (!got.has_value()) {
    return internal::MakeResult(
        0.0, false, false, "",
        marker.empty() ? std::string("no final answer: no \\boxed{}")
                       : absl::StrCat("no final answer: no \\boxed{} and no \"", marker, "\""));
  }
  if (MathAnswersEqual(answer, *got)) return internal::MakeResult(1.0, true, true, *got, "");
  return internal::MakeResult(0.0, false, true, *got,
                              absl::StrCat("expected ", internal::SanitizeUtf8(answer, 80)));
}

}  // namespace rhythm::common::tasks

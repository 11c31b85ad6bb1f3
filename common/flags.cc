#include "common/flags.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace rhythm::common {

FlagParser::FlagParser(std::string usage_line, std::string description)
    : usage_line_(std::move(usage_line)), description_(std::move(description)) {}

void FlagParser::AddString(const std::string& name, const std::string& value_name,
                           const std::string& help, std::string* out) {
  flags_.push_back({name, value_name, help, Kind::kString, out,
                    out->empty() ? "" : absl::StrCat(" (default: ", *out, ")")});
}

void FlagParser::AddBool(const std::string& name, const std::string& help, bool* out) {
  flags_.push_back({name, "", help, Kind::kBool, out, ""});
}

void FlagParser::AddRepeated(const std::string& name, const std::string& value_name,
                             const std::string& help, std::vector<std::string>* out) {
  flags_.push_back({name, value_name, help, Kind::kRepeated, out, " (repeatable)"});
}

void FlagParser::AddSection(const std::string& title, const std::string& body) {
  sections_.emplace_back(title, body);
}

const FlagParser::Flag* FlagParser::Find(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::Status FlagParser::Parse(int argc, const char* const* argv, int first,
                               std::vector<std::string>* positionals) {
  bool flags_done = false;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (flags_done || !absl::StartsWith(arg, "--") || arg == "-") {
      positionals->push_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* flag = Find(name);
    if (flag == nullptr) {
      std::vector<std::string> names;
      for (const Flag& f : flags_) names.push_back(f.name);
      std::string hint = ClosestMatch(name, names);
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag '--", name, "'",
                       hint.empty() ? "" : absl::StrCat(" (did you mean '--", hint, "'?)"),
                       "; see --help"));
    }
    if (flag->kind == Kind::kBool) {
      bool* out = static_cast<bool*>(flag->out);
      if (!has_value || value == "true" || value == "1") {
        *out = true;
      } else if (value == "false" || value == "0") {
        *out = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("flag '--", name, "' takes true or false, got '", value, "'"));
      }
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag '--", name, "' needs a value (", flag->value_name, ")"));
      }
      value = argv[++i];
    }
    if (flag->kind == Kind::kString) {
      *static_cast<std::string*>(flag->out) = value;
    } else {
      static_cast<std::vector<std::string>*>(flag->out)->push_back(value);
    }
  }
  return absl::OkStatus();
}

std::string FlagParser::Usage() const {
  std::string out = absl::StrCat("Usage: ", usage_line_, "\n\n", description_, "\n");
  for (const auto& [title, body] : sections_) absl::StrAppend(&out, "\n", title, ":\n", body);
  absl::StrAppend(&out, "\nFlags:\n");
  for (const Flag& f : flags_) {
    std::string left = absl::StrCat("  --", f.name);
    if (f.kind != Kind::kBool) absl::StrAppend(&left, " ", f.value_name);
    if (left.size() < 26) left.resize(26, ' ');
    else absl::StrAppend(&left, "\n", std::string(26, ' '));
    absl::StrAppend(&out, left, f.help, f.default_text, "\n");
  }
  return out;
}

int EditDistance(const std::string& a, const std::string& b) {
  std::vector<int> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string ClosestMatch(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  int best_distance = std::max<int>(1, static_cast<int>(word.size()) / 3) + 1;
  for (const std::string& c : candidates) {
    const int d = EditDistance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

}  // namespace rhythm::common

// FlagParser: the small command-line parser every main.cc uses.
//
// Flags are `--name=value` or `--name value`; booleans are `--name`; repeatable flags collect
// every occurrence in order (`--set a=1 --set b=2`). `--` ends flags. Arguments that are not
// flags are returned as positionals (subcommands, files). An unknown flag or a missing value is
// an InvalidArgument error naming the flag (with a suggestion when one is close). Usage() is the
// complete `--help` text, generated from the registered flags so it cannot drift from them.
// Not thread-safe; used once at start-up.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace rhythm::common {

class FlagParser {
 public:
  // `usage_line` is e.g. "rhythm-learner [flags]"; `description` is a paragraph shown under it.
  FlagParser(std::string usage_line, std::string description);

  // Registers flags. Pointers must outlive Parse(); their current values are the defaults shown
  // in Usage().
  void AddString(const std::string& name, const std::string& value_name, const std::string& help,
                 std::string* out);
  void AddBool(const std::string& name, const std::string& help, bool* out);
  void AddRepeated(const std::string& name, const std::string& value_name,
                   const std::string& help, std::vector<std::string>* out);
  // Adds a free-form section (e.g. the list of subcommands) to Usage().
  void AddSection(const std::string& title, const std::string& body);

  // Parses argv[first..argc). Non-flag arguments are appended to `positionals`.
  absl::Status Parse(int argc, const char* const* argv, int first,
                     std::vector<std::string>* positionals);

  std::string Usage() const;

 private:
  enum class Kind { kString, kBool, kRepeated };
  struct Flag {
    std::string name;
    std::string value_name;
    std::string help;
    Kind kind;
    void* out;
    std::string default_text;
  };
  const Flag* Find(const std::string& name) const;

  std::string usage_line_;
  std::string description_;
  std::vector<Flag> flags_;
  std::vector<std::pair<std::string, std::string>> sections_;
};

// Levenshtein distance, for "did you mean" suggestions (flags and config keys).
int EditDistance(const std::string& a, const std::string& b);

// Returns the candidate closest to `word` if it is close enough to be a plausible typo
// (distance <= max(1, |word| / 3)), else "".
std::string ClosestMatch(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace rhythm::common

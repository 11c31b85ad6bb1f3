// Running rhythm's real binaries from integration tests: spawn (posix_spawn, never fork after
// threads exist), capture stdout and stderr, wait with a deadline.
#pragma once

#include <string>
#include <vector>

namespace rhythm::testing {

struct ProcessResult {
  // Exit status, or 128 + signal when killed by a signal, or -1 when it could not start.
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs argv[0] (a path) with the given arguments and waits for it; kills it after
// `timeout_seconds`.
ProcessResult RunProcess(const std::vector<std::string>& argv, double timeout_seconds = 60);

// Path of a rhythm binary in the build tree ($RHYTHM_BIN_DIR, set by CTest).
std::string BinaryPath(const std::string& name);

// Number of non-empty lines in `text`.
int CountLines(const std::string& text);

}  // namespace rhythm::testing

// Integration-test helpers: where the built binaries are, and line counting. Processes are
// run with common/subprocess.h.
#pragma once

#include <string>

#include "common/subprocess.h"

namespace rhythm::testing {

using common::ChildProcess;
using common::ProcessResult;
using common::RunProcess;

// Path of a rhythm binary in the build tree ($RHYTHM_BIN_DIR, set by CTest).
std::string BinaryPath(const std::string& name);

// Number of non-empty lines in `text`.
int CountLines(const std::string& text);

}  // namespace rhythm::testing

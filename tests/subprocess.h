// Integration-test helpers: where the built binaries are, and line counting. Processes are
// run with common/subprocess.h.
#pragma once

#include <string>
#include <vector>

#include "common/subprocess.h"

namespace rhythm::testing {

using common::ChildProcess;
using common::ProcessResult;
using common::RunProcess;

// Path of a rhythm binary in the build tree ($RHYTHM_BIN_DIR, set by CTest).
std::string BinaryPath(const std::string& name);

// Number of non-empty lines in `text`.
int CountLines(const std::string& text);

// A loopback TCP port that was free a moment ago (bound, read back, released).
int FreePort();

// Debian's Chromium, which the report tests drive headless (they skip where it is missing).
inline constexpr char kChromium[] = "/usr/bin/chromium";

// Runs headless Chromium with `extra` arguments (e.g. {"--dump-dom", url}), a fresh profile
// and no network chatter (the flags this machine needs), for up to 120 s.
ProcessResult RunChromium(const std::vector<std::string>& extra);

}  // namespace rhythm::testing

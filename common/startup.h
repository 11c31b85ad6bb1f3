// Start-up shared by every rhythm binary: the common flags (--config FILE, --set KEY=VALUE
// (repeatable), --print-config, --help, --version), and loading the resolved configuration.
//
// A main.cc builds a FlagParser, may add its own flags, and calls ParseStartup. The result says
// whether to exit now (help, version, print-config, or an error, which is printed as ONE line
// "<program>: <message>" on stderr with exit code 2) or to run with the returned config.
// Not thread-safe; start-up only.
#pragma once

#include <string>
#include <vector>

#include "common/flags.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common {

struct CommonFlags {
  std::string config_path;
  std::vector<std::string> overrides;
  bool print_config = false;
  bool help = false;
  bool version = false;
};

// Adds the common flags to `parser`.
void RegisterCommonFlags(FlagParser& parser, CommonFlags& flags);

struct Startup {
  // True when main should return `exit_code` now.
  bool exit = false;
  int exit_code = 0;
  v1::RhythmConfig config;
  std::vector<std::string> positionals;
};

// When started by rhythm (common/subprocess.h sets RHYTHM_PARENT_PID): asks the kernel to send
// this process SIGTERM when its parent dies, so a killed `rhythm train` or test leaves no
// learner or actor behind. Does nothing otherwise. ParseStartup calls it.
void StopWithParent();

// Parses argv[first..) with `parser` (which must have the common flags registered into
// `flags`), handles --help / --version / --print-config, and loads the configuration.
// `max_positionals` bounds the non-flag arguments accepted.
Startup ParseStartup(const std::string& program, FlagParser& parser, CommonFlags& flags,
                     int argc, const char* const* argv, int first, size_t max_positionals);

}  // namespace rhythm::common

#include "common/startup.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>

#include "common/config.h"
#include "common/version.h"

namespace rhythm::common {

void RegisterCommonFlags(FlagParser& parser, CommonFlags& flags) {
  parser.AddString("config", "FILE",
                   "YAML configuration (schema and defaults: proto/rhythm/v1/config.proto)",
                   &flags.config_path);
  parser.AddRepeated("set", "KEY=VALUE",
                     "override one config key after the file, e.g. --set trainer.lr=1e-6",
                     &flags.overrides);
  parser.AddBool("print-config", "print the resolved configuration as YAML and exit",
                 &flags.print_config);
  parser.AddBool("help", "show this help and exit", &flags.help);
  parser.AddBool("version", "print the version and exit", &flags.version);
}

void StopWithParent() {
  const char* parent = std::getenv("RHYTHM_PARENT_PID");
  if (parent == nullptr) return;
  const std::string ppid = std::to_string(getppid());
  if (ppid == parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (std::to_string(getppid()) != parent) raise(SIGTERM);  // it died before prctl
  } else if (ppid == "1") {
    raise(SIGTERM);  // orphaned already
  }
  // Otherwise the variable came through another process (a shell): not our parent's.
}

Startup ParseStartup(const std::string& program, FlagParser& parser, CommonFlags& flags, int argc,
                     const char* const* argv, int first, size_t max_positionals) {
  Startup out;
  StopWithParent();
  auto fail = [&](absl::string_view message) {
    std::cerr << program << ": " << message << "\n";
    out.exit = true;
    out.exit_code = 2;
    return out;
  };
  if (absl::Status s = parser.Parse(argc, argv, first, &out.positionals); !s.ok()) {
    return fail(s.message());
  }
  if (flags.help) {
    std::cout << parser.Usage();
    out.exit = true;
    return out;
  }
  if (flags.version) {
    std::cout << program << " " << RhythmVersion() << "\n";
    out.exit = true;
    return out;
  }
  if (out.positionals.size() > max_positionals) {
    return fail("unexpected argument '" + out.positionals[max_positionals] + "'; see --help");
  }
  absl::StatusOr<v1::RhythmConfig> config = LoadConfig(flags.config_path, flags.overrides);
  if (!config.ok()) return fail(config.status().message());
  out.config = *std::move(config);
  if (flags.print_config) {
    std::cout << ConfigToYaml(out.config);
    out.exit = true;
  }
  return out;
}

}  // namespace rhythm::common

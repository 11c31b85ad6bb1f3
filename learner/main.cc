// rhythm-learner: the process every actor talks to. main.cc only reads flags and wires objects.
//
// The gRPC services, trainer and checkpointer land with the Learner issue; today the binary
// loads and validates its configuration, sets up the runtime and says what is missing.
#include "common/config.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/runtime.h"
#include "common/startup.h"

int main(int argc, char** argv) {
  using namespace rhythm::common;
  CommonFlags flags;
  FlagParser parser(
      "rhythm-learner [--config FILE] [--set KEY=VALUE ...]",
      "The rhythm learner: leases prompts to actors, ingests their rollouts exactly once,\n"
      "shapes token advantages from attention summaries, trains the policy and publishes\n"
      "new weights. Exits 2 on a bad flag or configuration, with one line naming it.");
  RegisterCommonFlags(parser, flags);
  Startup start = ParseStartup("rhythm-learner", parser, flags, argc, argv, 1, 0);
  if (start.exit) return start.exit_code;

  InitRuntime(start.config.runtime());
  RHYTHM_LOG(Info) << "rhythm-learner configuration:\n" << ConfigToYaml(start.config);
  RHYTHM_LOG(Error) << "rhythm-learner: the learner service is not built yet (Learner issue); "
                       "the configuration above is valid";
  return 3;
}

// rhythm-actor: generates rollouts on an inference machine and streams them to the learner.
// main.cc only reads flags and wires objects.
//
// The rollout loop, tasks and learner client land with the Actor issue; today the binary loads
// and validates its configuration, sets up the runtime and says what is missing.
#include "common/config.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/runtime.h"
#include "common/startup.h"

int main(int argc, char** argv) {
  using namespace rhythm::common;
  CommonFlags flags;
  FlagParser parser(
      "rhythm-actor [--config FILE] [--set KEY=VALUE ...]",
      "A rhythm actor: leases prompts from the learner, generates G samples each with\n"
      "attention summaries computed inside the decode loop, verifies them and streams the\n"
      "rollouts to the learner. Run as many as you like. Exits 2 on a bad flag or\n"
      "configuration, with one line naming it.");
  RegisterCommonFlags(parser, flags);
  Startup start = ParseStartup("rhythm-actor", parser, flags, argc, argv, 1, 0);
  if (start.exit) return start.exit_code;

  InitRuntime(start.config.runtime());
  RHYTHM_LOG(Info) << "rhythm-actor configuration:\n" << ConfigToYaml(start.config);
  RHYTHM_LOG(Error) << "rhythm-actor: the actor service is not built yet (Actor issue); "
                       "the configuration above is valid";
  return 3;
}

// rhythm-learner: the process every actor talks to. main.cc only reads flags and wires objects.
#include <csignal>
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "common/config.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/metrics_server.h"
#include "common/security/credentials.h"
#include "common/model/load_model.h"
#include "common/runtime.h"
#include "common/startup.h"
#include "common/tasks/prompt_format.h"
#include "common/tasks/task.h"
#include "common/tokenizer/tokenizer.h"
#include "learner/learner_server.h"
#include "learner/rank_follower.h"
#include "learner/rank_group.h"
#include "prometheus/registry.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

int Fail(const std::string& message, int code = 1) {
  std::cerr << "rhythm-learner: " << message << "\n";
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  rhythm::common::KeepFreedMemoryInTheHeap();
  using namespace rhythm;
  common::CommonFlags flags;
  std::string resume_dir, dump_dir;
  bool check_config = false;
  common::FlagParser parser(
      "rhythm-learner [--config FILE] [--set KEY=VALUE ...] [--resume RUN_DIR]",
      "The rhythm learner: leases prompts to actors, ingests their rollouts exactly once,\n"
      "shapes token advantages from attention summaries, trains the policy and publishes\n"
      "new weights. Prints 'rhythm-learner: listening on PORT metrics PORT' once serving.\n"
      "SIGTERM or Ctrl-C writes a final checkpoint and exits 0. Exits 2 on a bad flag or\n"
      "configuration, with one line naming it.");
  common::RegisterCommonFlags(parser, flags);
  parser.AddString("resume", "RUN_DIR",
                   "continue the run in RUN_DIR (= learner.run_dir) from its last checkpoint "
                   "and rollout log",
                   &resume_dir);
  parser.AddString("dump-rollouts", "DIR",
                   "also write every trained batch to DIR in rhythm shape's JSONL format",
                   &dump_dir);
  bool rank_from_hostname = false;
  parser.AddBool("rank-from-hostname",
                 "set learner.rank from the host name's trailing -N (a Kubernetes "
                 "StatefulSet's pod ordinal: learner-2 is rank 2)",
                 &rank_from_hostname);
  parser.AddBool("check-config",
                 "validate the flags and configuration, resolve runtime.device against this "
                 "build, print one line and exit: 0 valid, 2 refused, 3 valid but needs the CUDA "
                 "image (no model loading, no network, the run directory untouched)",
                 &check_config);
  common::Startup start = common::ParseStartup("rhythm-learner", parser, flags, argc, argv, 1, 0);
  if (start.exit) return start.exit_code;
  v1::RhythmConfig config = start.config;
  if (!resume_dir.empty()) config.mutable_learner()->set_run_dir(resume_dir);

  if (check_config) {
    // What start-up refuses before loading a model: the task, then (last) the device.
    absl::StatusOr<std::unique_ptr<common::tasks::Task>> task =
        common::tasks::CreateTask(config.task(), config.runtime().seed());
    absl::Status valid = task.status();
    if (valid.ok()) valid = common::model::ModelDType(config.model().dtype()).status();
    return common::FinishConfigCheck(
        "rhythm-learner", config, valid,
        absl::StrCat("task ", v1::TaskKind_Name(config.task().kind()), ", model ",
                     config.model().path().empty() ? "tiny" : config.model().path()));
  }

  common::InitRuntime(config.runtime());
  RHYTHM_LOG(Info) << "rhythm-learner configuration:\n" << common::ConfigToYaml(config);
  // Capability, not policy: cuda:N whenever this LibTorch has CUDA and that GPU is visible.
  absl::StatusOr<c10::Device> device = common::ResolveDevice(config.runtime().device());
  if (!device.ok()) return Fail(std::string(device.status().message()), 2);
  absl::StatusOr<std::unique_ptr<common::tasks::Task>> task =
      common::tasks::CreateTask(config.task(), config.runtime().seed());
  if (!task.ok()) return Fail(std::string(task.status().message()), 2);
  for (const std::string& w : (*task)->warnings()) RHYTHM_LOG(Warning) << w;

  // model.dtype: the model computes in it; with bf16 the trainer steps fp32 masters.
  if (absl::Status d = common::model::ModelDType(config.model().dtype()).status(); !d.ok()) {
    return Fail(std::string(d.message()), 2);
  }
  absl::StatusOr<common::model::ModelAndTokenizer> loaded = common::model::LoadModelAndTokenizer(
      config.model().path(), config.model().tiny(), config.runtime().seed(), *device,
      config.model().dtype());
  if (!loaded.ok()) {
    // A model directory that cannot be read is a runtime error; a tiny shape that cannot be
    // built is the configuration's.
    return Fail(std::string(loaded.status().message()), config.model().path().empty() ? 2 : 1);
  }
  std::unique_ptr<common::Tokenizer> tokenizer = std::move(loaded->tokenizer);
  std::unique_ptr<common::model::Transformer> model = std::move(loaded->model);

  learner::LearnerServerOptions options;
  options.config = config;
  options.resume = !resume_dir.empty();
  options.dump_rollouts_dir = dump_dir;
  options.model = std::move(model);
  const common::Tokenizer* tok = tokenizer.get();
  absl::StatusOr<common::tasks::PromptFormatter> prompt_format =
      common::tasks::PromptFormatter::Create(config.task(), *tokenizer);
  if (!prompt_format.ok()) return Fail(std::string(prompt_format.status().message()), 2);
  RHYTHM_LOG(Info) << "rhythm-learner: prompts " << prompt_format->description();
  options.prompts = learner::TaskPromptSource(
      **task, *tokenizer, *prompt_format,
      options.model->config().max_position_embeddings - config.generation().max_new_tokens());
  options.write_tokenizer = [tok](const std::string& dir) { return tok->Save(dir); };
  options.registry = std::make_shared<prometheus::Registry>();
  options.task = task->get();  // learner.eval_every: the held-out split and verifier
  options.tokenizer = tok;

  std::unique_ptr<common::MetricsServer> metrics;
  if (!config.learner().metrics_address().empty()) {
    absl::StatusOr<std::string> token = common::security::MetricsToken(config.security());
    if (!token.ok()) return Fail(std::string(token.status().message()), 2);
    auto m = common::MetricsServer::Start(config.learner().metrics_address(), options.registry,
                                          *token);
    if (!m.ok()) return Fail(std::string(m.status().message()));
    metrics = *std::move(m);
  }
  // Data-parallel ranks (learner.world_size > 1, learner/rank_group.h): every rank joins the
  // group (and serves /metrics, for its probes); rank 0 goes on to be the learner, the others
  // only train (learner/rank_follower.h). Declared before the server, which holds a pointer to
  // it and stops the ranks on the way out.
  std::unique_ptr<learner::RankGroup> ranks;
  if (rank_from_hostname) {  // a property of the pod, not of the configuration: checked here
    absl::StatusOr<int> rank = learner::RankFromHostName();
    if (!rank.ok()) return Fail(std::string(rank.status().message()), 2);
    config.mutable_learner()->set_rank(*rank);
  }
  if (config.learner().world_size() > 1) {
    auto g = learner::RankGroup::Create(learner::RankGroup::Options::FromConfig(config));
    if (!g.ok()) {
      const bool bad = g.status().code() == absl::StatusCode::kInvalidArgument ||
                       g.status().code() == absl::StatusCode::kUnimplemented;
      return Fail(std::string(g.status().message()), bad ? 2 : 1);
    }
    ranks = *std::move(g);
    if (ranks->rank() > 0) {
      // Ctrl-C reaches every process of a terminal's group: rank 0 decides when the ranks
      // stop (after its final checkpoint, which needs them), or dies and they notice.
      std::signal(SIGINT, SIG_IGN);
      absl::Status s = learner::RunRankFollower(config, std::move(options.model), *ranks);
      if (!s.ok()) return Fail(s.ToString());
      return 0;
    }
    options.ranks = ranks.get();
  }
  auto server = learner::LearnerServer::Create(std::move(options));
  if (!server.ok()) return Fail(std::string(server.status().message()));
  if (absl::Status s = (*server)->Start(); !s.ok()) return Fail(std::string(s.message()));
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::cout << "rhythm-learner: listening on " << (*server)->port() << " metrics "
            << (metrics ? metrics->port() : 0) << std::endl;

  while (!g_stop && !(*server)->done()) absl::SleepFor(absl::Milliseconds(50));
  absl::Status s = (*server)->Shutdown();
  if (!s.ok()) return Fail(std::string(s.message()));
  if ((*server)->failed()) return Fail("stopped after an error; restart with --resume");
  RHYTHM_LOG(Info) << "rhythm-learner: stopped at version " << (*server)->version();
  return 0;
}

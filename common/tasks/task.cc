#include "common/tasks/task.h"

#include "absl/strings/str_cat.h"
#include "common/tasks/arithmetic.h"
#include "common/tasks/countdown.h"
#include "common/tasks/jsonl_task.h"

namespace rhythm::common::tasks {

const std::vector<std::string>& Task::warnings() const {
  static const std::vector<std::string>* const kNone = new std::vector<std::string>();
  return *kNone;
}

absl::StatusOr<std::unique_ptr<Task>> CreateTask(const v1::TaskConfig& config, uint64_t seed) {
  if (config.heldout_size() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("task.heldout_size must be >= 0, got ", config.heldout_size()));
  }
  const uint64_t heldout = static_cast<uint64_t>(config.heldout_size());
  if (config.seed() != 0) seed = config.seed();
  switch (config.kind()) {
    case v1::TASK_KIND_COUNTDOWN:
      return CreateCountdownTask(config.countdown(), heldout, seed);
    case v1::TASK_KIND_ARITHMETIC:
      return CreateArithmeticTask(config.arithmetic(), heldout, seed);
    case v1::TASK_KIND_JSONL:
      return CreateJsonlTask(config);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("task.kind ", v1::TaskKind_Name(config.kind()), " (", config.kind(),
                       ") is not a task; use countdown, arithmetic or jsonl"));
  }
}

}  // namespace rhythm::common::tasks

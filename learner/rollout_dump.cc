#include "learner/rollout_dump.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/rollout/rollout_jsonl.h"

namespace rhythm::learner {

absl::Status DumpBatch(const std::string& dir, const std::vector<Group>& batch, int64_t step) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = absl::StrFormat("%s/step-%08d.jsonl", dir, step);
  std::ofstream out(path);
  for (const Group& g : batch) {
    for (const v1::Rollout& r : g) out << common::rollout::ToRolloutLine(r) << "\n";
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write rollout dump ", path));
  return absl::OkStatus();
}

}  // namespace rhythm::learner

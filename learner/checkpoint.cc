#include "learner/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/model/hf_checkpoint.h"
#include "common/model/safetensors.h"
#include "common/status.h"

namespace rhythm::learner {
namespace fs = std::filesystem;
namespace {

absl::Status WriteFileSynced(const std::string& path, const std::string& data) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": cannot create: ", strerror(errno)));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      close(fd);
      return absl::InternalError(absl::StrCat(path, ": write failed: ", strerror(errno)));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = fsync(fd) == 0;
  close(fd);
  if (!synced) return absl::InternalError(absl::StrCat(path, ": fsync failed"));
  return absl::OkStatus();
}

void SyncDir(const fs::path& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

}  // namespace

absl::StatusOr<std::string> WriteCheckpoint(
    const std::string& run_dir, const common::model::Transformer& model,
    const CheckpointContents& contents,
    const std::function<absl::Status(const std::string&)>& write_tokenizer, int keep) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(root, ec);
  // Version and log position name the checkpoint: writing the same state twice (a final
  // checkpoint right after a periodic one) never deletes the directory LATEST points at.
  const std::string name =
      absl::StrFormat("ckpt-%08d-%012d", contents.state.version(), contents.state.log_seq());
  const fs::path tmp = root / (name + ".tmp");
  const fs::path final_dir = root / name;
  if (fs::exists(final_dir)) return final_dir.string();
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp.string(), ": ", ec.message()));
  common::model::ExportOptions eo;
  eo.write_extra_files = write_tokenizer;
  RHYTHM_RETURN_IF_ERROR(common::model::ExportHfModel(model, (tmp / "model").string(), eo));
  RHYTHM_RETURN_IF_ERROR(common::model::WriteSafetensors(
      (tmp / "optimizer.safetensors").string(), contents.optimizer));
  RHYTHM_RETURN_IF_ERROR(
      WriteFileSynced((tmp / "state.pb").string(), contents.state.SerializeAsString()));
  SyncDir(tmp);
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(final_dir.string(), ": ", ec.message()));
  SyncDir(root);
  RHYTHM_RETURN_IF_ERROR(WriteFileSynced((root / "LATEST.tmp").string(), name + "\n"));
  fs::rename(root / "LATEST.tmp", root / "LATEST", ec);
  if (ec) return absl::InternalError(absl::StrCat(root.string(), "/LATEST: ", ec.message()));
  SyncDir(root);
  // Keep the newest `keep` checkpoints.
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string n = entry.path().filename().string();
    if (n.rfind("ckpt-", 0) == 0 && n.find(".tmp") == std::string::npos) names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  for (size_t i = 0; i + keep < names.size(); ++i) fs::remove_all(root / names[i], ec);
  return final_dir.string();
}

absl::StatusOr<LoadedCheckpoint> LoadLatestCheckpoint(const std::string& run_dir,
                                                      at::ScalarType dtype, at::Device device) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::ifstream latest(root / "LATEST");
  if (!latest) {
    return absl::NotFoundError(absl::StrCat(root.string(), "/LATEST: no checkpoint to resume"));
  }
  std::string name;
  std::getline(latest, name);
  LoadedCheckpoint out;
  out.dir = (root / name).string();
  // LATEST exists, so anything missing now is damage, never "no checkpoint".
  auto damaged = [&](const absl::Status& s) {
    return absl::DataLossError(absl::StrCat("checkpoint ", out.dir, ": ", s.message()));
  };
  auto model = common::model::LoadHfModel(out.dir + "/model", dtype, device);
  if (!model.ok()) return damaged(model.status());
  out.model = *std::move(model);
  auto optimizer = common::model::ReadSafetensors(out.dir + "/optimizer.safetensors");
  if (!optimizer.ok()) return damaged(optimizer.status());
  out.contents.optimizer = *std::move(optimizer);
  const bool has_masters = std::any_of(
      out.contents.optimizer.begin(), out.contents.optimizer.end(),
      [](const auto& entry) { return absl::EndsWith(entry.first, kMasterSuffix); });
  if (dtype != at::kFloat && !has_masters) {
    // The masters of a run that now computes in bf16: the weights at full precision, not
    // their rounding.
    auto full = common::model::LoadHfModel(out.dir + "/model", at::kFloat);
    if (!full.ok()) return damaged(full.status());
    for (const auto& [param, t] : (*full)->NamedParameters()) {
      out.contents.optimizer[param + kMasterSuffix] = t.detach();
    }
  }
  std::ifstream state(out.dir + "/state.pb", std::ios::binary);
  std::stringstream bytes;
  bytes << state.rdbuf();
  if (!state || !out.contents.state.ParseFromString(bytes.str())) {
    return absl::DataLossError(absl::StrCat(out.dir, "/state.pb: unreadable"));
  }
  return out;
}

}  // namespace rhythm::learner

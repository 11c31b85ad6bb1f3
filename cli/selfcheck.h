// `rhythm selfcheck`: proves on this machine that every part of rhythm's stack works together
// in one process (LibTorch with a fast BLAS and explicit threads, protobuf, a real gRPC server
// and channel, a real Prometheus endpoint, the configuration), and reports each check.
#pragma once

#include <string>
#include <vector>

#include "rhythm/v1/config.pb.h"

namespace rhythm::cli {

struct CheckResult {
  enum class Outcome { kOk, kWarn, kFail };
  std::string name;
  Outcome outcome = Outcome::kOk;
  std::string detail;
};

// Runs every check. Never throws; a failing check reports kFail with the reason.
std::vector<CheckResult> RunSelfCheck(const v1::RhythmConfig& config);

}  // namespace rhythm::cli

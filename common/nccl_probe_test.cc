#include "common/nccl_probe.h"

#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

TEST(NcclProbe, ReportsVersionOrSkipsWithoutGpu) {
  absl::StatusOr<NcclInfo> info = ProbeNccl();
  if (!info.ok()) {
    EXPECT_EQ(info.status().code(), absl::StatusCode::kFailedPrecondition);
    GTEST_SKIP() << info.status().message();
  }
  EXPECT_GE(info->nccl_version, 20000);
  EXPECT_GE(info->cuda_devices, 1);
}

TEST(NcclProbe, BroadcastDeliversRootData) {
  absl::StatusOr<NcclInfo> info = ProbeNccl();
  if (!info.ok()) GTEST_SKIP() << info.status().message();
  absl::Status s = NcclBroadcastSelfTest(info->cuda_devices, 1 << 20);
  EXPECT_TRUE(s.ok()) << s;
}

}  // namespace
}  // namespace rhythm::common

#include "common/nccl_probe.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/cuda_status.h"

namespace rhythm::common {

absl::StatusOr<NcclInfo> ProbeNccl() {
  NcclInfo info;
  if (ncclGetVersion(&info.nccl_version) != ncclSuccess) {
    return absl::FailedPreconditionError("nccl: ncclGetVersion failed");
  }
  cudaError_t err = cudaGetDeviceCount(&info.cuda_devices);
  if (err != cudaSuccess) {
    return absl::FailedPreconditionError(
        absl::StrCat("nccl: no usable GPU: ", cudaGetErrorString(err)));
  }
  if (info.cuda_devices == 0) return absl::FailedPreconditionError("nccl: no CUDA devices");
  return info;
}

absl::Status NcclBroadcastSelfTest(int ranks, int64_t count) {
  std::vector<ncclComm_t> comms(ranks);
  std::vector<int> devices(ranks);
  for (int i = 0; i < ranks; ++i) devices[i] = i;
  RHYTHM_NCCL_CHECK(ncclCommInitAll(comms.data(), ranks, devices.data()));
  std::vector<float*> buffers(ranks, nullptr);
  std::vector<cudaStream_t> streams(ranks);
  std::vector<float> host(count);
  for (int64_t j = 0; j < count; ++j) host[j] = static_cast<float>(j % 977) * 0.5f;
  for (int i = 0; i < ranks; ++i) {
    RHYTHM_CUDA_CHECK(cudaSetDevice(i));
    RHYTHM_CUDA_CHECK(cudaStreamCreate(&streams[i]));
    RHYTHM_CUDA_CHECK(cudaMalloc(&buffers[i], count * sizeof(float)));
    RHYTHM_CUDA_CHECK(cudaMemset(buffers[i], 0, count * sizeof(float)));
  }
  RHYTHM_CUDA_CHECK(cudaSetDevice(0));
  RHYTHM_CUDA_CHECK(
      cudaMemcpy(buffers[0], host.data(), count * sizeof(float), cudaMemcpyHostToDevice));
  RHYTHM_NCCL_CHECK(ncclGroupStart());
  for (int i = 0; i < ranks; ++i) {
    RHYTHM_NCCL_CHECK(ncclBroadcast(buffers[i], buffers[i], count, ncclFloat, 0, comms[i],
                                    streams[i]));
  }
  RHYTHM_NCCL_CHECK(ncclGroupEnd());
  absl::Status result = absl::OkStatus();
  std::vector<float> back(count);
  for (int i = 0; i < ranks; ++i) {
    RHYTHM_CUDA_CHECK(cudaSetDevice(i));
    RHYTHM_CUDA_CHECK(cudaStreamSynchronize(streams[i]));
    RHYTHM_CUDA_CHECK(
        cudaMemcpy(back.data(), buffers[i], count * sizeof(float), cudaMemcpyDeviceToHost));
    if (back != host && result.ok()) {
      result = absl::DataLossError(absl::StrCat("nccl: rank ", i, " received wrong data"));
    }
    cudaFree(buffers[i]);
    cudaStreamDestroy(streams[i]);
    ncclCommDestroy(comms[i]);
  }
  return result;
}

}  // namespace rhythm::common

#include "common/weights/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/cuda_status.h"
#include "common/nccl_probe.h"
#include "common/status.h"

namespace rhythm::common::weights {
namespace {

// Polls the communicator until its pending work is queued (async error ncclSuccess) and then
// `done` returns true, or it reports an error, or `deadline` passes. Does not abort: the caller
// owns the communicator and aborts it on failure.
absl::Status AwaitNccl(ncclComm_t comm, absl::Time deadline, const std::function<bool()>& done,
                       const char* what) {
  while (true) {
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &async) != ncclSuccess ||
        (async != ncclSuccess && async != ncclInProgress)) {
      return absl::UnavailableError(
          absl::StrCat("nccl: ", what, " failed: ", ncclGetErrorString(async)));
    }
    if (async == ncclSuccess && done()) return absl::OkStatus();
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("nccl: ", what, " timed out"));
    }
    absl::SleepFor(absl::Microseconds(200));
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, int rank, int world, absl::Duration timeout)
      : comm_(comm), device_(device), rank_(rank), world_(world), timeout_(timeout) {}

  // Teardown aborts rather than destroys: ncclCommDestroy/Finalize synchronise with the other
  // ranks, which may already be gone or re-forming; abort is local and never blocks.
  ~NcclCommunicator() override {
    Abort();
    cudaSetDevice(device_);
    if (buffer_ != nullptr) cudaFree(buffer_);
    if (event_ != nullptr) cudaEventDestroy(event_);
    for (int b = 0; b < 2; ++b) {
      if (pinned_[b] != nullptr) cudaFreeHost(pinned_[b]);
      if (staged_[b] != nullptr) cudaEventDestroy(staged_[b]);
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Broadcast(void* data, size_t size) override {
    if (comm_ == nullptr) return absl::UnavailableError("nccl: the communicator was aborted");
    absl::Status s = BroadcastImpl(data, size);
    if (!s.ok()) Abort();
    return s;
  }
  void Abort() override {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

 private:
  absl::Status BroadcastImpl(void* data, size_t size) {
    RHYTHM_CUDA_CHECK(cudaSetDevice(device_));
    if (stream_ == nullptr) {
      RHYTHM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      RHYTHM_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    }
    if (size > capacity_) {
      if (buffer_ != nullptr) RHYTHM_CUDA_CHECK(cudaFree(buffer_));
      buffer_ = nullptr;
      RHYTHM_CUDA_CHECK(cudaMalloc(&buffer_, size));
      capacity_ = size;
    }
    if (rank_ == 0) RHYTHM_RETURN_IF_ERROR(StageToDevice(static_cast<const char*>(data), size));
    const absl::Time deadline = absl::Now() + timeout_;
    RHYTHM_NCCL_CHECK(ncclBroadcast(buffer_, buffer_, size, ncclUint8, 0, comm_, stream_));
    // Non-blocking: the kernel may not be on the stream yet; wait until NCCL has queued it,
    // then record the event behind it and wait for that, all under one deadline.
    RHYTHM_RETURN_IF_ERROR(AwaitNccl(
        comm_, deadline, [] { return true; }, "broadcast enqueue"));
    RHYTHM_CUDA_CHECK(cudaEventRecord(event_, stream_));
    cudaEvent_t ev = event_;
    RHYTHM_RETURN_IF_ERROR(AwaitNccl(
        comm_, deadline, [ev] { return cudaEventQuery(ev) == cudaSuccess; }, "broadcast"));
    if (rank_ != 0) RHYTHM_RETURN_IF_ERROR(StageToHost(static_cast<char*>(data), size));
    return absl::OkStatus();
  }

  // Host <-> device through two pinned chunks of kStageBytes on stream_: the host copies one
  // chunk in (or out) while the other's DMA runs. Pageable memory would make the driver bounce
  // every byte through its own buffer, synchronously.
  static constexpr size_t kStageBytes = size_t{64} << 20;

  absl::Status EnsureStaging() {
    for (int b = 0; b < 2; ++b) {
      if (pinned_[b] == nullptr) {
        RHYTHM_CUDA_CHECK(cudaHostAlloc(&pinned_[b], kStageBytes, cudaHostAllocDefault));
      }
      if (staged_[b] == nullptr) {
        RHYTHM_CUDA_CHECK(cudaEventCreateWithFlags(&staged_[b], cudaEventDisableTiming));
      }
    }
    return absl::OkStatus();
  }

  // Queues data[0, size) -> buffer_ on stream_; the broadcast queued after it waits for it.
  absl::Status StageToDevice(const char* data, size_t size) {
    RHYTHM_RETURN_IF_ERROR(EnsureStaging());
    for (size_t off = 0, i = 0; off < size; off += kStageBytes, ++i) {
      const int b = static_cast<int>(i % 2);
      const size_t len = std::min(kStageBytes, size - off);
      // The chunk two back used this buffer; its DMA must be done before it is overwritten.
      if (i >= 2) RHYTHM_CUDA_CHECK(cudaEventSynchronize(staged_[b]));
      std::memcpy(pinned_[b], data + off, len);
      RHYTHM_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(buffer_) + off, pinned_[b], len,
                                        cudaMemcpyHostToDevice, stream_));
      RHYTHM_CUDA_CHECK(cudaEventRecord(staged_[b], stream_));
    }
    return absl::OkStatus();
  }

  // buffer_[0, size) -> data, after the broadcast (already complete); returns when all is copied.
  absl::Status StageToHost(char* data, size_t size) {
    RHYTHM_RETURN_IF_ERROR(EnsureStaging());
    const size_t chunks = (size + kStageBytes - 1) / kStageBytes;
    auto enqueue = [&](size_t i) -> absl::Status {
      const int b = static_cast<int>(i % 2);
      const size_t off = i * kStageBytes, len = std::min(kStageBytes, size - off);
      RHYTHM_CUDA_CHECK(cudaMemcpyAsync(pinned_[b], static_cast<const char*>(buffer_) + off, len,
                                        cudaMemcpyDeviceToHost, stream_));
      RHYTHM_CUDA_CHECK(cudaEventRecord(staged_[b], stream_));
      return absl::OkStatus();
    };
    if (chunks > 0) RHYTHM_RETURN_IF_ERROR(enqueue(0));
    for (size_t i = 0; i < chunks; ++i) {
      // Chunk i + 1's DMA runs while the host copies chunk i out.
      if (i + 1 < chunks) RHYTHM_RETURN_IF_ERROR(enqueue(i + 1));
      const int b = static_cast<int>(i % 2);
      RHYTHM_CUDA_CHECK(cudaEventSynchronize(staged_[b]));
      const size_t off = i * kStageBytes;
      std::memcpy(data + off, pinned_[b], std::min(kStageBytes, size - off));
    }
    return absl::OkStatus();
  }

  ncclComm_t comm_;
  const int device_, rank_, world_;
  const absl::Duration timeout_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t event_ = nullptr;
  void* buffer_ = nullptr;
  size_t capacity_ = 0;
  void* pinned_[2] = {nullptr, nullptr};
  cudaEvent_t staged_[2] = {nullptr, nullptr};
};

class NcclFactory final : public CommunicatorFactory {
 public:
  explicit NcclFactory(CollectiveOptions options) : options_(std::move(options)) {}
  v1::TransportKind kind() const override { return v1::TRANSPORT_KIND_NCCL; }

  absl::StatusOr<std::string> NewRendezvous(int64_t) override {
    ncclUniqueId id;
    ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      return absl::UnavailableError(absl::StrCat("nccl: ncclGetUniqueId: ", ncclGetErrorString(r)));
    }
    return std::string(id.internal, sizeof(id.internal));
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Connect(const std::string& rendezvous, int rank,
                                                        int world_size,
                                                        absl::Duration timeout) override {
    ncclUniqueId id;
    if (rendezvous.size() != sizeof(id.internal)) {
      return absl::InvalidArgumentError(absl::StrCat("nccl: rendezvous has ", rendezvous.size(),
                                                     " bytes, want ", sizeof(id.internal)));
    }
    std::memcpy(id.internal, rendezvous.data(), sizeof(id.internal));
    RHYTHM_CUDA_CHECK(cudaSetDevice(options_.cuda_device));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // init and collectives return at once; we poll with a deadline
    ncclComm_t comm = nullptr;
    RHYTHM_NCCL_CHECK(ncclCommInitRankConfig(&comm, world_size, id, rank, &config));
    absl::Status s = AwaitNccl(
        comm, absl::Now() + timeout, [] { return true; }, "init");
    if (!s.ok()) {
      ncclCommAbort(comm);
      return s;
    }
    return std::unique_ptr<Communicator>(
        new NcclCommunicator(comm, options_.cuda_device, rank, world_size, timeout));
  }

 private:
  CollectiveOptions options_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CommunicatorFactory>> NewNcclFactory(
    const CollectiveOptions& options) {
  absl::StatusOr<NcclInfo> info = ProbeNccl();
  if (!info.ok()) return info.status();
  if (options.cuda_device >= info->cuda_devices) {
    return absl::FailedPreconditionError(absl::StrCat("nccl: CUDA device ", options.cuda_device,
                                                      " does not exist (", info->cuda_devices,
                                                      " visible)"));
  }
  return std::unique_ptr<CommunicatorFactory>(new NcclFactory(options));
}

}  // namespace rhythm::common::weights

// TestHost: the learner's side of weight transport without a learner — a VersionStore, the
// Weights service and (optionally) a Gloo WeightGroupHost on a real gRPC server on 127.0.0.1.
// For the weight-transport tests and bench/weight_sync_bench.
#pragma once

#include <memory>
#include <string>

#include "common/weights/version_store.h"
#include "common/weights/weight_group.h"
#include "common/weights/weight_service.h"
#include "prometheus/registry.h"
#include "rhythm/v1/weights.grpc.pb.h"

namespace grpc {
class Server;
}

namespace rhythm::common::weights {

struct TestHostOptions {
  bool gloo_group = false;
  bool nccl_group = false;  // on CUDA device 0 (needs RHYTHM_WITH_NCCL and a GPU)
  absl::Duration timeout = absl::Seconds(10);
  int keep_versions = 2;
  uint32_t chunk_bytes = 1 << 20;
  uint64_t bucket_bytes = 4 << 20;
  std::function<bool(v1::WeightChunk&)> chunk_hook;
};

// `n` bytes from a seeded generator (same seed, same bytes): test payloads.
std::string RandomBytes(size_t n, uint32_t seed);

// A Weights stub on its own insecure channel to `address` that accepts 256 MB messages.
std::unique_ptr<v1::Weights::Stub> WeightsStub(const std::string& address);

class TestHost {
 public:
  explicit TestHost(TestHostOptions options);
  ~TestHost();
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  VersionStore& store() { return *store_; }
  WeightGroupHost* group() { return group_.get(); }
  LearnerWeightMetrics& metrics() { return *metrics_; }
  prometheus::Registry& registry() { return *registry_; }
  // Publishes `bytes` as `version` (fp32 on the wire, one tensor covering the buffer).
  void Publish(int64_t version, std::string bytes);
  // Group hosts only: wait until the group has `size` members / rank 0 has finished
  // broadcasting `version` (it may return after the members have their bytes). False on timeout.
  bool WaitForGroupSize(int size, absl::Duration timeout);
  bool WaitForBroadcast(int64_t version, absl::Duration timeout);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<LearnerWeightMetrics> metrics_;
  std::unique_ptr<VersionStore> store_;
  std::unique_ptr<WeightGroupHost> group_;
  std::unique_ptr<WeightService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace rhythm::common::weights

// WeightService: the Weights gRPC service (weights.proto) over a VersionStore and, when a
// collective transport is configured, a WeightGroupHost. A thin adapter: streams chunks,
// pumps group events, converts statuses. The learner registers it next to its Learner service;
// tests host it alone. Thread-safe.
#pragma once

#include <atomic>
#include <functional>

#include "common/weights/version_store.h"
#include "common/weights/weight_group.h"
#include "common/weights/weight_metrics.h"
#include "rhythm/v1/weights.grpc.pb.h"

namespace rhythm::common::weights {

struct WeightServiceOptions {
  const VersionStore* store = nullptr;
  WeightGroupHost* group = nullptr;         // null: WeightGroup answers FAILED_PRECONDITION
  LearnerWeightMetrics* metrics = nullptr;  // optional
  // Test hook (fault injection): called on each chunk before it is written; it may change
  // the chunk, or return false to break the stream there as a dropped connection would.
  std::function<bool(v1::WeightChunk&)> chunk_hook;
  // FetchWeights calls served at once (each holds a thread and up to a chunk of buffered
  // bytes); one more is refused with UNAVAILABLE (actors retry with backoff) after
  // on_download_refused is called. 0 = no limit.
  int max_downloads = 0;
  std::function<void()> on_download_refused;
};

class WeightService final : public v1::Weights::Service {
 public:
  explicit WeightService(WeightServiceOptions options) : options_(std::move(options)) {}
  // Ends WatchVersions and WeightGroup streams promptly (call before grpc::Server::Shutdown).
  void Stop() { stopping_ = true; }

  // Announces the newest version, then each newer one. The first and the last announced stay
  // fetchable while the watch is open, even once evicted from the store.
  grpc::Status WatchVersions(grpc::ServerContext*, const v1::WatchVersionsRequest*,
                             grpc::ServerWriter<v1::WeightVersion>*) override;
  grpc::Status FetchWeights(grpc::ServerContext*, const v1::FetchWeightsRequest*,
                            grpc::ServerWriter<v1::WeightChunk>*) override;
  grpc::Status WeightGroup(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::WeightGroupEvent, v1::WeightGroupRequest>*) override;

 private:
  WeightServiceOptions options_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> downloads_{0};
};

}  // namespace rhythm::common::weights

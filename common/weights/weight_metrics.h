// Prometheus series of weight transport, one struct per side. Names (histograms add
// _bucket/_sum/_count):
//   rhythm_<side>_weight_sync_bytes_total{transport}  bytes sent (learner) / received (actor)
//   rhythm_<side>_weight_sync_seconds{transport}      seconds per sync
//   rhythm_<side>_weight_sync_gbps{transport}         GB/s of the last sync
//   rhythm_<side>_weight_fallbacks_total              learner: members dropped to gRPC;
//                                                     actor: versions fetched over gRPC although
//                                                     a collective was configured
//   rhythm_learner_weight_group_size                  members (actors) of the current group
//   rhythm_learner_weight_group_reforms_total         times the group was (re-)formed
//   rhythm_learner_weight_sync_failures_total         broadcasts that failed (peer died or hung)
//   rhythm_actor_generation_pause_seconds             generation stopped to swap in a version
//   rhythm_actor_weight_chunk_refetches_total         gRPC chunks fetched again (bad checksum)
//   rhythm_actor_weight_download_resumes_total        gRPC downloads resumed after a break
// where transport is "grpc", "gloo" or "nccl".
#pragma once

#include <cstdint>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rhythm/v1/transport.pb.h"

namespace rhythm::common::weights {

// "grpc", "gloo", "nccl" (the label value), or "unspecified".
const char* TransportName(v1::TransportKind kind);

class SyncSeries {
 public:
  SyncSeries(prometheus::Registry& r, const std::string& side);
  // One completed sync of `bytes` in `seconds` over `kind`.
  void Record(v1::TransportKind kind, uint64_t bytes, double seconds);
  prometheus::Counter& fallbacks;

 private:
  prometheus::Family<prometheus::Counter>& bytes_;
  prometheus::Family<prometheus::Histogram>& seconds_;
  prometheus::Family<prometheus::Gauge>& gbps_;
};

struct LearnerWeightMetrics {
  explicit LearnerWeightMetrics(prometheus::Registry& r);
  SyncSeries sync;
  prometheus::Gauge& group_size;
  prometheus::Counter& reforms;
  prometheus::Counter& failures;
};

struct ActorWeightMetrics {
  explicit ActorWeightMetrics(prometheus::Registry& r);
  SyncSeries sync;
  prometheus::Histogram& pause_seconds;
  prometheus::Counter& chunk_refetches;
  prometheus::Counter& resumes;
};

}  // namespace rhythm::common::weights

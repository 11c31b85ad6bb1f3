#include "common/weights/weight_metrics.h"

#include "common/metric_builders.h"

namespace rhythm::common::weights {
namespace {

const prometheus::Histogram::BucketBoundaries kSeconds = {0.001, 0.01, 0.05, 0.1, 0.25, 0.5,
                                                          1,     2.5,  5,    10,  30,   120};

}  // namespace

const char* TransportName(v1::TransportKind kind) {
  switch (kind) {
    case v1::TRANSPORT_KIND_GRPC:
      return "grpc";
    case v1::TRANSPORT_KIND_GLOO:
      return "gloo";
    case v1::TRANSPORT_KIND_NCCL:
      return "nccl";
    default:
      return "unspecified";
  }
}

SyncSeries::SyncSeries(prometheus::Registry& r, const std::string& side)
    : fallbacks(AddCounter(r, ("rhythm_" + side + "_weight_fallbacks_total").c_str(),
                           side == "learner"
                               ? "Group members dropped to gRPC (missed a form deadline)"
                               : "Versions fetched over gRPC although a collective was set")),
      bytes_(prometheus::BuildCounter()
                 .Name("rhythm_" + side + "_weight_sync_bytes_total")
                 .Help("Bytes of weights moved, by transport")
                 .Register(r)),
      seconds_(prometheus::BuildHistogram()
                   .Name("rhythm_" + side + "_weight_sync_seconds")
                   .Help("Seconds per weight sync, by transport")
                   .Register(r)),
      gbps_(prometheus::BuildGauge()
                .Name("rhythm_" + side + "_weight_sync_gbps")
                .Help("GB/s of the last weight sync, by transport")
                .Register(r)) {}

void SyncSeries::Record(v1::TransportKind kind, uint64_t bytes, double seconds) {
  const prometheus::Labels labels{{"transport", TransportName(kind)}};
  bytes_.Add(labels).Increment(static_cast<double>(bytes));
  seconds_.Add(labels, kSeconds).Observe(seconds);
  if (seconds > 0) gbps_.Add(labels).Set(static_cast<double>(bytes) / seconds / 1e9);
}

LearnerWeightMetrics::LearnerWeightMetrics(prometheus::Registry& r)
    : sync(r, "learner"),
      group_size(
          AddGauge(r, "rhythm_learner_weight_group_size", "Actors in the current broadcast group")),
      reforms(AddCounter(r, "rhythm_learner_weight_group_reforms_total",
                         "Times the broadcast group was (re-)formed")),
      failures(AddCounter(r, "rhythm_learner_weight_sync_failures_total",
                          "Broadcasts that failed because a member died or hung")) {}

ActorWeightMetrics::ActorWeightMetrics(prometheus::Registry& r)
    : sync(r, "actor"),
      pause_seconds(AddHistogram(r, "rhythm_actor_generation_pause_seconds",
                                 "Seconds generation stopped to swap in a new version", kSeconds)),
      chunk_refetches(AddCounter(r, "rhythm_actor_weight_chunk_refetches_total",
                                 "gRPC weight chunks fetched again after a bad checksum")),
      resumes(AddCounter(r, "rhythm_actor_weight_download_resumes_total",
                         "gRPC weight downloads resumed after an interruption")) {}

}  // namespace rhythm::common::weights

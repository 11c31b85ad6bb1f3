// One-line registration of an unlabelled Prometheus series, for the metrics structs each
// component builds from its registry (learner/learner_metrics.h, actor/actor_metrics.h).
#pragma once

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace rhythm::common {

prometheus::Counter& AddCounter(prometheus::Registry& r, const char* name, const char* help);
prometheus::Gauge& AddGauge(prometheus::Registry& r, const char* name, const char* help);
prometheus::Histogram& AddHistogram(prometheus::Registry& r, const char* name, const char* help,
                                    prometheus::Histogram::BucketBoundaries buckets);

}  // namespace rhythm::common

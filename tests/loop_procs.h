// The real loop in a test: a rhythm-learner and rhythm-actor processes on localhost with a small
// model (steps of a few tens of ms), read through their start-up lines, /metrics and final
// reports. Shared by actor_integration_test and the fault tests. Not thread-safe (one test
// thread drives the processes).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tests/subprocess.h"

namespace rhythm::testing {

// --set flags for a small, fast run: countdown traces with 24 new tokens (longer than the FAI
// band's lower horizon, 10, so coupled credit has anchors), group_size 2, batch_groups 2, a
// 2-layer 32-wide model, zero-variance groups kept.
std::vector<std::string> SmallLoopConfig();

// A child with the metrics port it printed at start.
struct Proc {
  ChildProcess p;
  int metrics_port = 0;
};

// Starts rhythm-learner on 127.0.0.1:port with run dir `run`, SmallLoopConfig(), a checkpoint
// every 2 steps and `extra` (after the defaults, so it overrides them); with `resume`, adds
// --resume run. Waits (up to 60 s) for "listening on P metrics M" and reads M. Fails the test
// (gtest ASSERT, returning early) if it does not start.
void StartLearner(Proc& l, const std::string& run, int port, bool resume, const std::string& log,
                  const std::vector<std::string>& extra = {});

// rhythm-actor's command line against `learner_address` as actor.actor_id = id: 2 prompts per
// batch, heartbeats every 0.2 s, reconnect backoff 0.05-0.5 s, metrics on a free local port.
std::vector<std::string> ActorArgs(const std::string& learner_address, const std::string& id);

// Starts ActorArgs("127.0.0.1:port", id) plus `extra`. Waits for its start line.
void StartActor(Proc& a, int port, const std::string& id, const std::string& log,
                const std::vector<std::string>& extra = {});

// The value of the series `name` (with its labels, e.g. foo_total{reason="x"}) on
// 127.0.0.1:port/metrics; -1 when unreachable or absent.
double Metric(int port, const std::string& name);

// Polls `cond` every 50 ms for up to `seconds`; true as soon as it holds.
bool WaitFor(const std::function<bool()>& cond, double seconds);

// An actor's last line: "rhythm-actor: sent N acked M rejected R resent S version V" (-1 when
// it was not printed).
struct ActorReport {
  int64_t sent = -1, acked = -1, rejected = -1, resent = -1, version = -1;
};

// SIGTERM, then the actor's report; expects exit 0 (gtest EXPECT).
ActorReport StopActor(Proc& a);

}  // namespace rhythm::testing

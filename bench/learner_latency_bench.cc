// RPC latency of a real rhythm-learner while rollouts stream in (issue 15: "group commit must
// not stall Heartbeat, LeasePrompts or other streams"). A plain program:
//
//   build/bin/bench_learner_latency [--learner BIN[,BIN2...]] [--seconds 8] [--streams 4]
//                                   [--rounds 2] [--slow-fsync-ms 5]
//
// For each round, each disk (the real one, then one whose fsync sleeps --slow-fsync-ms first,
// by LD_PRELOAD of tests/slow_fsync_preload.cc; 0 skips it) and each learner binary in turn
// (so two builds are compared side by side on the same noisy machine), it starts the learner
// on a fresh run directory, then measures, over --seconds each:
//   idle:   Heartbeat and LeasePrompts(1) latency with nothing else going on;
//   ingest: the same probes while --streams clients push rollouts as fast as their credits
//           allow (every rollout is journaled and fsync'd before its ack).
// Training is kept out of the way (batch_groups is larger than the run), so the load is the
// journal's and nothing else's. It prints p50/p90/p99/max in milliseconds and the acks/s.
#include <algorithm>
#include <csignal>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/metrics_server.h"
#include "common/subprocess.h"
#include "grpcpp/grpcpp.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "tests/scripted_rollout.h"

namespace {

using rhythm::v1::Learner;
namespace v1 = rhythm::v1;

std::unique_ptr<grpc::ClientContext> Deadline(double seconds = 30) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  return ctx;
}

double Ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

struct Latencies {
  std::vector<double> ms;
  std::string Format() {
    if (ms.empty()) return "no samples";
    std::sort(ms.begin(), ms.end());
    auto q = [&](double p) { return ms[static_cast<size_t>(p * (ms.size() - 1))]; };
    char buf[160];
    std::snprintf(buf, sizeof buf, "p50 %6.2f  p90 %6.2f  p99 %7.2f  max %7.2f ms  (n=%zu)",
                  q(0.5), q(0.9), q(0.99), ms.back(), ms.size());
    return buf;
  }
};

bool Register(Learner::Stub& stub, const std::string& actor, const std::string& run) {
  v1::RegisterRequest req;
  req.set_actor_id(actor);
  req.set_run_id(run);
  v1::RegisterResponse resp;
  return stub.Register(Deadline().get(), req, &resp).ok();
}

std::vector<v1::PromptLease> Lease(Learner::Stub& stub, const std::string& actor, uint32_t n) {
  v1::LeaseRequest req;
  req.set_actor_id(actor);
  req.set_run_id("bench");
  req.set_max_prompts(n);
  v1::LeaseResponse resp;
  if (!stub.LeasePrompts(Deadline().get(), req, &resp).ok()) return {};
  return {resp.leases().begin(), resp.leases().end()};
}

// One client pushing rollouts on a stream as fast as its credits allow.
void Push(Learner::Stub& stub, const std::string& actor, const std::atomic<bool>& stop,
          std::atomic<int64_t>& acked) {
  if (!Register(stub, actor, "bench")) return;
  grpc::ClientContext ctx;
  auto stream = stub.StreamRollouts(&ctx);
  v1::RolloutStreamRequest hello;
  hello.mutable_hello()->set_actor_id(actor);
  hello.mutable_hello()->set_run_id("bench");
  if (!stream->Write(hello)) return;
  std::atomic<int64_t> credits{0};
  std::thread reader([&] {
    v1::RolloutStreamResponse resp;
    while (stream->Read(&resp)) {
      credits += resp.granted_credits();
      if (resp.kind_case() == v1::RolloutStreamResponse::kCredit) credits += resp.credit();
      if (resp.has_ack() && resp.ack().code() == 0) ++acked;
    }
  });
  uint64_t id = 0;
  while (!stop.load()) {
    for (const v1::PromptLease& lease : Lease(stub, actor, 16)) {
      for (uint32_t s = 0; s < lease.group_size() && !stop.load(); ++s) {
        while (credits.load() <= 0 && !stop.load()) absl::SleepFor(absl::Microseconds(200));
        v1::RolloutStreamRequest req;
        *req.mutable_rollout() =
            rhythm::testing::ScriptedRollout(lease, actor, "bench", ++id, s, s % 2);
        --credits;
        if (!stream->Write(req)) return reader.join();
      }
    }
  }
  stream->WritesDone();
  reader.join();
  stream->Finish();
}

struct Phase {
  Latencies heartbeat, lease;
  double acks_per_s = 0;
};

Phase Measure(Learner::Stub& stub, double seconds, int streams) {
  Phase out;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> acked{0};
  std::vector<std::thread> pushers;
  for (int i = 0; i < streams; ++i) {
    pushers.emplace_back([&, i] { Push(stub, absl::StrCat("pusher-", i), stop, acked); });
  }
  absl::SleepFor(absl::Milliseconds(streams > 0 ? 500 : 0));  // let the load start
  const int64_t acked_before = acked.load();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; Ms(start) < seconds * 1000; ++i) {
    v1::HeartbeatRequest hb;
    hb.set_actor_id("probe");
    hb.set_run_id("bench");
    v1::HeartbeatResponse hr;
    auto t = std::chrono::steady_clock::now();
    if (stub.Heartbeat(Deadline().get(), hb, &hr).ok()) out.heartbeat.ms.push_back(Ms(t));
    if (i % 5 == 0) {
      t = std::chrono::steady_clock::now();
      if (!Lease(stub, "probe", 1).empty()) out.lease.ms.push_back(Ms(t));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  out.acks_per_s = static_cast<double>(acked.load() - acked_before) / (Ms(start) / 1000);
  stop = true;
  for (std::thread& t : pushers) t.join();
  return out;
}

// A metric's value from a /metrics text, or -1.
double MetricValue(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, name + " ")) return std::stod(std::string(line));
  }
  return -1;
}

struct RunSpec {
  std::string bin;
  int fsync_delay_ms = 0;  // 0: the real disk
  double seconds = 8;
  int streams = 4;
  std::string root;     // scratch directory on the real disk
  std::string preload;  // librhythm_slow_fsync.so
};

// One learner process: idle, then ingest; prints the latencies and the ledger it ended with.
bool RunOne(const RunSpec& spec, int round) {
  if (spec.fsync_delay_ms > 0) {  // the child inherits the environment at spawn
    setenv("LD_PRELOAD", spec.preload.c_str(), 1);
    setenv("RHYTHM_SLOW_FSYNC_MS", std::to_string(spec.fsync_delay_ms).c_str(), 1);
  }
  const std::string run = spec.root + "/run";
  std::filesystem::remove_all(spec.root);
  std::filesystem::create_directories(spec.root);
  rhythm::common::ChildProcess learner;
  const bool started = learner.Start(
      {spec.bin, "--set", "learner.run_dir=" + run, "--set", "learner.address=127.0.0.1:0",
       "--set", "learner.metrics_address=127.0.0.1:0", "--set", "learner.credits_per_actor=64",
       "--set", "learner.checkpoint_every=0", "--set", "learner.queue_capacity=100000000",
       "--set", "task.kind=arithmetic", "--set", "trainer.group_size=2", "--set",
       "trainer.batch_groups=1000000", "--set", "model.tiny.hidden_size=32", "--set",
       "model.tiny.num_layers=2", "--set", "model.tiny.num_heads=2", "--set",
       "model.tiny.num_kv_heads=1", "--set", "model.tiny.intermediate_size=64"},
      spec.root + "/learner.log");
  unsetenv("LD_PRELOAD");
  std::vector<std::string> parts = absl::StrSplit(learner.ReadLine(60), ' ');
  if (!started || parts.size() != 6) {
    std::fprintf(stderr, "%s did not start; see %s/learner.log\n", spec.bin.c_str(),
                 spec.root.c_str());
    return false;
  }
  auto stub = Learner::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", parts[3]),
                                                   grpc::InsecureChannelCredentials()));
  Register(*stub, "probe", "bench");
  Phase idle = Measure(*stub, spec.seconds, 0);
  Phase load = Measure(*stub, spec.seconds, spec.streams);
  const std::string metrics = rhythm::common::ScrapeLocal(std::stoi(parts[5])).value_or("");
  std::printf("round %d  %s  %s\n", round + 1, spec.bin.c_str(),
              spec.fsync_delay_ms > 0 ? absl::StrCat("fsync +", spec.fsync_delay_ms, " ms").c_str()
                                      : "real disk");
  std::printf("  idle    Heartbeat    %s\n", idle.heartbeat.Format().c_str());
  std::printf("  idle    LeasePrompts %s\n", idle.lease.Format().c_str());
  std::printf("  ingest  Heartbeat    %s\n", load.heartbeat.Format().c_str());
  std::printf("  ingest  LeasePrompts %s\n", load.lease.Format().c_str());
  std::printf("  ingest  %.0f acks/s over %d streams\n", load.acks_per_s, spec.streams);
  std::printf("  ledger  %.0f ids held after %.0f rollouts accepted\n",
              MetricValue(metrics, "rhythm_learner_ledger_ids"),
              MetricValue(metrics, "rhythm_learner_rollouts_accepted_total"));
  std::fflush(stdout);
  learner.Stop(SIGTERM, 60);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string learners = "build/bin/rhythm-learner";
  RunSpec spec;
  int rounds = 2, slow_ms = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--learner") {
      learners = value;
    } else if (flag == "--seconds") {
      spec.seconds = std::stod(value);
    } else if (flag == "--streams") {
      spec.streams = std::stoi(value);
    } else if (flag == "--rounds") {
      rounds = std::stoi(value);
    } else if (flag == "--slow-fsync-ms") {
      slow_ms = std::stoi(value);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  spec.root = "/var/tmp/rhythm-latency-bench";
  spec.preload =
      (std::filesystem::path(argv[0]).parent_path() / "librhythm_slow_fsync.so").string();
  std::vector<int> disks = {0};
  if (slow_ms > 0) disks.push_back(slow_ms);
  for (int round = 0; round < rounds; ++round) {
    for (int delay : disks) {
      for (const std::string& bin : std::vector<std::string>(absl::StrSplit(learners, ','))) {
        spec.bin = bin;
        spec.fsync_delay_ms = delay;
        if (!RunOne(spec, round)) return 1;
      }
    }
  }
  std::filesystem::remove_all(spec.root);
  return 0;
}

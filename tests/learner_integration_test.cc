// A real rhythm-learner process driven by a scripted gRPC client: registration, leases, the
// rollout stream (acks, duplicates, every invalid case, credits), a training step that advances
// the version, weights download, /metrics, and kill -9 + --resume with nothing lost or doubled.
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/crc32c.h"
#include "common/metrics_server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "learner/rollout_validation.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"
#include "tests/scripted_rollout.h"
#include "tests/learner_client.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

using Learner = LearnerUnderTest;

// TinyLearnerArgs with 4 credits per stream (the flow-control tests count them).
std::vector<std::string> LearnerArgs(const std::string& run_dir) {
  std::vector<std::string> args = TinyLearnerArgs(run_dir);
  args.insert(args.end(), {"--set", "learner.credits_per_actor=4"});
  return args;
}

void StartLearner(Learner& l, std::vector<std::string> args, const std::string& log) {
  StartLearnerProcess(l, args, log);
}

std::unique_ptr<grpc::ClientContext> Context(double seconds = 30) { return Deadline(seconds); }

v1::RegisterResponse Register(Learner& l, const std::string& actor, const std::string& run) {
  v1::RegisterRequest req;
  req.set_actor_id(actor);
  req.set_run_id(run);
  v1::RegisterResponse resp;
  grpc::Status s = l.stub->Register(Context().get(), req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp;
}

// Leases as `actor` of `run` (it must have registered: the learner leases to registered
// actors only).
std::vector<v1::PromptLease> Lease(Learner& l, const std::string& actor, uint32_t n,
                                   const std::string& run = "run-1") {
  v1::LeaseRequest req;
  req.set_actor_id(actor);
  req.set_run_id(run);
  req.set_max_prompts(n);
  v1::LeaseResponse resp;
  EXPECT_TRUE(l.stub->LeasePrompts(Context().get(), req, &resp).ok());
  return {resp.leases().begin(), resp.leases().end()};
}

v1::Rollout MakeRollout(const v1::PromptLease& lease, uint64_t id, uint32_t sample, double reward,
                        const std::string& actor = "actor-1") {
  return ScriptedRollout(lease, actor, "run-1", id, sample, reward);
}

using Stream = RolloutStreamClient;


std::string TempRunDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/learner_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(LearnerProcess, IngestsValidatesTrainsAndServesWeights) {
  const std::string run = TempRunDir("main");
  Learner l;
  std::vector<std::string> args = LearnerArgs(run);
  args.insert(args.end(), {"--dump-rollouts", run + "-dump"});
  StartLearner(l, args, run + ".log");
  v1::RegisterResponse reg = Register(l, "actor-1", "run-1");
  EXPECT_EQ(reg.current().version(), 0);
  EXPECT_EQ(reg.config().trainer().group_size(), 2);
  const int64_t vocab = 101;  // the character tokenizer

  std::vector<v1::PromptLease> leases = Lease(l, "actor-1", 2);
  ASSERT_EQ(leases.size(), 2u);
  EXPECT_EQ(leases[0].group_size(), 2u);
  EXPECT_FALSE(leases[0].prompt_text().empty());
  EXPECT_GT(leases[0].prompt_token_ids_size(), 0);
  for (uint32_t t : leases[0].prompt_token_ids()) EXPECT_LT(t, vocab);

  Stream s(l, "actor-1");
  EXPECT_EQ(s.credits(), 4);
  // Every invalid case is acked with INVALID_ARGUMENT naming the field, and the stream goes on.
  // (They use the second lease: a rejected sample means its group can never complete, so the
  // learner gives that lease up for re-issue.)
  struct Bad {
    std::function<void(v1::Rollout&)> corrupt;
    std::string want;
  } bad[] = {
      {[](v1::Rollout& r) { r.mutable_verifier()->set_reward(NAN); }, "verifier.reward = nan"},
      {[](v1::Rollout& r) { r.set_response_token_ids(1, 5000); },
       "response_token_ids[1] = 5000 is outside the vocabulary"},
      {[](v1::Rollout& r) { r.add_entropy(1); }, "entropy has 6 values"},
      {[](v1::Rollout& r) { r.mutable_version_spans(0)->set_version(7); },
       "version_spans[0].version = 7 but the newest version is 0"},
      {[](v1::Rollout& r) { r.mutable_summary()->set_waad_f16("ab"); },
       "summary.waad_f16 has 1 values"},
      {[](v1::Rollout& r) { r.set_behaviour_logprobs(0, INFINITY); }, "behaviour_logprobs[0] = inf"},
      {[](v1::Rollout& r) { r.set_group_id(987654); }, "group_id = 987654 is not an outstanding"},
      {[](v1::Rollout& r) { r.mutable_verifier()->set_detail(std::string(17 << 20, 'x')); },
       "bytes exceeds the limit"},
  };
  uint64_t id = 100;
  for (const Bad& b : bad) {
    v1::Rollout r = MakeRollout(leases[1], ++id, 0, 1.0);
    b.corrupt(r);
    s.Send(r);
    v1::RolloutAck ack = s.NextAck();
    EXPECT_EQ(ack.rollout_id(), id);
    EXPECT_EQ(ack.code(), 3) << b.want;
    EXPECT_NE(ack.error_message().find(b.want), std::string::npos) << ack.error_message();
  }
  // The second lease was released: a valid sample for it is now refused.
  s.Send(MakeRollout(leases[1], 50, 1, 1.0));
  v1::RolloutAck released = s.NextAck();
  EXPECT_EQ(released.reject_reason(), v1::REJECT_REASON_UNKNOWN_LEASE) << released.error_message();
  // A valid group: both acked, then a duplicate is acked as such.
  s.Send(MakeRollout(leases[0], 1, 0, 1.0));
  s.Send(MakeRollout(leases[0], 2, 1, 0.0));
  std::set<uint64_t> acked;
  for (int i = 0; i < 2; ++i) {
    v1::RolloutAck ack = s.NextAck();
    EXPECT_EQ(ack.code(), 0) << ack.error_message();
    EXPECT_FALSE(ack.duplicate());
    acked.insert(ack.rollout_id());
  }
  EXPECT_EQ(acked, (std::set<uint64_t>{1, 2}));
  s.Send(MakeRollout(leases[0], 1, 0, 1.0));
  v1::RolloutAck dup = s.NextAck();
  EXPECT_TRUE(dup.duplicate());
  EXPECT_EQ(dup.rollout_id(), 1u);
  EXPECT_GE(s.credits(), 3) << "acks hand credits back while the queue has room";

  // The complete group trains a step: version 1 is announced and downloadable.
  ASSERT_TRUE(WaitForVersion(l, 1, 60));
  v1::FetchWeightsRequest fetch;
  fetch.set_version(1);
  auto ctx = Context();
  auto reader = l.weights->FetchWeights(ctx.get(), fetch);
  v1::WeightChunk chunk;
  uint64_t bytes = 0;
  int chunks = 0;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.offset(), bytes);
    EXPECT_EQ(common::Crc32c(chunk.data()), chunk.crc32c()) << "chunk " << chunk.index();
    bytes += chunk.data().size();
    ++chunks;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_GT(bytes, 10000u);
  EXPECT_GE(chunks, 1);
  fetch.set_version(42);
  auto ctx2 = Context();
  auto missing = l.weights->FetchWeights(ctx2.get(), fetch);
  while (missing->Read(&chunk)) {
  }
  EXPECT_EQ(missing->Finish().error_code(), grpc::StatusCode::NOT_FOUND);

  // /metrics names every quantity the issue lists.
  absl::StatusOr<std::string> m = common::ScrapeLocal(l.metrics_port);
  ASSERT_TRUE(m.ok());
  for (const char* name :
       {"rhythm_learner_rollouts_received_total 12", "rhythm_learner_rollouts_accepted_total 2",
        "rhythm_learner_rollouts_duplicate_total 1",
        "rhythm_learner_rollouts_rejected_total{reason=\"non_finite\"} 2",
        "rhythm_learner_rollouts_rejected_total{reason=\"unknown_lease\"} 2",
        "rhythm_learner_rollouts_rejected_total{reason=\"oversized\"} 1",
        "rhythm_learner_queue_depth_rollouts", "rhythm_learner_staleness_versions_bucket",
        "rhythm_learner_groups_dropped_total", "rhythm_learner_step_seconds_count 1",
        "rhythm_learner_tokens_per_second", "rhythm_learner_loss", "rhythm_learner_reward_mean",
        "rhythm_learner_clip_fraction_ratio", "rhythm_learner_approx_kl",
        "rhythm_learner_entropy_nats", "rhythm_learner_preplan_credit_fraction_ratio",
        "rhythm_learner_anchor_credit_fraction_ratio", "rhythm_learner_checkpoint_seconds",
        "rhythm_learner_weight_publish_bytes_total", "rhythm_learner_weight_publish_seconds",
        "rhythm_learner_actors_connected 1", "rhythm_learner_leases_outstanding",
        "rhythm_learner_leases_expired_total", "rhythm_learner_policy_version 1"}) {
    EXPECT_NE(m->find(name), std::string::npos) << name << "\n" << *m;
  }
  s.Close();
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0) << "SIGTERM: final checkpoint, exit 0";
  std::ifstream latest(run + "/checkpoints/LATEST");
  std::string name;
  std::getline(latest, name);
  EXPECT_EQ(name.rfind("ckpt-00000001-", 0), 0u) << name;
  // --dump-rollouts wrote the trained batch in rhythm shape's format, which shape accepts.
  const std::string dump = run + "-dump/step-00000001.jsonl";
  ProcessResult shaped = RunProcess({BinaryPath("rhythm"), "shape", "--input", dump});
  EXPECT_EQ(shaped.exit_code, 0) << shaped.err;
  EXPECT_EQ(CountLines(shaped.out), 2) << "one line per trained response";
  EXPECT_NE(shaped.err.find("2 responses shaped (coupled), 0 malformed, 1 groups"),
            std::string::npos)
      << shaped.err;
  EXPECT_TRUE(std::filesystem::exists(run + "/checkpoints/" + name + "/model/config.json"));
}

TEST(LearnerProcess, AWeightChunkTooLargeForOneMessageIsAConfigError) {
  const std::string run = TempRunDir("chunk");
  std::vector<std::string> args = LearnerArgs(run);
  args.insert(args.end(), {"--set", "transport.chunk_bytes=33554432"});
  ProcessResult r = RunProcess(args, 60);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("transport.chunk_bytes 33554432"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("learner.max_message_bytes"), std::string::npos) << r.err;
}

TEST(LearnerProcess, PromptsTooLongForTheModelAreSkippedAndCounted) {
  const std::string run = TempRunDir("too_long");
  Learner l;
  std::vector<std::string> args = LearnerArgs(run);
  // 16 positions, 14 of them for the response: no arithmetic prompt fits.
  args.insert(args.end(), {"--set", "model.tiny.max_seq_len=16", "--set",
                           "generation.max_new_tokens=14"});
  StartLearner(l, args, run + ".log");
  Register(l, "actor-1", "run-1");
  EXPECT_TRUE(Lease(l, "actor-1", 4).empty()) << "nothing an actor could not generate for";
  absl::StatusOr<std::string> m = common::ScrapeLocal(l.metrics_port);
  ASSERT_TRUE(m.ok());
  EXPECT_NE(m->find("rhythm_learner_prompts_skipped_total{reason=\"too_long\"}"),
            std::string::npos)
      << *m;
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0) << "and it keeps serving until told to stop";
}

TEST(LearnerProcess, ThrottlesAClientThatStopsReadingAcks) {
  const std::string run = TempRunDir("throttle");
  Learner l;
  StartLearner(l, LearnerArgs(run), run + ".log");  // credits_per_actor = 4
  Register(l, "actor-1", "run-1");
  std::vector<v1::PromptLease> leases = Lease(l, "actor-1", 1);
  ASSERT_EQ(leases.size(), 1u);
  // A client with a small receive window (no BDP growth) that ignores credits and never reads
  // an ack: 20 KB messages, as fast as gRPC takes them.
  grpc::ChannelArguments small_window;
  small_window.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  small_window.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8192);
  auto stub = v1::Learner::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", l.port), grpc::InsecureChannelCredentials(), small_window));
  auto ctx = Context(60);
  auto stream = stub->StreamRollouts(ctx.get());
  v1::RolloutStreamRequest hello;
  hello.mutable_hello()->set_actor_id("actor-1");
  hello.mutable_hello()->set_run_id("run-1");
  ASSERT_TRUE(stream->Write(hello));
  v1::RolloutStreamRequest req;
  *req.mutable_rollout() = MakeRollout(leases[0], 1, 0, 1.0);
  req.mutable_rollout()->mutable_verifier()->set_detail(std::string(20000, 'x'));
  std::atomic<int64_t> written{0};
  std::thread flood([&] {
    for (int i = 0; i < 20000; ++i) {
      if (!stream->Write(req)) break;
      ++written;
    }
  });
  absl::SleepFor(absl::Seconds(3));
  const int64_t after3 = written.load();
  absl::SleepFor(absl::Seconds(2));
  const int64_t after5 = written.load();
  absl::StatusOr<std::string> m = common::ScrapeLocal(l.metrics_port);
  ctx->TryCancel();
  flood.join();
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string key = "\nrhythm_learner_rollouts_received_total ";
  const size_t at = m->find(key);
  ASSERT_NE(at, std::string::npos);
  const double received = std::strtod(m->c_str() + at + key.size(), nullptr);
  EXPECT_EQ(after3, after5) << "the client's writes are blocked";
  EXPECT_LT(after5, 20000);
  EXPECT_GE(received, 1);
  EXPECT_LT(received, 2000) << "the learner stops reading once the client's window is full";
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0) << "the throttled stream does not block shutdown";
}

TEST(LearnerProcess, LeaseOfAVanishedClientIsIssuedAgain) {
  const std::string run = TempRunDir("reissue");
  Learner l;
  std::vector<std::string> args = LearnerArgs(run);
  args.insert(args.end(), {"--set", "learner.heartbeat_timeout_s=0.5"});
  StartLearner(l, args, run + ".log");
  Register(l, "actor-a", "run-a");
  std::vector<v1::PromptLease> first = Lease(l, "actor-a", 1, "run-a");
  ASSERT_EQ(first.size(), 1u);
  // actor-a never heartbeats again; actor-b keeps heartbeating and asks for work.
  Register(l, "actor-b", "run-b");
  absl::SleepFor(absl::Milliseconds(1500));
  std::vector<v1::PromptLease> second = Lease(l, "actor-b", 1, "run-b");
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].prompt_id(), first[0].prompt_id()) << "the vanished client's prompt";
  EXPECT_NE(second[0].lease_id(), first[0].lease_id()) << "under a new lease id";
  absl::StatusOr<std::string> m = common::ScrapeLocal(l.metrics_port);
  EXPECT_NE(m->find("rhythm_learner_leases_expired_total 1"), std::string::npos);
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0);
}

// Issue 17: 5,000 fake registrations left actors_connected at 5,002 for good. Actors silent
// past learner.heartbeat_timeout_s leave the gauge (and the learner's table of them).
TEST(LearnerProcess, SilentActorsLeaveActorsConnected) {
  const std::string run = TempRunDir("connected");
  Learner l;
  std::vector<std::string> args = LearnerArgs(run);
  args.insert(args.end(), {"--set", "learner.heartbeat_timeout_s=0.5"});
  StartLearner(l, args, run + ".log");
  auto connected = [&] {
    const std::string m = common::ScrapeLocal(l.metrics_port).value_or("");
    const size_t at = m.find("\nrhythm_learner_actors_connected ");
    return at == std::string::npos ? -1.0 : std::stod(m.substr(at + 33));
  };
  for (int i = 0; i < 20; ++i) Register(l, absl::StrCat("fake-", i), "run-f");
  EXPECT_EQ(connected(), 20);
  // One actor keeps talking; the 20 fakes fall silent.
  for (int i = 0; i < 15; ++i) {
    Register(l, "actor-live", "run-live");
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(connected(), 1) << "only the actor heard within the timeout";
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0);
}

TEST(LearnerProcess, AVanishedActorsAckedSampleIsTrainedInTheGroupAnotherActorCompletes) {
  // Before, a lease that ended with part of its group acked dropped those samples and issued
  // the prompt again from scratch: acked work lost. Now the next lease of the prompt asks only
  // for the missing samples, and the group trains with the vanished actor's sample in it.
  const std::string run = TempRunDir("continue");
  Learner l;
  std::vector<std::string> args = LearnerArgs(run);
  args.insert(args.end(), {"--set", "learner.heartbeat_timeout_s=0.5", "--dump-rollouts",
                           run + "-dump"});
  StartLearner(l, args, run + ".log");
  Register(l, "actor-a", "run-1");
  std::vector<v1::PromptLease> first = Lease(l, "actor-a", 1);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].sample_indices_size(), 0) << "a fresh lease wants the whole group";
  {
    Stream a(l, "actor-a");
    a.Send(MakeRollout(first[0], 1, 0, 1.0, "actor-a"));
    ASSERT_EQ(a.NextAck().code(), 0);
    a.Close();
  }
  // actor-a goes silent: its lease expires with sample 0 acked.
  Register(l, "actor-b", "run-1");
  absl::SleepFor(absl::Milliseconds(1500));
  std::vector<v1::PromptLease> cont = Lease(l, "actor-b", 1);
  ASSERT_EQ(cont.size(), 1u);
  EXPECT_EQ(cont[0].prompt_id(), first[0].prompt_id());
  ASSERT_EQ(cont[0].sample_indices_size(), 1);
  EXPECT_EQ(cont[0].sample_indices(0), 1u) << "only the missing sample";
  Stream b(l, "actor-b");
  // A sample the lease does not ask for is refused, naming the field.
  b.Send(MakeRollout(cont[0], 1, 0, 0.0, "actor-b"));
  v1::RolloutAck bad = b.NextAck();
  EXPECT_EQ(bad.reject_reason(), v1::REJECT_REASON_MALFORMED);
  EXPECT_NE(bad.error_message().find("sample_index = 0"), std::string::npos)
      << bad.error_message();
  // That released the lease; the group is still waiting, and is asked for again.
  std::vector<v1::PromptLease> again = Lease(l, "actor-b", 1);
  ASSERT_EQ(again.size(), 1u);
  ASSERT_EQ(again[0].sample_indices_size(), 1);
  b.Send(MakeRollout(again[0], 2, 1, 0.0, "actor-b"));
  ASSERT_EQ(b.NextAck().code(), 0);
  ASSERT_TRUE(WaitForVersion(l, 1, 60)) << "the completed group trains";
  b.Close();
  std::ifstream dump(run + "-dump/step-00000001.jsonl");
  std::set<std::string> trained;
  for (std::string line; std::getline(dump, line);) {
    const bool a = line.find("\"actor_id\":\"actor-a\"") != std::string::npos;
    const bool b1 = line.find("\"actor_id\":\"actor-b\"") != std::string::npos;
    trained.insert(a ? "actor-a" : b1 ? "actor-b" : "?");
  }
  EXPECT_EQ(trained, (std::set<std::string>{"actor-a", "actor-b"}))
      << "the vanished actor's acked sample is in the trained group";
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0);
}

TEST(LearnerProcess, HeartbeatsRenewOnlyTheLeasesTheyName) {
  // Before, every heartbeat extended all of an actor's leases, so a lease whose LeasePrompts
  // reply was lost stayed outstanding for as long as the actor lived.
  const std::string run = TempRunDir("renew");
  Learner l;
  std::vector<std::string> args = LearnerArgs(run);
  args.insert(args.end(), {"--set", "learner.lease_timeout_s=1.2"});
  StartLearner(l, args, run + ".log");
  Register(l, "actor-1", "run-1");
  std::vector<v1::PromptLease> leases = Lease(l, "actor-1", 2);
  ASSERT_EQ(leases.size(), 2u);
  // 3 s of heartbeats every 100 ms that name only the first lease.
  for (int i = 0; i < 30; ++i) {
    v1::HeartbeatRequest req;
    req.set_actor_id("actor-1");
    req.set_run_id("run-1");
    req.add_renew_lease_ids(leases[0].lease_id());
    v1::HeartbeatResponse resp;
    ASSERT_TRUE(l.stub->Heartbeat(Context().get(), req, &resp).ok());
    EXPECT_FALSE(resp.reregister());
    absl::SleepFor(absl::Milliseconds(100));
  }
  absl::StatusOr<std::string> m = common::ScrapeLocal(l.metrics_port);
  EXPECT_NE(m->find("rhythm_learner_leases_expired_total 1"), std::string::npos)
      << "the unnamed lease expired at its deadline";
  EXPECT_NE(m->find("rhythm_learner_leases_outstanding 1"), std::string::npos)
      << "the named one is still out";
  Register(l, "actor-2", "run-1");
  std::vector<v1::PromptLease> again = Lease(l, "actor-2", 1);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].prompt_id(), leases[1].prompt_id()) << "its prompt is issued again";
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0);
}

TEST(LearnerProcess, HeartbeatsDoNotWaitForTheJournalsFsync) {
  // Before, every fsync of the journal held the learner's global lock, so on a slow disk a
  // heartbeat (or a lease, or another stream) waited for whatever rollout was being made
  // durable. Here every fsync takes 400 ms (an LD_PRELOAD'ed fsync, tests/slow_fsync_preload.cc).
  const std::string run = TempRunDir("slow_disk");
  Learner l;
  setenv("LD_PRELOAD", BinaryPath("librhythm_slow_fsync.so").c_str(), 1);
  setenv("RHYTHM_SLOW_FSYNC_MS", "400", 1);
  StartLearner(l, LearnerArgs(run), run + ".log");
  unsetenv("LD_PRELOAD");
  unsetenv("RHYTHM_SLOW_FSYNC_MS");
  Register(l, "actor-1", "run-1");
  std::vector<v1::PromptLease> leases = Lease(l, "actor-1", 1);
  ASSERT_EQ(leases.size(), 1u);
  Stream stream(l, "actor-1");
  const absl::Time sent = absl::Now();
  stream.Send(MakeRollout(leases[0], 1, 0, 1.0));
  stream.Send(MakeRollout(leases[0], 2, 1, 0.0));
  absl::SleepFor(absl::Milliseconds(60));  // the rollouts' fsync is under way
  absl::Duration slowest;
  for (int i = 0; i < 5; ++i) {
    const absl::Time start = absl::Now();
    v1::HeartbeatRequest req;
    req.set_actor_id("actor-1");
    req.set_run_id("run-1");
    v1::HeartbeatResponse resp;
    ASSERT_TRUE(l.stub->Heartbeat(Context().get(), req, &resp).ok());
    EXPECT_FALSE(resp.reregister());
    slowest = std::max(slowest, absl::Now() - start);
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(stream.NextAck().code(), 0);
  const absl::Duration acked = absl::Now() - sent;
  // The disk really was slow (so the heartbeats could have waited), and they did not.
  EXPECT_GE(acked, absl::Milliseconds(350)) << "the ack waits for its fsync";
  EXPECT_LT(slowest, absl::Milliseconds(250)) << "heartbeats do not (before: 740 ms here)";
  EXPECT_EQ(stream.NextAck().code(), 0);
  stream.Close();
  EXPECT_EQ(l.process.Stop(SIGTERM, 30), 0);
}

TEST(LearnerProcess, KillNineThenResumeLosesNothingTrainsNothingTwiceAndVersionsGoForward) {
  const std::string run = TempRunDir("resume");
  Learner l;
  StartLearner(l, LearnerArgs(run), run + ".log");
  Register(l, "actor-1", "run-1");
  std::vector<v1::PromptLease> leases = Lease(l, "actor-1", 3);
  ASSERT_EQ(leases.size(), 3u);
  auto at_version = [](v1::Rollout r, int64_t v) {
    r.mutable_version_spans(0)->set_version(v);
    return r;
  };
  {
    Stream s(l, "actor-1");
    // Group A complete (trains a step: version 1), group B half done, and half of group C
    // generated by version 1: all acked before the crash.
    s.Send(MakeRollout(leases[0], 1, 0, 1.0));
    s.Send(MakeRollout(leases[0], 2, 1, 0.0));
    s.Send(MakeRollout(leases[1], 3, 0, 1.0));
    for (int i = 0; i < 3; ++i) EXPECT_EQ(s.NextAck().code(), 0);
    ASSERT_TRUE(WaitForVersion(l, 1, 60));
    s.Send(at_version(MakeRollout(leases[2], 4, 0, 1.0), 1));
    EXPECT_EQ(s.NextAck().code(), 0);
  }
  EXPECT_EQ(l.process.Stop(SIGKILL, 10), 128 + SIGKILL);

  Learner back;
  std::vector<std::string> args = LearnerArgs(run);
  args.push_back("--resume");
  args.push_back(run);
  StartLearner(back, args, run + ".resumed.log");
  // No checkpoint was written after step 1 (checkpoint_every = 100): the journal replays from
  // the start onto the initial weights, which are published as version 2, not 0: version 1 was
  // published before the crash, and a number never names two sets of weights.
  Register(back, "actor-1", "run-1");
  Stream s(back, "actor-1");
  // The actor resends everything it had sent (it cannot know what survived): all duplicates,
  // the one generated by version 1 included (de-duplication comes before validation; before,
  // it was reported rejected as future_version although it had been acked and was trained).
  for (uint64_t i = 1; i <= 4; ++i) {
    v1::Rollout r = i < 3 ? MakeRollout(leases[0], i, i - 1, i == 2 ? 0.0 : 1.0)
                          : MakeRollout(leases[i - 2], i, 0, 1.0);
    if (i == 4) r = at_version(r, 1);
    s.Send(r);
    v1::RolloutAck ack = s.NextAck();
    EXPECT_EQ(ack.code(), 0) << "rollout " << i << ": " << ack.error_message();
    EXPECT_TRUE(ack.duplicate()) << "rollout " << i << " was acked before the crash";
  }
  // B's second sample was generated by version 1, a version lost in the crash: accepted and
  // judged by its behaviour log-probs (before: rejected as future_version, its work lost).
  s.Send(at_version(MakeRollout(leases[1], 5, 1, 0.0), 1));
  v1::RolloutAck ack = s.NextAck();
  EXPECT_EQ(ack.code(), 0) << ack.error_message();
  EXPECT_FALSE(ack.duplicate());
  s.Send(MakeRollout(leases[2], 6, 1, 0.0));
  EXPECT_EQ(s.NextAck().code(), 0);
  // A (replayed), B and C each train once from version 2: versions 3, 4, 5.
  ASSERT_TRUE(WaitForVersion(back, 5, 60));
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_EQ(LatestVersion(back), 5) << "each group trained exactly once";
  absl::StatusOr<std::string> m = common::ScrapeLocal(back.metrics_port);
  EXPECT_NE(m->find("rhythm_learner_rollouts_accepted_total 2"), std::string::npos);
  EXPECT_NE(m->find("rhythm_learner_rollouts_duplicate_total 4"), std::string::npos);
  s.Close();
  EXPECT_EQ(back.process.Stop(SIGTERM, 30), 0);

  // A clean restart from the final checkpoint: version 5 (its weights are the last published),
  // nothing queued, nothing replayed twice.
  Learner again;
  args = LearnerArgs(run);
  args.push_back("--resume");
  args.push_back(run);
  StartLearner(again, args, run + ".again.log");
  EXPECT_EQ(LatestVersion(again), 5);
  EXPECT_EQ(again.process.Stop(SIGTERM, 30), 0);
}

}  // namespace
}  // namespace rhythm::testing

// One deterministic test per fault class of the campaign (fault_campaign_test.cc), each a few
// seconds, each ending with the same FaultAudit of the journal, dumps and final checkpoint.
//
// kill -9 of the learner + --resume is covered already, with nothing lost or trained twice:
// actor_integration_test (LearnerKilledAndResumedActorsReconnectNothingLostOrDuplicated, real
// actors) and learner_integration_test (KillNineThenResumeLosesNothingTrainsNothingTwiceAnd-
// VersionsGoForward, a scripted client); not repeated here.
#include <signal.h>

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "tests/fault_audit.h"
#include "tests/fault_proxy.h"
#include "tests/loop_procs.h"

namespace rhythm::testing {
namespace {

constexpr int kGroupSize = 2;

std::vector<std::string> LearnerFlags(double heartbeat_timeout_s, double lease_timeout_s,
                                      const std::string& dump_dir) {
  return {"--set",           absl::StrCat("learner.heartbeat_timeout_s=", heartbeat_timeout_s),
          "--set",           absl::StrCat("learner.lease_timeout_s=", lease_timeout_s),
          "--set",           "trainer.max_staleness=1000000",
          "--dump-rollouts", dump_dir};
}

struct OneLearner {
  std::string run;
  int port = 0;
  Proc proc;
  Incarnation inc;
};

void StartOne(OneLearner& l, const std::string& name, double heartbeat_timeout_s,
              double lease_timeout_s) {
  l.run = ::testing::TempDir() + "/fault_" + name;
  std::filesystem::remove_all(l.run);
  std::filesystem::remove_all(l.run + ".out");
  l.port = FreePort();
  l.inc = {l.run + ".out/learner.log", l.run + ".out/dumps"};
  std::filesystem::create_directories(l.run + ".out");
  StartLearner(l.proc, l.run, l.port, false, l.inc.log,
               LearnerFlags(heartbeat_timeout_s, lease_timeout_s, l.inc.dump_dir));
}

double LearnerMetric(OneLearner& l, const std::string& name) {
  return Metric(l.proc.metrics_port, name);
}

// SIGSTOPs `a` at a moment the learner holds at least one lease outstanding (the learner's only
// actor, so they are its leases); the gauge moves every 200 ms, hence the wait. False if no
// such moment came.
bool FreezeHoldingLeases(Proc& a, OneLearner& l) {
  for (int i = 0; i < 40; ++i) {
    kill(a.p.pid(), SIGSTOP);
    absl::SleepFor(absl::Milliseconds(500));
    if (LearnerMetric(l, "rhythm_learner_leases_outstanding") >= 1) return true;
    kill(a.p.pid(), SIGCONT);
    absl::SleepFor(absl::Milliseconds(40 * (1 + i % 5)));
  }
  return false;
}

// The leases of `actor` outstanding just before journal record `end` (0-based): granted, not
// expired, group not yet complete.
std::set<uint64_t> OutstandingBefore(const std::vector<v1::JournalRecord>& j, size_t end,
                                     const std::string& actor) {
  std::set<uint64_t> out;
  std::map<uint64_t, std::set<uint32_t>> samples;
  for (size_t i = 0; i < end; ++i) {
    if (j[i].has_grant() && j[i].grant().actor_id() == actor) {
      out.insert(j[i].grant().lease().lease_id());
    } else if (j[i].has_expiry()) {
      out.erase(j[i].expiry().lease_id());
    } else if (j[i].has_rollout() && out.count(j[i].rollout().group_id())) {
      std::set<uint32_t>& s = samples[j[i].rollout().group_id()];
      s.insert(j[i].rollout().sample_index());
      if (static_cast<int>(s.size()) == kGroupSize) out.erase(j[i].rollout().group_id());
    }
  }
  return out;
}

// Lease id -> prompt index of every grant.
std::map<uint64_t, uint64_t> PromptOfLease(const std::vector<v1::JournalRecord>& j) {
  std::map<uint64_t, uint64_t> out;
  for (const v1::JournalRecord& r : j) {
    if (r.has_grant()) out[r.grant().lease().lease_id()] = r.grant().prompt_index();
  }
  return out;
}

// Whether prompt `prompt` is granted in a record after `after` (0-based), other than `lease`.
bool GrantedAgain(const std::vector<v1::JournalRecord>& j, size_t after, uint64_t prompt,
                  uint64_t lease) {
  for (size_t i = after + 1; i < j.size(); ++i) {
    if (j[i].has_grant() && j[i].grant().prompt_index() == prompt &&
        j[i].grant().lease().lease_id() != lease) {
      return true;
    }
  }
  return false;
}

// From the journal of `run`: `actor` registered twice (a killed run, then its successor), the
// killed run held leases when the successor registered, and each of their prompts was granted
// again after that.
void ExpectOldLeasesReleasedAtReregistration(const std::string& run, const std::string& actor) {
  absl::StatusOr<std::vector<v1::JournalRecord>> j = ReadJournal(run);
  ASSERT_TRUE(j.ok()) << j.status();
  std::vector<size_t> sessions;
  for (size_t i = 0; i < j->size(); ++i) {
    if ((*j)[i].has_session() && (*j)[i].session().actor_id() == actor) sessions.push_back(i);
  }
  ASSERT_EQ(sessions.size(), 2u) << "one registration per run of " << actor;
  const std::set<uint64_t> released = OutstandingBefore(*j, sessions[1], actor);
  EXPECT_FALSE(released.empty()) << "the killed run held leases when its successor registered";
  const std::map<uint64_t, uint64_t> prompt = PromptOfLease(*j);
  for (uint64_t lease : released) {
    EXPECT_TRUE(GrantedAgain(*j, sessions[1], prompt.at(lease), lease))
        << "the prompt of released lease " << lease << " is issued again";
  }
}

void ExpectCleanAudit(const std::string& run, const std::vector<Incarnation>& incarnations,
                      const std::string& what) {
  const FaultAuditReport rep = AuditRun(run, incarnations, kGroupSize);
  std::cout << what << ": " << rep.Summary() << std::endl;
  for (const std::string& p : rep.problems) ADD_FAILURE() << p;
  EXPECT_EQ(rep.lost, 0);
  EXPECT_EQ(rep.duplicated, 0);
  EXPECT_GT(rep.trained, 0);
  if (!::testing::Test::HasFailure()) {
    std::filesystem::remove_all(run);
    std::filesystem::remove_all(run + ".out");
  }
}

void ExpectCleanAudit(const OneLearner& l, const std::string& what) {
  ExpectCleanAudit(l.run, {l.inc}, what);
}

// Timeouts are long here (30 s), so only the re-registration can give the old run's prompts
// back. (A live learner released them this way before c6fa95d too; the next test is the case
// that needed the journaled sessions.)
TEST(FaultRegression, ActorKilledAndRestartedWithItsIdHasItsOldLeasesReleasedAndReissued) {
  OneLearner l;
  StartOne(l, "actor_restart", /*heartbeat_timeout_s=*/30, /*lease_timeout_s=*/30);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  Proc first;
  StartActor(first, l.port, "actor-r", l.run + ".out/actor-1.log");
  ASSERT_TRUE(WaitFor([&] { return LearnerMetric(l, "rhythm_learner_steps_total") >= 1; }, 60));
  ASSERT_TRUE(FreezeHoldingLeases(first, l)) << "caught the actor holding a lease";
  EXPECT_EQ(first.p.Stop(SIGKILL, 10), 128 + SIGKILL);
  Proc second;
  StartActor(second, l.port, "actor-r", l.run + ".out/actor-2.log");
  const double steps = LearnerMetric(l, "rhythm_learner_steps_total");
  ASSERT_TRUE(WaitFor(
      [&] {
        return Metric(second.metrics_port, "rhythm_actor_rollouts_acked_total") >= 1 &&
               LearnerMetric(l, "rhythm_learner_steps_total") >= steps + 3;
      },
      60));
  const ActorReport r = StopActor(second);
  EXPECT_EQ(r.acked + r.rejected, r.sent);
  EXPECT_EQ(LearnerMetric(l, "rhythm_learner_leases_expired_total"), 0)
      << "nothing timed out: the old leases were released when the actor registered again";
  EXPECT_EQ(l.proc.p.Stop(SIGTERM, 60), 0);

  ExpectOldLeasesReleasedAtReregistration(l.run, "actor-r");
  ExpectCleanAudit(l, "actor restart");
}

// The same while the learner is down: kill -9 of the learner with the actor's leases out,
// kill -9 of the actor, the actor restarted (retrying registration) before the learner resumes.
// The resumed learner must know from its journal that the registering run is a new one. Before
// sessions were journaled (c6fa95d) a restarted learner knew no actor's run, so the old run's
// leases stayed out until they timed out (30 s here) and this failed.
TEST(FaultRegression, ActorRestartedWhileTheLearnerWasDownHasItsOldLeasesReleasedAfterTheResume) {
  OneLearner l;
  StartOne(l, "restart_down", /*heartbeat_timeout_s=*/30, /*lease_timeout_s=*/30);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  Proc first;
  StartActor(first, l.port, "actor-d", l.run + ".out/actor-1.log");
  ASSERT_TRUE(WaitFor([&] { return LearnerMetric(l, "rhythm_learner_steps_total") >= 1; }, 60));
  ASSERT_TRUE(FreezeHoldingLeases(first, l)) << "caught the actor holding a lease";
  EXPECT_EQ(l.proc.p.Stop(SIGKILL, 10), 128 + SIGKILL);
  EXPECT_EQ(first.p.Stop(SIGKILL, 10), 128 + SIGKILL);
  Proc second;
  StartActor(second, l.port, "actor-d", l.run + ".out/actor-2.log");
  absl::SleepFor(absl::Milliseconds(300));  // it is retrying its registration
  const Incarnation resumed{l.run + ".out/learner-2.log", l.run + ".out/dumps-2"};
  Proc learner;
  StartLearner(learner, l.run, l.port, /*resume=*/true, resumed.log,
               LearnerFlags(30, 30, resumed.dump_dir));
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  // The checkpoint's queued rollouts alone can make 3 steps (72 queued once generation got
  // faster), so wait for the restarted actor's own rollouts to be acked as well.
  ASSERT_TRUE(WaitFor(
      [&] {
        return Metric(second.metrics_port, "rhythm_actor_rollouts_acked_total") >= 1 &&
               Metric(learner.metrics_port, "rhythm_learner_steps_total") >= 3;
      },
      60))
      << "the resumed learner trains with the restarted actor";
  const ActorReport r = StopActor(second);
  EXPECT_EQ(r.acked + r.rejected, r.sent);
  EXPECT_EQ(Metric(learner.metrics_port, "rhythm_learner_leases_expired_total"), 0)
      << "nothing timed out: the old leases were released when the new run registered";
  EXPECT_EQ(learner.p.Stop(SIGTERM, 60), 0);

  ExpectOldLeasesReleasedAtReregistration(l.run, "actor-d");
  ExpectCleanAudit(l.run, {l.inc, resumed}, "actor restart while the learner was down");
}

// The heartbeat timeout (2 s) expires a frozen actor's leases; another actor takes their
// prompts; after SIGCONT the frozen actor's rollouts for them are answered (rejected as
// unknown_lease, or duplicate when already durable), and nothing is trained twice.
TEST(FaultRegression,
     ActorStoppedPastTheHeartbeatTimeoutLosesItsLeasesAndItsLateRolloutsAreAnswered) {
  OneLearner l;
  StartOne(l, "actor_stop", /*heartbeat_timeout_s=*/2, /*lease_timeout_s=*/30);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  Proc frozen;
  StartActor(frozen, l.port, "actor-s", l.run + ".out/actor-s.log");
  ASSERT_TRUE(WaitFor([&] { return LearnerMetric(l, "rhythm_learner_steps_total") >= 1; }, 60));
  ASSERT_TRUE(FreezeHoldingLeases(frozen, l)) << "caught the actor holding a lease";
  Proc other;
  StartActor(other, l.port, "actor-t", l.run + ".out/actor-t.log");
  ASSERT_TRUE(
      WaitFor([&] { return LearnerMetric(l, "rhythm_learner_leases_expired_total") >= 1; }, 10))
      << "the silent actor's leases expire";
  const double steps = LearnerMetric(l, "rhythm_learner_steps_total");
  ASSERT_TRUE(
      WaitFor([&] { return LearnerMetric(l, "rhythm_learner_steps_total") >= steps + 2; }, 60))
      << "the other actor trains on";
  kill(frozen.p.pid(), SIGCONT);
  EXPECT_TRUE(WaitFor(
      [&] {
        return Metric(frozen.metrics_port, "rhythm_actor_rollouts_sent_total") > 0 &&
               Metric(frozen.metrics_port, "rhythm_actor_unacked_rollouts") == 0 &&
               Metric(frozen.metrics_port, "rhythm_actor_rollouts_acked_total") +
                       Metric(frozen.metrics_port, "rhythm_actor_rollouts_rejected_total") >=
                   Metric(frozen.metrics_port, "rhythm_actor_rollouts_sent_total");
      },
      20))
      << "the woken actor's rollouts are all answered";
  const ActorReport rf = StopActor(frozen), ro = StopActor(other);
  EXPECT_EQ(rf.acked + rf.rejected, rf.sent);
  EXPECT_EQ(ro.acked + ro.rejected, ro.sent);
  std::cout << "woken actor: sent " << rf.sent << " acked " << rf.acked << " rejected "
            << rf.rejected << "; learner: unknown_lease rejections "
            << LearnerMetric(l, "rhythm_learner_rollouts_rejected_total{reason=\"unknown_lease\"}")
            << ", duplicates " << LearnerMetric(l, "rhythm_learner_rollouts_duplicate_total")
            << std::endl;
  EXPECT_EQ(l.proc.p.Stop(SIGTERM, 60), 0);

  absl::StatusOr<std::vector<v1::JournalRecord>> j = ReadJournal(l.run);
  ASSERT_TRUE(j.ok()) << j.status();
  std::map<uint64_t, std::string> holder;
  for (const v1::JournalRecord& r : *j) {
    if (r.has_grant()) holder[r.grant().lease().lease_id()] = r.grant().actor_id();
  }
  const std::map<uint64_t, uint64_t> prompt = PromptOfLease(*j);
  int expired = 0;
  for (size_t i = 0; i < j->size(); ++i) {
    if (!(*j)[i].has_expiry()) continue;
    const uint64_t lease = (*j)[i].expiry().lease_id();
    if (holder[lease] != "actor-s") continue;
    ++expired;
    EXPECT_TRUE(GrantedAgain(*j, i, prompt.at(lease), lease))
        << "the prompt of expired lease " << lease << " is issued again";
  }
  EXPECT_GE(expired, 1) << "the frozen actor's leases expired";
  ExpectCleanAudit(l, "actor SIGSTOP");
}

// A LeasePrompts whose reply is lost (the proxy cuts the connection after the request reached
// the learner): the lease is journaled but its holder never saw it, so it never names it in a
// heartbeat; it expires at its hard deadline although the holder keeps heartbeating, and its
// prompt is issued again and trained. Before hard deadlines, every heartbeat extended all of an
// actor's leases and such a lease stayed out for as long as the actor lived.
TEST(FaultRegression, ALeaseWhoseReplyTheProxyDroppedExpiresAndItsPromptIsTrainedAfterAll) {
  OneLearner l;
  StartOne(l, "reply_drop", /*heartbeat_timeout_s=*/30, /*lease_timeout_s=*/2);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  auto proxy = FaultProxy::Start({l.port, 1});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  auto via = v1::Learner::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*proxy)->port()),
                                                      grpc::InsecureChannelCredentials()));
  auto direct = v1::Learner::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", l.port), grpc::InsecureChannelCredentials()));
  auto ctx = [] {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return c;
  };
  v1::RegisterRequest reg;
  reg.set_actor_id("ghost");
  reg.set_run_id("run-g");
  v1::RegisterResponse reg_resp;
  ASSERT_TRUE(via->Register(ctx().get(), reg, &reg_resp).ok()) << "the proxy forwards";
  (*proxy)->DropNextReply();
  v1::LeaseRequest lease_req;
  lease_req.set_actor_id("ghost");
  lease_req.set_run_id("run-g");
  lease_req.set_max_prompts(1);
  v1::LeaseResponse lease_resp;
  EXPECT_FALSE(via->LeasePrompts(ctx().get(), lease_req, &lease_resp).ok())
      << "the reply never arrives";
  EXPECT_EQ((*proxy)->counters().replies_dropped, 1);
  ASSERT_TRUE(
      WaitFor([&] { return LearnerMetric(l, "rhythm_learner_leases_outstanding") == 1; }, 2))
      << "the learner granted the lease whose reply was lost";
  // The ghost lives on and heartbeats (directly) for 3 s, naming no lease.
  for (int i = 0; i < 15; ++i) {
    v1::HeartbeatRequest hb;
    hb.set_actor_id("ghost");
    hb.set_run_id("run-g");
    v1::HeartbeatResponse hb_resp;
    EXPECT_TRUE(direct->Heartbeat(ctx().get(), hb, &hb_resp).ok());
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(
      WaitFor([&] { return LearnerMetric(l, "rhythm_learner_leases_expired_total") == 1; }, 2))
      << "it expired at its hard deadline";
  Proc actor;
  StartActor(actor, l.port, "actor-real", l.run + ".out/actor.log");
  ASSERT_TRUE(WaitFor([&] { return LearnerMetric(l, "rhythm_learner_steps_total") >= 2; }, 60));
  const ActorReport r = StopActor(actor);
  EXPECT_EQ(r.acked + r.rejected, r.sent);
  EXPECT_EQ(l.proc.p.Stop(SIGTERM, 60), 0);

  absl::StatusOr<std::vector<v1::JournalRecord>> j = ReadJournal(l.run);
  ASSERT_TRUE(j.ok()) << j.status();
  std::vector<size_t> ghost_grants;
  for (size_t i = 0; i < j->size(); ++i) {
    if ((*j)[i].has_grant() && (*j)[i].grant().actor_id() == "ghost") ghost_grants.push_back(i);
  }
  ASSERT_EQ(ghost_grants.size(), 1u);
  const v1::OutstandingLease& g = (*j)[ghost_grants[0]].grant();
  bool expired = false;
  for (const v1::JournalRecord& rec : *j) {
    expired = expired || (rec.has_expiry() && rec.expiry().lease_id() == g.lease().lease_id());
  }
  EXPECT_TRUE(expired) << "the lost lease's expiry is journaled";
  EXPECT_TRUE(GrantedAgain(*j, ghost_grants[0], g.prompt_index(), g.lease().lease_id()))
      << "its prompt is issued again";
  ExpectCleanAudit(l, "dropped lease reply");
}

}  // namespace
}  // namespace rhythm::testing

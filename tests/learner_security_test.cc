// Who may talk to the learner (issue 17), against a real rhythm-learner process over real gRPC,
// with certificates made by openssl in the test:
//   - mutual TLS: a client without a certificate is refused UNAUTHENTICATED on every service
//     (Register, LeasePrompts, the weights), counted by reason; a plaintext client cannot
//     connect; one actor cannot take, heartbeat, lease or stream as another (PERMISSION_DENIED);
//   - sabotage: another actor's invalid rollout naming the victim's lease, a rollout claiming
//     the victim's id, a Register of the victim's id with a new run and a hello as the victim
//     all leave the victim's acked sample in place: its group completes and trains;
//   - bearer tokens over TLS: the token names the identity; none or a wrong one is refused;
//   - limits: id lengths, actors, leases per actor, weight downloads, and a rollout stream that
//     sends nothing is cut by learner.idle_timeout_s while others are served; a stream whose
//     bytes do not parse ends with INVALID_ARGUMENT and is counted;
//   - /metrics with a bearer token refuses scrapes without it;
//   - the shipped deploy/tls/make-certs.sh makes certificates a real learner and a real actor
//     train with over mutual TLS, and an actor without a certificate gets nowhere.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/metrics_server.h"
#include "common/security/test_certs.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/weights.grpc.pb.h"
#include "tests/learner_client.h"
#include "tests/loop_procs.h"
#include "tests/scripted_rollout.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

using common::security::TestCerts;

const TestCerts& Certs() {
  static const TestCerts* certs = [] {
    absl::StatusOr<TestCerts> c = common::security::MakeTestCerts(
        ::testing::TempDir() + "/learner_security_certs", {"actor-a", "actor-b"});
    EXPECT_TRUE(c.ok()) << c.status();
    return new TestCerts(c.ok() ? *c : TestCerts{});
  }();
  return *certs;
}

std::string Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

std::string TempRunDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/learner_security_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

void StartLearner(LearnerUnderTest& l, const std::string& run, std::vector<std::string> extra) {
  std::vector<std::string> args = TinyLearnerArgs(run);
  args.insert(args.end(), extra.begin(), extra.end());
  StartLearnerProcess(l, args, run + ".log");
}

std::vector<std::string> MutualTls() {
  const TestCerts& c = Certs();
  return {"--set", "security.tls_cert=" + c.server_cert, "--set",
          "security.tls_key=" + c.server_key,  "--set", "security.tls_ca=" + c.ca,
          "--set", "security.require_client_cert=true"};
}

// Stubs on a channel of their own. `cert` names a client certificate ("" = none, "rogue" = one
// from a CA the learner does not trust); `token` is sent as a bearer token; plaintext = no TLS.
struct Client {
  std::unique_ptr<v1::Learner::Stub> stub;
  std::unique_ptr<v1::Weights::Stub> weights;
  std::shared_ptr<grpc::Channel> channel;
};

Client Connect(const LearnerUnderTest& l, const std::string& cert, const std::string& token = "",
               bool plaintext = false) {
  const TestCerts& c = Certs();
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (plaintext) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions o;
    std::ifstream ca(c.ca);
    o.pem_root_certs.assign(std::istreambuf_iterator<char>(ca), {});
    if (!cert.empty()) {
      std::ifstream crt(cert == "rogue" ? c.rogue_cert : c.client_cert(cert));
      std::ifstream key(cert == "rogue" ? c.rogue_key : c.client_key(cert));
      o.pem_cert_chain.assign(std::istreambuf_iterator<char>(crt), {});
      o.pem_private_key.assign(std::istreambuf_iterator<char>(key), {});
    }
    creds = grpc::SslCredentials(o);
    if (!token.empty()) {
      creds = grpc::CompositeChannelCredentials(
          creds, grpc::AccessTokenCredentials(token));  // "authorization: Bearer <token>"
    }
  }
  Client out;
  // A fixed 64 KB stream window (no BDP growth): a download nobody reads stays in flight on
  // the learner, as over a slow link.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 65536);
  out.channel =
      grpc::CreateCustomChannel(absl::StrCat("localhost:", l.port), creds, args);
  out.stub = v1::Learner::NewStub(out.channel);
  out.weights = v1::Weights::NewStub(out.channel);
  return out;
}

grpc::Status Register(Client& c, const std::string& actor, const std::string& run = "run-1") {
  v1::RegisterRequest req;
  req.set_actor_id(actor);
  req.set_run_id(run);
  v1::RegisterResponse resp;
  return c.stub->Register(Deadline(10).get(), req, &resp);
}

grpc::Status Lease(Client& c, const std::string& actor, uint32_t n,
                   std::vector<v1::PromptLease>* out = nullptr, const std::string& run = "run-1") {
  v1::LeaseRequest req;
  req.set_actor_id(actor);
  req.set_run_id(run);
  req.set_max_prompts(n);
  v1::LeaseResponse resp;
  grpc::Status s = c.stub->LeasePrompts(Deadline(10).get(), req, &resp);
  if (out) out->assign(resp.leases().begin(), resp.leases().end());
  return s;
}

grpc::Status Heartbeat(Client& c, const std::string& actor, std::vector<uint64_t> renew = {},
                       int64_t* latest = nullptr) {
  v1::HeartbeatRequest req;
  req.set_actor_id(actor);
  req.set_run_id("run-1");
  for (uint64_t id : renew) req.add_renew_lease_ids(id);
  v1::HeartbeatResponse resp;
  grpc::Status s = c.stub->Heartbeat(Deadline(10).get(), req, &resp);
  if (latest) *latest = resp.latest_version();
  return s;
}

grpc::Status Fetch(Client& c) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::FetchWeightsRequest req;
  req.set_version(0);
  auto reader = c.weights->FetchWeights(&ctx, req);
  v1::WeightChunk chunk;
  while (reader->Read(&chunk)) {
  }
  return reader->Finish();
}

// One rollout stream: hello as `actor`, then rollouts; acks read back.
class Stream {
 public:
  Stream(Client& c, const std::string& actor) {
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    stream_ = c.stub->StreamRollouts(&ctx_);
    v1::RolloutStreamRequest hello;
    hello.mutable_hello()->set_actor_id(actor);
    hello.mutable_hello()->set_run_id("run-1");
    stream_->Write(hello);
  }
  v1::RolloutAck Send(const v1::Rollout& r) {
    v1::RolloutStreamRequest req;
    *req.mutable_rollout() = r;
    EXPECT_TRUE(stream_->Write(req));
    v1::RolloutStreamResponse resp;
    while (stream_->Read(&resp)) {
      if (resp.has_ack()) return resp.ack();
    }
    ADD_FAILURE() << "the stream ended: " << Finish().error_message();
    return {};
  }
  grpc::Status Finish() {
    stream_->WritesDone();
    v1::RolloutStreamResponse resp;
    while (stream_->Read(&resp)) {
    }
    return stream_->Finish();
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::RolloutStreamRequest, v1::RolloutStreamResponse>>
      stream_;
};

// The value of one series in a scrape ("name{labels} value"), or -1.
double Series(const std::string& scrape, const std::string& series) {
  const size_t at = scrape.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(scrape.substr(at + series.size() + 2));
}

std::string Scrape(const LearnerUnderTest& l, const std::string& token = "") {
  absl::StatusOr<std::string> s = common::ScrapeLocal(l.metrics_port, "/metrics", token);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

TEST(LearnerSecurity, MutualTlsRefusesStrangersAndImpersonators) {
  LearnerUnderTest l;
  const std::string run = TempRunDir("mtls");
  std::vector<std::string> args = MutualTls();
  args.insert(args.end(), {"--set", "security.metrics_token_file=" +
                                        Write(run + ".metrics-token", "scrape-token\n")});
  StartLearner(l, run, args);

  Client nobody = Connect(l, "");
  EXPECT_EQ(Register(nobody, "actor-x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Lease(nobody, "actor-x", 1).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Fetch(nobody).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  Client rogue = Connect(l, "rogue");
  EXPECT_EQ(Register(rogue, "rogue").error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a certificate from an untrusted CA fails the handshake";
  Client plain = Connect(l, "", "", /*plaintext=*/true);
  EXPECT_EQ(Register(plain, "actor-x").error_code(), grpc::StatusCode::UNAVAILABLE);

  Client a = Connect(l, "actor-a");
  Client b = Connect(l, "actor-b");
  ASSERT_TRUE(Register(a, "actor-a").ok());
  ASSERT_TRUE(Fetch(a).ok()) << "an authenticated actor downloads the weights";
  std::vector<v1::PromptLease> leases;
  ASSERT_TRUE(Lease(a, "actor-a", 1, &leases).ok());
  ASSERT_EQ(leases.size(), 1u);
  // actor-b cannot take actor-a's id, renew its leases, or lease in its name.
  EXPECT_EQ(Register(b, "actor-a", "run-new").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Heartbeat(b, "actor-a", {leases[0].lease_id()}).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Lease(b, "actor-a", 1, nullptr).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  {
    Stream as_victim(b, "actor-a");
    EXPECT_EQ(as_victim.Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // Its own name is fine; leasing before registering is not.
  EXPECT_EQ(Lease(b, "actor-b", 1).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(Register(b, "actor-b").ok());
  EXPECT_TRUE(Heartbeat(b, "actor-b").ok());
  EXPECT_TRUE(Heartbeat(a, "actor-a").ok());

  const std::string refused = Scrape(l);
  EXPECT_NE(refused.find("401 Unauthorized"), std::string::npos) << "no token, no metrics";
  EXPECT_EQ(refused.find("rhythm_learner"), std::string::npos);
  const std::string m = Scrape(l, "scrape-token");
  EXPECT_EQ(Series(m, "rhythm_learner_auth_refused_total{reason=\"no_client_certificate\"}"), 3)
      << m;
  EXPECT_EQ(Series(m, "rhythm_learner_auth_refused_total{reason=\"actor_id_taken\"}"), 1);
  EXPECT_EQ(Series(m, "rhythm_learner_auth_refused_total{reason=\"wrong_identity\"}"), 3);
  EXPECT_EQ(Series(m, "rhythm_learner_streams_ended_total{how=\"refused\"}"), 1);
}

TEST(LearnerSecurity, SabotageLeavesTheVictimsAckedWorkIntact) {
  LearnerUnderTest l;
  const std::string run = TempRunDir("sabotage");
  StartLearner(l, run, MutualTls());
  Client a = Connect(l, "actor-a");
  Client b = Connect(l, "actor-b");
  ASSERT_TRUE(Register(a, "actor-a").ok());
  ASSERT_TRUE(Register(b, "actor-b").ok());
  std::vector<v1::PromptLease> leases;
  ASSERT_TRUE(Lease(a, "actor-a", 1, &leases).ok());
  ASSERT_EQ(leases.size(), 1u);
  const v1::PromptLease& victim = leases[0];
  Stream sa(a, "actor-a");
  ASSERT_EQ(sa.Send(ScriptedRollout(victim, "actor-a", "run-1", 1, 0, 1.0)).code(), 0)
      << "the victim's first sample is acked";

  Stream sb(b, "actor-b");
  // An invalid rollout in its own name that names the victim's lease.
  v1::Rollout bad = ScriptedRollout(victim, "actor-b", "run-1", 7, 1, 0.0);
  bad.set_behaviour_logprobs(0, std::nanf(""));
  v1::RolloutAck ack = sb.Send(bad);
  EXPECT_EQ(ack.reject_reason(), v1::REJECT_REASON_NON_FINITE) << ack.error_message();
  // A valid one in its own name for the victim's lease.
  ack = sb.Send(ScriptedRollout(victim, "actor-b", "run-1", 8, 1, 0.0));
  EXPECT_EQ(ack.reject_reason(), v1::REJECT_REASON_LEASE_MISMATCH) << ack.error_message();
  // One claiming to be the victim.
  ack = sb.Send(ScriptedRollout(victim, "actor-a", "run-1", 9, 1, 0.0));
  EXPECT_EQ(ack.reject_reason(), v1::REJECT_REASON_PERMISSION_DENIED) << ack.error_message();
  EXPECT_EQ(ack.code(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  // A new run of the victim's id, which would release all its leases.
  EXPECT_EQ(Register(b, "actor-a", "run-evil").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The victim's own rollout must match its lease's prompt.
  v1::Rollout wrong_prompt = ScriptedRollout(victim, "actor-a", "run-1", 10, 1, 0.0);
  wrong_prompt.set_prompt_id(victim.prompt_id() + 1);
  ack = sa.Send(wrong_prompt);
  EXPECT_EQ(ack.reject_reason(), v1::REJECT_REASON_LEASE_MISMATCH) << ack.error_message();
  v1::Rollout wrong_tokens = ScriptedRollout(victim, "actor-a", "run-1", 11, 1, 0.0);
  wrong_tokens.add_prompt_token_ids(5);
  ack = sa.Send(wrong_tokens);
  EXPECT_EQ(ack.reject_reason(), v1::REJECT_REASON_LEASE_MISMATCH) << ack.error_message();

  // The victim's second sample completes the group with its first: version 1 trains on both.
  ack = sa.Send(ScriptedRollout(victim, "actor-a", "run-1", 2, 1, 0.0));
  EXPECT_EQ(ack.code(), 0) << ack.error_message();
  int64_t latest = 0;
  for (int i = 0; i < 300 && latest < 1; ++i) {
    ASSERT_TRUE(Heartbeat(a, "actor-a", {}, &latest).ok());
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(latest, 1) << "the group with the victim's acked sample trained; see " << l.log;
  const std::string m = Scrape(l);
  EXPECT_EQ(Series(m, "rhythm_learner_rollouts_rejected_total{reason=\"lease_mismatch\"}"), 3)
      << m;
  EXPECT_EQ(Series(m, "rhythm_learner_rollouts_rejected_total{reason=\"permission_denied\"}"), 1);
  EXPECT_EQ(Series(m, "rhythm_learner_leases_expired_total"), 0) << "no lease was released";
  sa.Finish();
  sb.Finish();
}

TEST(LearnerSecurity, BearerTokensNameTheActor) {
  LearnerUnderTest l;
  const std::string run = TempRunDir("tokens");
  const TestCerts& c = Certs();
  StartLearner(l, run,
               {"--set", "security.tls_cert=" + c.server_cert, "--set",
                "security.tls_key=" + c.server_key, "--set",
                "security.accepted_tokens_file=" +
                    Write(run + ".tokens", "actors token-for-actors\nops token-for-ops\n")});
  Client actors = Connect(l, "", "token-for-actors");
  Client ops = Connect(l, "", "token-for-ops");
  Client none = Connect(l, "");
  Client wrong = Connect(l, "", "token-for-nobody");
  ASSERT_TRUE(Register(actors, "actor-1").ok());
  ASSERT_TRUE(Lease(actors, "actor-1", 1).ok());
  EXPECT_EQ(Register(none, "actor-2").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status bad = Register(wrong, "actor-2");
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(bad.error_message().find("token-for"), std::string::npos) << bad.error_message();
  EXPECT_EQ(Register(ops, "actor-1", "run-2").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Heartbeat(ops, "actor-1").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  const std::string m = Scrape(l);
  EXPECT_EQ(Series(m, "rhythm_learner_auth_refused_total{reason=\"no_credentials\"}"), 1) << m;
  EXPECT_EQ(Series(m, "rhythm_learner_auth_refused_total{reason=\"bad_token\"}"), 1);
  // The token never reaches the log.
  std::ifstream log(l.log);
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_EQ(text.find("token-for"), std::string::npos);
}

// Sends hello, then bytes that are not a RolloutStreamRequest, on a raw stream.
grpc::Status SendGarbage(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto wait = [&cq] {
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    return ok;
  };
  auto call = stub.PrepareCall(&ctx, "/rhythm.v1.Learner/StreamRollouts", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  wait();
  v1::RolloutStreamRequest hello;
  hello.mutable_hello()->set_actor_id("actor-1");
  hello.mutable_hello()->set_run_id("run-1");
  const std::string bytes = hello.SerializeAsString();
  for (const std::string& m : {bytes, std::string("\xff\xff\xff\xff\xff", 5)}) {
    grpc::Slice slice(m);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    wait();
  }
  grpc::ByteBuffer reply;  // the status comes after the learner's messages are read
  do {
    call->Read(&reply, reinterpret_cast<void*>(3));
  } while (wait());
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  wait();
  return status;
}

TEST(LearnerSecurity, LimitsAndIdleStreams) {
  LearnerUnderTest l;
  const std::string run = TempRunDir("limits");
  StartLearner(l, run,
               {"--set", "learner.idle_timeout_s=1", "--set", "learner.max_actors=3", "--set",
                "learner.max_id_bytes=64", "--set", "learner.max_leases_per_actor=2", "--set",
                "learner.max_weight_downloads=1", "--set", "transport.chunk_bytes=65536",
                // 8 MB of weights: more than HTTP/2 lets a reader that does not read buffer.
                "--set", "model.tiny.hidden_size=256", "--set", "model.tiny.intermediate_size=1024",
                "--set", "model.tiny.num_heads=4", "--set", "model.tiny.num_kv_heads=2"});
  Client c = Connect(l, "", "", /*plaintext=*/true);
  grpc::Status long_id = Register(c, std::string(65, 'x'));
  EXPECT_EQ(long_id.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(long_id.error_message().find("actor_id is 65 bytes"), std::string::npos)
      << long_id.error_message();
  for (const char* actor : {"actor-1", "actor-2", "actor-3"}) ASSERT_TRUE(Register(c, actor).ok());
  EXPECT_EQ(Register(c, "actor-4").error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(Register(c, "actor-1", "run-1").ok()) << "a known actor may register again";

  std::vector<v1::PromptLease> leases;
  ASSERT_TRUE(Lease(c, "actor-1", 5, &leases).ok());
  EXPECT_EQ(leases.size(), 2u);
  ASSERT_TRUE(Lease(c, "actor-1", 5, &leases).ok());
  EXPECT_EQ(leases.size(), 0u) << "max_leases_per_actor";

  // One download at a time: a second, while the first is unread, is refused.
  {
    grpc::ClientContext ctx;
    v1::FetchWeightsRequest req;
    auto reader = c.weights->FetchWeights(&ctx, req);
    v1::WeightChunk chunk;
    ASSERT_TRUE(reader->Read(&chunk)) << "the first download started";
    EXPECT_EQ(Fetch(c).error_code(), grpc::StatusCode::UNAVAILABLE);
    ctx.TryCancel();
    reader->Finish();
  }
  for (int i = 0; i < 50 && !Fetch(c).ok(); ++i) absl::SleepFor(absl::Milliseconds(100));
  EXPECT_TRUE(Fetch(c).ok()) << "free again once the first ended";

  // Twenty streams that say hello and half-close end as half_close; twenty that say hello and
  // then nothing are cut after ~1 s, and the learner answers everyone else meanwhile.
  std::vector<std::thread> idle;
  std::atomic<int> cut{0};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    idle.emplace_back([&] {
      Stream s(c, "actor-2");
      s.Finish();
    });
  }
  for (std::thread& t : idle) t.join();
  idle.clear();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<
      grpc::ClientReaderWriter<v1::RolloutStreamRequest, v1::RolloutStreamResponse>>>
      streams;
  for (int i = 0; i < 20; ++i) {
    contexts.push_back(Deadline(30));
    streams.push_back(c.stub->StreamRollouts(contexts.back().get()));
    v1::RolloutStreamRequest hello;
    hello.mutable_hello()->set_actor_id("actor-2");
    hello.mutable_hello()->set_run_id("run-1");
    ASSERT_TRUE(streams.back()->Write(hello));
  }
  EXPECT_TRUE(Heartbeat(c, "actor-3").ok()) << "served while the idle streams are open";
  for (auto& s : streams) {
    v1::RolloutStreamResponse resp;
    while (s->Read(&resp)) {
    }
    // The learner cancels the call, so the client sees CANCELLED (the learner counts why).
    if (s->Finish().error_code() == grpc::StatusCode::CANCELLED) ++cut;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(cut.load(), 20);
  EXPECT_LT(seconds, 10) << "cut by learner.idle_timeout_s = 1 (checked every 0.2 s)";

  EXPECT_EQ(SendGarbage(c.channel).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The client sees CANCELLED as soon as the learner cancels; the learner's handler counts
  // the end a moment later.
  std::string m;
  for (int i = 0; i < 50; ++i) {
    m = Scrape(l);
    if (Series(m, "rhythm_learner_streams_ended_total{how=\"idle\"}") >= 20 &&
        Series(m, "rhythm_learner_streams_ended_total{how=\"unparseable\"}") >= 1) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(Series(m, "rhythm_learner_streams_ended_total{how=\"idle\"}"), 20) << m;
  EXPECT_EQ(Series(m, "rhythm_learner_streams_ended_total{how=\"half_close\"}"), 20);
  EXPECT_EQ(Series(m, "rhythm_learner_streams_ended_total{how=\"unparseable\"}"), 1);
  EXPECT_EQ(Series(m, "rhythm_learner_limit_refusals_total{limit=\"max_id_bytes\"}"), 1);
  EXPECT_EQ(Series(m, "rhythm_learner_limit_refusals_total{limit=\"max_actors\"}"), 1);
  EXPECT_EQ(Series(m, "rhythm_learner_limit_refusals_total{limit=\"max_leases_per_actor\"}"), 1);
  EXPECT_GE(Series(m, "rhythm_learner_limit_refusals_total{limit=\"max_weight_downloads\"}"), 1);
  EXPECT_EQ(Series(m, "rhythm_learner_limit_refusals_total{limit=\"idle_timeout\"}"), 20);
}

int Threads(int pid) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"))) {
    (void)e;
    ++n;
  }
  return n;
}

// Issue 17: 300 idle streams held 614 threads. The thread quota (learner.max_concurrent_rpcs)
// bounds the streams served at once; the others wait, and each is cut by
// learner.idle_timeout_s once served.
// A /metrics client trickling one byte at a time does not hold up scrapes either.
TEST(LearnerSecurity, IdleStreamsHoldABoundedNumberOfThreads) {
  LearnerUnderTest l;
  const std::string run = TempRunDir("threads");
  StartLearner(l, run, {"--set", "learner.max_concurrent_rpcs=32", "--set",
                        "learner.idle_timeout_s=4"});
  const int before = Threads(l.process.pid());
  Client c = Connect(l, "", "", /*plaintext=*/true);
  ASSERT_TRUE(Register(c, "actor-1").ok());
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<
      grpc::ClientReaderWriter<v1::RolloutStreamRequest, v1::RolloutStreamResponse>>>
      streams;
  for (int i = 0; i < 300; ++i) {
    contexts.push_back(Deadline(60));
    streams.push_back(c.stub->StreamRollouts(contexts.back().get()));
    v1::RolloutStreamRequest hello;
    hello.mutable_hello()->set_actor_id("actor-1");
    hello.mutable_hello()->set_run_id("run-1");
    streams.back()->Write(hello);
  }
  // A trickling /metrics client: one byte now, more later.
  const int trickle = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(l.metrics_port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  ASSERT_EQ(connect(trickle, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(send(trickle, "G", 1, 0), 1);
  absl::SleepFor(absl::Seconds(2));
  const int during = Threads(l.process.pid());
  const auto scrape_start = std::chrono::steady_clock::now();
  const std::string m = Scrape(l);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - scrape_start).count(),
            1.0)
      << "a trickling client does not hold up a scrape";
  EXPECT_NE(m.find("rhythm_learner_policy_version"), std::string::npos);
  // Each stream served holds a gRPC thread and its writer thread: at most 2 x 32, plus gRPC's
  // own few. (Before the quota: 614 threads for 300 streams.)
  EXPECT_LE(during - before, 2 * 32 + 8)
      << before << " threads before, " << during << " with 300 streams";
  std::printf("learner threads: %d before, %d with 300 idle streams (max_concurrent_rpcs 32)\n",
              before, during);
  for (auto& s : streams) {
    v1::RolloutStreamResponse resp;
    while (s->Read(&resp)) {
    }
    s->Finish();
  }
  EXPECT_GE(Series(Scrape(l), "rhythm_learner_streams_ended_total{how=\"idle\"}"), 1);
  char buf[16];
  EXPECT_LE(recv(trickle, buf, sizeof buf, 0), 0) << "the trickling client was cut";
  close(trickle);
}

TEST(LearnerSecurity, TheShippedScriptsCertificatesRunTheLoopOverMutualTls) {
  const std::string dir = ::testing::TempDir() + "/learner_security_script";
  std::filesystem::remove_all(dir);
  const std::string script = std::string(RHYTHM_SOURCE_DIR) + "/deploy/tls/make-certs.sh";
  ASSERT_EQ(std::system(absl::StrCat(script, " ", dir, " localhost rhythm-actor,other > ", dir,
                                     ".log 2>&1")
                            .c_str()),
            0)
      << "see " << dir << ".log";
  const std::string run = TempRunDir("script_loop");
  const int learner_port = FreePort();
  Proc learner;
  StartLearner(learner, run, learner_port, false, run + ".log",
               {"--set",
                "security.tls_cert=" + dir + "/learner.crt", "--set",
                "security.tls_key=" + dir + "/learner.key", "--set", "security.tls_ca=" + dir +
                "/ca.crt", "--set", "security.require_client_cert=true", "--set",
                "security.metrics_token_file=" + dir + "/metrics-token", "--set",
                "trainer.steps=2"});
  ASSERT_GT(learner.metrics_port, 0);
  auto tls = [&](const std::string& who) {
    return std::vector<std::string>{"--set", "security.tls_ca=" + dir + "/ca.crt",
                                    "--set", "security.tls_server_name=localhost",
                                    "--set", "security.tls_cert=" + dir + "/" + who + ".crt",
                                    "--set", "security.tls_key=" + dir + "/" + who + ".key"};
  };
  Proc stranger;
  StartActor(stranger, learner_port, "stranger", run + ".stranger.log",
             {"--set", "security.tls_ca=" + dir + "/ca.crt", "--set",
              "security.tls_server_name=localhost"});
  Proc actor;
  StartActor(actor, learner_port, "rhythm-actor", run + ".actor.log", tls("rhythm-actor"));
  std::ifstream token_file(dir + "/metrics-token");
  std::string token;
  token_file >> token;
  auto version = [&] {
    absl::StatusOr<std::string> m = common::ScrapeLocal(learner.metrics_port, "/metrics", token);
    return m.ok() ? Series(*m, "rhythm_learner_policy_version") : -1;
  };
  EXPECT_TRUE(WaitFor([&] { return version() >= 2; }, 120))
      << "the actor with the script's certificate trains the learner; see " << run << ".log";
  absl::StatusOr<std::string> m = common::ScrapeLocal(learner.metrics_port, "/metrics", token);
  ASSERT_TRUE(m.ok());
  EXPECT_GE(Series(*m, "rhythm_learner_auth_refused_total{reason=\"no_client_certificate\"}"), 1)
      << "the actor without a certificate was refused";
  EXPECT_EQ(Metric(stranger.metrics_port, "rhythm_actor_rollouts_acked_total"), 0);
  stranger.p.Stop(SIGTERM, 30);
  actor.p.Stop(SIGTERM, 30);
  learner.p.Stop(SIGTERM, 60);
}

}  // namespace
}  // namespace rhythm::testing

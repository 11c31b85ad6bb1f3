// The actor's weight sources (weight_source.h): the fallback's choice between the group and
// gRPC against fake inner sources; the gRPC source against a real Weights service on
// 127.0.0.1 (TestHost): the open watch decides what is newer, the version being downloaded
// stays pinned however many follow, Pause lets go of the learner's pins; the group source and
// the real fallback over real Gloo.
#include "common/weights/weight_source.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>

#include "common/weights/test_host.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace rhythm::common::weights {
namespace {


bool Eventually(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time end = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

using Result = absl::StatusOr<std::optional<WeightUpdate>>;

WeightUpdate Update(int64_t version, v1::TransportKind transport) {
  WeightUpdate u;
  u.announcement.set_version(version);
  u.bytes = "bytes of " + std::to_string(version);
  u.transport = transport;
  return u;
}

// A source that answers from a script (then nullopt) and records what it was asked.
class FakeSource final : public WeightSource {
 public:
  Result Newer(int64_t have) override {
    asked.push_back(have);
    if (script.empty()) return std::nullopt;
    Result r = std::move(script.front());
    script.pop_front();
    return r;
  }
  bool Connected() const override { return connected; }
  void Pause() override { ++pauses; }
  void Recycle(std::string bytes) override { recycled.push_back(std::move(bytes)); }

  std::deque<Result> script;
  bool connected = false;
  std::vector<int64_t> asked;
  int pauses = 0;
  std::vector<std::string> recycled;
};

struct Fallback {
  Fallback() : metrics(registry) {
    auto p = std::make_unique<FakeSource>();
    auto f = std::make_unique<FakeSource>();
    group = p.get();
    grpc = f.get();
    source = std::make_unique<FallbackWeightSource>(std::move(p), std::move(f), &metrics);
  }
  double fallbacks() { return metrics.sync.fallbacks.Value(); }

  prometheus::Registry registry;
  ActorWeightMetrics metrics;
  FakeSource* group;
  FakeSource* grpc;
  std::unique_ptr<FallbackWeightSource> source;
};

TEST(FallbackWeightSourceTest, TheFirstWeightsComeFromTheFallbackEvenWithTheGroupConnected) {
  Fallback f;
  f.group->connected = true;  // connected, but nothing broadcast since we joined
  f.grpc->script.push_back(Update(3, v1::TRANSPORT_KIND_GRPC));
  Result r = f.source->Newer(-1);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->announcement.version(), 3);
  EXPECT_EQ((*r)->transport, v1::TRANSPORT_KIND_GRPC);
  EXPECT_EQ(f.group->asked, std::vector<int64_t>{-1});
  EXPECT_EQ(f.grpc->asked, std::vector<int64_t>{-1});
  EXPECT_EQ(f.fallbacks(), 1);
}

TEST(FallbackWeightSourceTest, WhileTheGroupIsConnectedOnlyItIsAskedAndTheFallbackIsPaused) {
  Fallback f;
  f.group->connected = true;
  f.group->script.push_back(std::nullopt);
  f.group->script.push_back(Update(4, v1::TRANSPORT_KIND_GLOO));
  Result r = f.source->Newer(3);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(f.grpc->pauses, 1) << "the watch is let go while the group delivers";
  r = f.source->Newer(3);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->announcement.version(), 4);
  EXPECT_EQ((*r)->transport, v1::TRANSPORT_KIND_GLOO);
  EXPECT_TRUE(f.grpc->asked.empty()) << "gRPC is never asked while the group is connected";
  EXPECT_EQ(f.fallbacks(), 0);
  f.source->Recycle("spent");
  EXPECT_EQ(f.group->recycled, std::vector<std::string>{"spent"}) << "buffers go to the group";
}

TEST(FallbackWeightSourceTest, WhileTheGroupIsDisconnectedTheFallbackIsAskedAndCounted) {
  Fallback f;
  f.grpc->script.push_back(Update(5, v1::TRANSPORT_KIND_GRPC));
  Result r = f.source->Newer(4);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->announcement.version(), 5);
  EXPECT_EQ(f.group->asked, std::vector<int64_t>{4}) << "the group is asked first";
  EXPECT_EQ(f.grpc->asked, std::vector<int64_t>{4});
  EXPECT_EQ(f.grpc->pauses, 0);
  EXPECT_EQ(f.fallbacks(), 1);
  // Nothing newer anywhere: nullopt, nothing counted.
  r = f.source->Newer(5);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value());
  EXPECT_EQ(f.fallbacks(), 1);
}

TEST(FallbackWeightSourceTest, AVersionTheGroupReceivedWinsEvenAfterItDisconnected) {
  Fallback f;
  f.group->script.push_back(Update(6, v1::TRANSPORT_KIND_GLOO));  // received, then it broke
  f.grpc->script.push_back(Update(7, v1::TRANSPORT_KIND_GRPC));
  Result r = f.source->Newer(5);
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->announcement.version(), 6);
  EXPECT_TRUE(f.grpc->asked.empty());
  EXPECT_EQ(f.fallbacks(), 0);
}

TEST(FallbackWeightSourceTest, TheFallbacksErrorIsTheAnswer) {
  Fallback f;
  f.grpc->script.push_back(absl::UnavailableError("weights: no version announcement"));
  Result r = f.source->Newer(2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_EQ(f.fallbacks(), 0);
}

GrpcWeightSource::Options GrpcOptions(ActorWeightMetrics* metrics = nullptr) {
  GrpcWeightSource::Options o;
  o.actor_id = "actor";
  o.announce_timeout = absl::Seconds(10);
  o.reconnect = {absl::Milliseconds(20), absl::Milliseconds(100), 2.0, 0.5};
  o.metrics = metrics;
  return o;
}

// Newer until it returns a version or `timeout` passes.
Result NewerEventually(WeightSource& s, int64_t have, absl::Duration timeout = absl::Seconds(10)) {
  Result r = std::optional<WeightUpdate>();
  Eventually(
      [&] {
        r = s.Newer(have);
        return !r.ok() || r->has_value();
      },
      timeout);
  return r;
}

TEST(GrpcWeightSourceTest, TheOpenWatchDecidesWhatIsNewerAndNothingIsFetchedOtherwise) {
  std::atomic<int> chunks{0};
  TestHostOptions ho;
  ho.chunk_hook = [&](v1::WeightChunk&) {
    ++chunks;
    return true;
  };
  TestHost host(ho);
  const std::string v1_bytes = RandomBytes(4000, 1);
  host.Publish(1, v1_bytes);
  auto stub = WeightsStub(host.address());
  prometheus::Registry registry;
  ActorWeightMetrics metrics(registry);
  GrpcWeightSource source(*stub, GrpcOptions(&metrics));

  Result r = source.Newer(-1);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->announcement.version(), 1);
  EXPECT_EQ((*r)->bytes, v1_bytes);
  EXPECT_EQ((*r)->transport, v1::TRANSPORT_KIND_GRPC);
  EXPECT_TRUE(source.Connected());
  const int fetched = chunks.load();
  EXPECT_GE(fetched, 1);
  for (int i = 0; i < 5; ++i) {
    r = source.Newer(1);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->has_value());
  }
  EXPECT_EQ(chunks.load(), fetched) << "nothing newer announced: nothing fetched";

  const std::string v2_bytes = RandomBytes(4000, 2);
  host.Publish(2, v2_bytes);
  r = NewerEventually(source, 1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  EXPECT_EQ((*r)->announcement.version(), 2);
  EXPECT_EQ((*r)->bytes, v2_bytes);
}

TEST(GrpcWeightSourceTest, TheVersionBeingDownloadedStaysPinnedHoweverManyFollow) {
  // keep_versions 1: a version is evicted as soon as the next is published. Versions 4..6 are
  // published while version 3 is being downloaded and the download's stream breaks there; the
  // resumed FetchWeights still finds version 3 (only the open watch holds it by then).
  TestHost* host_ptr = nullptr;
  std::atomic<bool> published_during{false};
  TestHostOptions ho;
  ho.keep_versions = 1;
  ho.chunk_bytes = 1024;
  ho.chunk_hook = [&](v1::WeightChunk& c) {
    if (c.version() == 3 && c.index() == 1 && !published_during.exchange(true)) {
      for (int64_t v = 4; v <= 6; ++v) host_ptr->Publish(v, RandomBytes(8192, 100 + v));
      return false;  // the connection drops here
    }
    return true;
  };
  TestHost host(ho);
  host_ptr = &host;
  host.Publish(1, RandomBytes(8192, 101));
  auto stub = WeightsStub(host.address());
  GrpcWeightSource source(*stub, GrpcOptions());
  Result r = source.Newer(-1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  ASSERT_EQ((*r)->announcement.version(), 1);

  // Versions 2 and 3 follow; the open watch announces them, but its first (pinned)
  // announcement is still 1, so the source reopens it to pin the newest before downloading.
  host.Publish(2, RandomBytes(8192, 102));
  const std::string v3_bytes = RandomBytes(8192, 103);
  host.Publish(3, v3_bytes);
  r = NewerEventually(source, 1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  ASSERT_EQ((*r)->announcement.version(), 3) << "the newest when the watch was reopened";
  EXPECT_TRUE(published_during.load()) << "versions were published during the download";
  EXPECT_EQ((*r)->bytes, v3_bytes);
  // The reopened watch let go of version 1.
  EXPECT_TRUE(Eventually([&] { return host.store().Get(1) == nullptr; }));

  r = NewerEventually(source, 3);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  EXPECT_EQ((*r)->announcement.version(), 6);
}

TEST(GrpcWeightSourceTest, PauseLetsGoOfTheWatchAndNewerOpensItAgain) {
  TestHostOptions ho;
  ho.keep_versions = 1;
  TestHost host(ho);
  host.Publish(1, RandomBytes(1000, 1));
  auto stub = WeightsStub(host.address());
  GrpcWeightSource source(*stub, GrpcOptions());
  Result r = source.Newer(-1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  source.Pause();
  EXPECT_FALSE(source.Connected());
  host.Publish(2, RandomBytes(1000, 2));  // evicts version 1
  EXPECT_TRUE(Eventually([&] { return host.store().Get(1) == nullptr; }))
      << "no open watch holds version 1 any more";
  const std::string v3_bytes = RandomBytes(1000, 3);
  host.Publish(3, v3_bytes);
  r = source.Newer(1);  // opens the watch again and waits for its announcement
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  EXPECT_EQ((*r)->announcement.version(), 3);
  EXPECT_EQ((*r)->bytes, v3_bytes);
  EXPECT_TRUE(source.Connected());
}

TEST(GrpcWeightSourceTest, WithoutALearnerFirstWeightsAreUnavailableAndWeightsInHandStay) {
  // Port 1 on loopback: refused at once.
  auto stub = WeightsStub("127.0.0.1:1");
  GrpcWeightSource::Options o = GrpcOptions();
  o.announce_timeout = absl::Milliseconds(300);
  GrpcWeightSource source(*stub, o);
  Result r = source.Newer(-1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_FALSE(source.Connected());
  r = source.Newer(4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->has_value()) << "with weights in hand: nothing known newer, no wait";
  source.Stop();
  EXPECT_EQ(source.Newer(4).status().code(), absl::StatusCode::kCancelled);
}

TEST(GroupWeightSourceTest, AMemberHandsOverEachBroadcastVersionOnce) {
  TestHostOptions ho;
  ho.gloo_group = true;
  TestHost host(ho);
  auto stub = WeightsStub(host.address());
  GroupWeightSource::Options o;
  o.actor_id = "member";
  o.kind = v1::TRANSPORT_KIND_GLOO;
  o.collective.host = "127.0.0.1";
  GroupWeightSource source(*stub, o);
  ASSERT_TRUE(host.WaitForGroupSize(1, absl::Seconds(30)));
  ASSERT_TRUE(Eventually([&] { return source.Connected(); }, absl::Seconds(30)));
  const std::string v1_bytes = RandomBytes(30000, 7);
  host.Publish(1, v1_bytes);
  Result r = NewerEventually(source, -1, absl::Seconds(30));
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  EXPECT_EQ((*r)->announcement.version(), 1);
  EXPECT_EQ((*r)->bytes, v1_bytes);
  EXPECT_EQ((*r)->transport, v1::TRANSPORT_KIND_GLOO);
  source.Recycle(std::move((*r)->bytes));
  r = source.Newer(1);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->has_value()) << "handed over once";
}

TEST(FallbackWeightSourceTest, ALearnerWithoutAGroupServesTheActorOverGrpc) {
  TestHost host({});  // transport.kind grpc on the learner: no group
  const std::string v1_bytes = RandomBytes(5000, 8);
  host.Publish(1, v1_bytes);
  auto stub = WeightsStub(host.address());
  prometheus::Registry registry;
  ActorWeightMetrics metrics(registry);
  v1::TransportConfig t;
  t.set_kind(v1::TRANSPORT_KIND_GLOO);
  t.set_collective_host("127.0.0.1");
  ActorWeightSourceOptions o;
  o.actor_id = "actor";
  o.reconnect = {absl::Milliseconds(20), absl::Milliseconds(100), 2.0, 0.5};
  o.metrics = &metrics;
  std::unique_ptr<WeightSource> source = NewActorWeightSource(*stub, t, o);
  Result r = source->Newer(-1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  EXPECT_EQ((*r)->bytes, v1_bytes);
  EXPECT_EQ((*r)->transport, v1::TRANSPORT_KIND_GRPC);
  EXPECT_EQ(metrics.sync.fallbacks.Value(), 1);
  host.Publish(2, RandomBytes(5000, 9));
  r = NewerEventually(*source, 1);
  ASSERT_TRUE(r.ok() && r->has_value()) << r.status();
  EXPECT_EQ((*r)->announcement.version(), 2);
  EXPECT_EQ(metrics.sync.fallbacks.Value(), 2);
}

}  // namespace
}  // namespace rhythm::common::weights

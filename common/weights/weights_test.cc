// Weight transport in one process, over real gRPC on 127.0.0.1 and real Gloo: the version
// store, gRPC download (bit-exact per dtype, resume, refetch, slow readers), and the broadcast
// group (bit-exact per dtype, joining mid-run, fallback when the learner has no group).
// Killing and stalling member processes is in tests/weight_group_test.cc.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "ATen/ATen.h"
#include "absl/synchronization/mutex.h"
#include "common/crc32c.h"
#include "common/model/flat_weights.h"
#include "common/model/transformer.h"
#include "common/weights/communicator.h"
#include "common/weights/test_host.h"
#include "common/weights/weight_client.h"
#include "gtest/gtest.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::weights {
namespace {


std::unique_ptr<model::Transformer> TinyModel(uint64_t seed) {
  v1::TinyModelConfig tiny;
  tiny.set_hidden_size(32);
  tiny.set_num_layers(2);
  tiny.set_num_heads(4);
  tiny.set_num_kv_heads(2);
  tiny.set_intermediate_size(48);
  tiny.set_max_seq_len(32);
  auto m = model::Transformer::RandomInit(model::FromTinyConfig(tiny, 64, 1, 2), seed);
  EXPECT_TRUE(m.ok()) << m.status();
  return std::move(*m);
}

// Every parameter of `a` equals `b`'s after rounding through `dtype`.
void ExpectSameWeights(const model::Transformer& a, const model::Transformer& b,
                       v1::WireDType dtype) {
  auto pa = a.NamedParameters();
  auto pb = b.NamedParameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& [name, t] : pa) {
    at::Tensor want = dtype == v1::WIRE_DTYPE_BF16 ? t.to(at::kBFloat16).to(at::kFloat) : t;
    EXPECT_TRUE(at::equal(want, pb.at(name))) << name;
  }
}

TEST(VersionStoreTest, KeepsNewestVersionsAndReadersKeepTheirs) {
  VersionStore store(2, 10, 100);
  auto v1p = store.Publish(1, {}, RandomBytes(25, 1), v1::WIRE_DTYPE_FP32);
  EXPECT_EQ(v1p->announcement.num_chunks(), 3u);
  EXPECT_EQ(v1p->ChunkEnd(2), 25u);
  EXPECT_EQ(v1p->announcement.crc32c(), Crc32c(v1p->bytes));
  store.Publish(2, {}, RandomBytes(5, 2), v1::WIRE_DTYPE_FP32);
  store.Publish(3, {}, RandomBytes(5, 3), v1::WIRE_DTYPE_FP32);
  EXPECT_NE(store.Get(2), nullptr);
  EXPECT_EQ(store.Latest()->announcement.version(), 3);
  EXPECT_EQ(v1p->bytes.size(), 25u) << "a reader's version outlives its eviction";
  EXPECT_EQ(store.Get(1), v1p) << "and stays available to others while it is held";
  v1p.reset();
  EXPECT_EQ(store.Get(1), nullptr) << "only the newest 2 are kept once nobody holds it";
  EXPECT_EQ(store.WaitNewer(3, absl::Milliseconds(10))->announcement.version(), 3);
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(50));
    store.Publish(4, {}, "x", v1::WIRE_DTYPE_FP32);
  });
  EXPECT_EQ(store.WaitNewer(3, absl::Seconds(10))->announcement.version(), 4);
  later.join();
}

class GrpcDtypeTest : public ::testing::TestWithParam<v1::WireDType> {};

TEST_P(GrpcDtypeTest, EveryDtypeArrivesBitExact) {
  TestHostOptions o;
  o.chunk_bytes = 1000;  // many chunks, the last one short
  TestHost host(o);
  auto sender = TinyModel(1);
  model::FlatWeights flat = model::FlattenWeights(*sender, GetParam());
  host.store().Publish(5, flat.tensors, flat.bytes, GetParam());
  auto stub = WeightsStub(host.address());
  for (int streams : {1, 3}) {
    FetchOptions fo;
    fo.streams = streams;
    auto got = FetchOverGrpc(*stub, host.store().Latest()->announcement, fo);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, flat.bytes) << streams << " streams";
    auto receiver = TinyModel(2);
    ASSERT_TRUE(model::ApplyFlatWeights(flat.tensors, *got, GetParam(), *receiver).ok());
    ExpectSameWeights(*sender, *receiver, GetParam());
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GrpcDtypeTest,
                         ::testing::Values(v1::WIRE_DTYPE_FP32, v1::WIRE_DTYPE_BF16));

TEST(GrpcFetchTest, ResumesAfterABrokenConnection) {
  absl::Mutex mu;
  std::vector<uint32_t> served;
  std::atomic<bool> broke{false};
  TestHostOptions o;
  o.chunk_bytes = 4096;
  o.chunk_hook = [&](v1::WeightChunk& c) {
    absl::MutexLock lock(&mu);
    served.push_back(c.index());
    return !(c.index() == 7 && !broke.exchange(true));  // the connection drops at chunk 7
  };
  TestHost host(o);
  const std::string bytes = RandomBytes(20 * 4096 + 17, 3);
  host.Publish(1, bytes);
  prometheus::Registry r;
  ActorWeightMetrics m(r);
  FetchOptions fo;
  fo.streams = 1;
  fo.metrics = &m;
  auto stub = WeightsStub(host.address());
  auto got = FetchOverGrpc(*stub, host.store().Latest()->announcement, fo);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  EXPECT_EQ(m.resumes.Value(), 1);
  EXPECT_EQ(m.chunk_refetches.Value(), 0);
  // Chunks 0..7 (7 lost), then the resumed stream starts at 7, not at 0.
  ASSERT_GE(served.size(), 9u);
  EXPECT_EQ(served[7], 7u);
  EXPECT_EQ(served[8], 7u);
  EXPECT_EQ(std::count(served.begin(), served.end(), 0u), 1);
}

TEST(GrpcFetchTest, RefetchesACorruptedChunk) {
  std::atomic<int> corrupted{0};
  TestHostOptions o;
  o.chunk_bytes = 4096;
  o.chunk_hook = [&](v1::WeightChunk& c) {
    if (c.index() == 3 && corrupted++ == 0) (*c.mutable_data())[100] ^= 0x40;  // a bit flips
    return true;
  };
  TestHost host(o);
  const std::string bytes = RandomBytes(10 * 4096, 4);
  host.Publish(1, bytes);
  prometheus::Registry r;
  ActorWeightMetrics m(r);
  FetchOptions fo;
  fo.metrics = &m;
  auto stub = WeightsStub(host.address());
  auto got = FetchOverGrpc(*stub, host.store().Latest()->announcement, fo);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  EXPECT_EQ(m.chunk_refetches.Value(), 1);
  EXPECT_EQ(corrupted.load(), 2) << "chunk 3 was served twice";
}

TEST(GrpcFetchTest, GivesUpWithANamedErrorWhenAChunkIsAlwaysCorrupt) {
  TestHostOptions o;
  o.chunk_bytes = 4096;
  o.chunk_hook = [](v1::WeightChunk& c) {
    if (c.index() == 1) (*c.mutable_data())[0] ^= 1;
    return true;
  };
  TestHost host(o);
  host.Publish(9, RandomBytes(3 * 4096, 5));
  FetchOptions fo;
  fo.streams = 1;
  fo.max_attempts = 3;
  auto stub = WeightsStub(host.address());
  auto got = FetchOverGrpc(*stub, host.store().Latest()->announcement, fo);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(got.status().message().find("version 9"), std::string::npos) << got.status();
}

TEST(GrpcFetchTest, AnEvictedVersionIsNotFound) {
  TestHost host({});
  host.Publish(1, RandomBytes(100, 6));
  v1::WeightVersion old = host.store().Latest()->announcement;
  host.Publish(2, RandomBytes(100, 7));
  host.Publish(3, RandomBytes(100, 8));
  auto stub = WeightsStub(host.address());
  auto got = FetchOverGrpc(*stub, old, {});
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
}

TEST(GrpcFetchTest, TheVersionAnnouncedOnAnOpenWatchStaysFetchable) {
  // An actor far from the learner (or a slow one) learns of version 1, and versions 2..4 are
  // published before its download starts. Before, version 1 was already evicted (2 kept) and
  // the download failed NOT_FOUND, again and again: the actor never generated.
  TestHost host({});
  const std::string bytes = RandomBytes(100, 10);
  host.Publish(1, bytes);
  auto stub = WeightsStub(host.address());
  grpc::ClientContext watch_ctx;
  v1::WatchVersionsRequest wreq;
  auto watch = stub->WatchVersions(&watch_ctx, wreq);
  v1::WeightVersion announced;
  ASSERT_TRUE(watch->Read(&announced));
  ASSERT_EQ(announced.version(), 1);
  for (int64_t v = 2; v <= 4; ++v) host.Publish(v, RandomBytes(100, 10 + v));
  auto got = FetchOverGrpc(*stub, announced, {});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  // Once the watch has moved on (or closed), the old version is let go.
  watch_ctx.TryCancel();
  (void)watch->Finish();
  absl::SleepFor(absl::Milliseconds(300));  // the server notices the cancel
  host.Publish(5, RandomBytes(100, 20));
  EXPECT_EQ(FetchOverGrpc(*stub, announced, {}).status().code(), absl::StatusCode::kNotFound);
}

TEST(GrpcFetchTest, ASlowReaderDoesNotBlockOthers) {
  TestHostOptions o;
  o.chunk_bytes = 64 << 10;
  TestHost host(o);
  const std::string bytes = RandomBytes(16 << 20, 9);
  host.Publish(1, bytes);
  auto stub = WeightsStub(host.address());
  // A reader that takes one chunk and then stops reading, holding its stream open.
  grpc::ClientContext slow_ctx;
  v1::FetchWeightsRequest req;
  req.set_version(1);
  auto slow = stub->FetchWeights(&slow_ctx, req);
  v1::WeightChunk chunk;
  ASSERT_TRUE(slow->Read(&chunk));
  const absl::Time start = absl::Now();
  auto got = FetchOverGrpc(*stub, host.store().Latest()->announcement, {});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, bytes);
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  slow_ctx.TryCancel();
  slow->Finish();
}

// A member on its own thread, collecting what it receives.
class Member {
 public:
  Member(const std::string& address, const std::string& id, const std::string& host = "127.0.0.1")
      : stub_(WeightsStub(address)) {
    CollectiveOptions co;
    co.host = host;
    auto f = NewCommunicatorFactory(v1::TRANSPORT_KIND_GLOO, co);
    EXPECT_TRUE(f.ok()) << f.status();
    member_ = std::make_unique<GroupMember>(stub_.get(), id, std::move(*f), nullptr);
    thread_ = std::thread([this] {
      status_ = member_->Run([this](ReceivedVersion r) {
        absl::MutexLock lock(&mu_);
        received_.push_back(std::move(r));
      });
    });
  }
  ~Member() {
    member_->Stop();
    thread_.join();
  }
  // Waits for `version` to arrive; returns its bytes ("" on timeout).
  std::string WaitFor(int64_t version, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto has = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (auto& r : received_) {
        if (r.announcement.version() == version) return true;
      }
      return false;
    };
    mu_.AwaitWithTimeout(absl::Condition(&has), timeout);
    for (auto& r : received_) {
      if (r.announcement.version() == version) return r.bytes;
    }
    return "";
  }
  // Waits for Run to end; its status.
  absl::Status Finish() {
    thread_.join();
    thread_ = std::thread([] {});
    return status_;
  }

 private:
  std::unique_ptr<v1::Weights::Stub> stub_;
  std::unique_ptr<GroupMember> member_;
  std::thread thread_;
  absl::Status status_;
  absl::Mutex mu_;
  std::vector<ReceivedVersion> received_ ABSL_GUARDED_BY(mu_);
};

TEST(GlooGroupTest, BroadcastsEveryDtypeBitExactAndAJoinerGetsTheCurrentVersion) {
  TestHostOptions o;
  o.gloo_group = true;
  o.bucket_bytes = 10000;  // several buckets, the last one short
  TestHost host(o);
  auto sender = TinyModel(11);
  Member a(host.address(), "a"), b(host.address(), "b");
  ASSERT_TRUE(host.WaitForGroupSize(2, absl::Seconds(20)));

  model::FlatWeights fp32 = model::FlattenWeights(*sender, v1::WIRE_DTYPE_FP32);
  host.store().Publish(1, fp32.tensors, fp32.bytes, v1::WIRE_DTYPE_FP32);
  for (Member* m : {&a, &b}) {
    std::string got = m->WaitFor(1, absl::Seconds(20));
    ASSERT_EQ(got, fp32.bytes);
    auto receiver = TinyModel(12);
    ASSERT_TRUE(model::ApplyFlatWeights(fp32.tensors, got, v1::WIRE_DTYPE_FP32, *receiver).ok());
    ExpectSameWeights(*sender, *receiver, v1::WIRE_DTYPE_FP32);
  }
  model::FlatWeights bf16 = model::FlattenWeights(*sender, v1::WIRE_DTYPE_BF16);
  host.store().Publish(2, bf16.tensors, bf16.bytes, v1::WIRE_DTYPE_BF16);
  for (Member* m : {&a, &b}) {
    std::string got = m->WaitFor(2, absl::Seconds(20));
    ASSERT_EQ(got, bf16.bytes);
    auto receiver = TinyModel(13);
    ASSERT_TRUE(model::ApplyFlatWeights(bf16.tensors, got, v1::WIRE_DTYPE_BF16, *receiver).ok());
    ExpectSameWeights(*sender, *receiver, v1::WIRE_DTYPE_BF16);
  }
  const int64_t reforms = host.group()->reforms();

  // A third actor joins mid-run: the group re-forms and it gets the current version (2) with
  // no new publish; then everyone gets version 3.
  Member c(host.address(), "c");
  EXPECT_EQ(c.WaitFor(2, absl::Seconds(20)), bf16.bytes);
  EXPECT_EQ(host.group()->group_size(), 3);
  EXPECT_GT(host.group()->reforms(), reforms);
  const std::string v3 = RandomBytes(50000, 14);
  host.Publish(3, v3);
  for (Member* m : {&a, &b, &c}) EXPECT_EQ(m->WaitFor(3, absl::Seconds(20)), v3);
  host.WaitForBroadcast(3, absl::Seconds(20));
  EXPECT_EQ(host.group()->last_broadcast_version(), 3);
  EXPECT_GE(host.metrics().reforms.Value(), 2);
  EXPECT_EQ(host.metrics().group_size.Value(), 3);
}

TEST(GlooGroupTest, AMemberThatCannotConnectLeavesAndTheOthersCarryOn) {
  TestHostOptions o;
  o.gloo_group = true;
  o.timeout = absl::Seconds(2);
  TestHost host(o);
  Member good(host.address(), "good");
  // An address this machine does not have (TEST-NET-3): its Gloo device cannot be created.
  Member bad(host.address(), "bad", "203.0.113.7");
  absl::Status s = bad.Finish();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_NE(s.message().find("cannot connect"), std::string::npos) << s;
  ASSERT_TRUE(host.WaitForGroupSize(1, absl::Seconds(30)));
  const std::string v1 = RandomBytes(30000, 21);
  host.Publish(1, v1);
  EXPECT_EQ(good.WaitFor(1, absl::Seconds(30)), v1);
}

TEST(GlooGroupTest, ALearnerWithoutAGroupSendsActorsToGrpc) {
  TestHost host({});  // transport.kind grpc: no group
  auto stub = WeightsStub(host.address());
  CollectiveOptions co;
  co.host = "127.0.0.1";
  auto f = NewCommunicatorFactory(v1::TRANSPORT_KIND_GLOO, co);
  ASSERT_TRUE(f.ok());
  GroupMember m(stub.get(), "a", std::move(*f), nullptr);
  absl::Status s = m.Run([](ReceivedVersion) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("no collective transport"), std::string::npos) << s;
}

TEST(CommunicatorTest, NcclWithoutAGpuOrBuildIsANamedError) {
  auto f = NewCommunicatorFactory(v1::TRANSPORT_KIND_NCCL, {});
  if (f.ok()) GTEST_SKIP() << "a GPU is present; nccl_group_test covers it";
  // No GPU here: either the build has no NCCL or NCCL finds no device.
  EXPECT_TRUE(f.status().code() == absl::StatusCode::kUnimplemented ||
              f.status().code() == absl::StatusCode::kFailedPrecondition)
      << f.status();
  EXPECT_NE(f.status().message().find("nccl"), std::string::npos) << f.status();
}

}  // namespace
}  // namespace rhythm::common::weights

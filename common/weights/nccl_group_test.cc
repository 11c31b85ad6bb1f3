// The NCCL backend (label gpu; skips without a GPU). One GPU: a one-rank communicator moves a
// buffer through device memory and back. Two GPUs: the learner-side group host on device 0
// broadcasts fp32 and bf16 versions to a member on device 1, bit-exact. scripts/gpu-check.sh
// builds and runs this on a GPU machine.
#include <grpcpp/grpcpp.h>

#include <random>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "common/nccl_probe.h"
#include "common/weights/communicator.h"
#include "common/weights/test_host.h"
#include "common/weights/weight_client.h"
#include "gtest/gtest.h"

namespace rhythm::common::weights {
namespace {

int Gpus() {
  absl::StatusOr<NcclInfo> info = ProbeNccl();
  return info.ok() ? info->cuda_devices : 0;
}

TEST(NcclCommunicator, OneRankRoundTripsThroughTheDevice) {
  if (Gpus() < 1) GTEST_SKIP() << "no usable GPU";
  CollectiveOptions co;
  auto f = NewCommunicatorFactory(v1::TRANSPORT_KIND_NCCL, co);
  ASSERT_TRUE(f.ok()) << f.status();
  auto id = (*f)->NewRendezvous(1);
  ASSERT_TRUE(id.ok()) << id.status();
  auto comm = (*f)->Connect(*id, 0, 1, absl::Seconds(30));
  ASSERT_TRUE(comm.ok()) << comm.status();
  std::string data = RandomBytes(3 << 20, 1);
  const std::string want = data;
  ASSERT_TRUE((*comm)->Broadcast(data.data(), data.size()).ok());
  EXPECT_EQ(data, want);
}

TEST(NcclGroup, TwoGpusBroadcastBitExact) {
  if (Gpus() < 2) GTEST_SKIP() << "needs two GPUs (NCCL refuses two ranks on one device)";
  TestHostOptions o;
  o.nccl_group = true;
  o.bucket_bytes = 1 << 20;
  TestHost host(o);
  CollectiveOptions co;
  co.cuda_device = 1;
  auto f = NewCommunicatorFactory(v1::TRANSPORT_KIND_NCCL, co);
  ASSERT_TRUE(f.ok()) << f.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  auto stub = v1::Weights::NewStub(
      grpc::CreateCustomChannel(host.address(), grpc::InsecureChannelCredentials(), args));
  GroupMember member(stub.get(), "gpu1", std::move(*f), nullptr);
  absl::Mutex mu;
  std::vector<ReceivedVersion> got;
  std::thread t([&] {
    member
        .Run([&](ReceivedVersion r) {
          absl::MutexLock lock(&mu);
          got.push_back(std::move(r));
        })
        .IgnoreError();
  });
  host.WaitForGroupSize(1, absl::Seconds(60));
  const std::string v1 = RandomBytes(5 << 20, 2);
  host.Publish(1, v1);
  {
    absl::MutexLock lock(&mu);
    auto arrived = [&] { return !got.empty(); };
    mu.AwaitWithTimeout(absl::Condition(&arrived), absl::Seconds(60));
    ASSERT_FALSE(got.empty());
    EXPECT_EQ(got[0].bytes, v1);
  }
  member.Stop();
  t.join();
}

}  // namespace
}  // namespace rhythm::common::weights

#include "common/weights/test_host.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>

#include "absl/time/clock.h"
#include "common/weights/communicator.h"

namespace rhythm::common::weights {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t x = rng();
    std::memcpy(s.data() + i, &x, std::min<size_t>(8, n - i));
  }
  return s;
}

std::unique_ptr<v1::Weights::Stub> WeightsStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  return v1::Weights::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

TestHost::TestHost(TestHostOptions o) {
  registry_ = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<LearnerWeightMetrics>(*registry_);
  store_ = std::make_unique<VersionStore>(o.keep_versions, o.chunk_bytes, o.bucket_bytes);
  if (o.gloo_group || o.nccl_group) {
    CollectiveOptions co;
    co.host = "127.0.0.1";
    co.host_rendezvous = true;
    auto factory = NewCommunicatorFactory(
        o.nccl_group ? v1::TRANSPORT_KIND_NCCL : v1::TRANSPORT_KIND_GLOO, co);
    if (!factory.ok()) throw std::runtime_error(std::string(factory.status().message()));
    WeightGroupHostOptions go;
    go.timeout = o.timeout;
    go.metrics = metrics_.get();
    group_ = std::make_unique<WeightGroupHost>(store_.get(), std::move(*factory), go);
    group_->Start();
  }
  WeightServiceOptions so;
  so.store = store_.get();
  so.group = group_.get();
  so.metrics = metrics_.get();
  so.chunk_hook = std::move(o.chunk_hook);
  service_ = std::make_unique<WeightService>(std::move(so));
  grpc::ServerBuilder b;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  b.SetMaxSendMessageSize(256 << 20);
  b.RegisterService(service_.get());
  server_ = b.BuildAndStart();
  if (!server_) throw std::runtime_error("TestHost: cannot start gRPC");
}

TestHost::~TestHost() {
  service_->Stop();
  store_->Close();
  if (group_) group_->Stop();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
}

namespace {

bool WaitUntil(const std::function<bool()>& done, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

}  // namespace

bool TestHost::WaitForGroupSize(int size, absl::Duration timeout) {
  return WaitUntil([&] { return group_->group_size() == size; }, timeout);
}

bool TestHost::WaitForBroadcast(int64_t version, absl::Duration timeout) {
  return WaitUntil([&] { return group_->last_broadcast_version() >= version; }, timeout);
}

void TestHost::Publish(int64_t version, std::string bytes) {
  v1::TensorSpec t;
  t.set_name("flat");
  t.add_shape(static_cast<int64_t>(bytes.size() / 4));
  store_->Publish(version, {t}, std::move(bytes), v1::WIRE_DTYPE_FP32);
}

}  // namespace rhythm::common::weights

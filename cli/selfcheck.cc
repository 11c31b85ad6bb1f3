#include "cli/selfcheck.h"

#include <chrono>
#include <memory>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/config.h"
#include "common/metrics_server.h"
#include "common/runtime.h"
#include "common/torch_status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "rhythm/v1/learner_service.grpc.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::cli {
namespace {

using Outcome = CheckResult::Outcome;

CheckResult CheckRuntime(const v1::RhythmConfig& config) {
  common::RuntimeInfo info = common::InitRuntime(config.runtime());
  CheckResult r{"runtime", Outcome::kOk,
                absl::StrCat("torch ", info.torch_version, ", ", info.torch_threads, " of ",
                             info.cores_available, " cores, BLAS ", info.blas_kind)};
  if (info.blas_kind != "openblas-openmp") r.outcome = Outcome::kWarn;
  return r;
}

CheckResult CheckTorchMatmul() {
  constexpr int64_t n = 512;
  double seconds = 0;
  absl::StatusOr<double> error = common::TorchTry("matmul", [&]() {
    at::manual_seed(0);
    at::Tensor a = at::randn({n, n});
    at::Tensor eye = at::eye(n);
    at::matmul(a, eye);  // warm-up
    const auto start = std::chrono::steady_clock::now();
    constexpr int kReps = 4;
    at::Tensor out;
    for (int i = 0; i < kReps; ++i) out = at::matmul(a, eye);
    seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kReps;
    return (out - a).abs().max().item<double>();
  });
  if (!error.ok()) return {"torch", Outcome::kFail, std::string(error.status().message())};
  if (*error > 1e-5) {
    return {"torch", Outcome::kFail, absl::StrCat("A*I differs from A by ", *error)};
  }
  const double gflops = 2.0 * n * n * n / seconds / 1e9;
  return {"torch", Outcome::kOk, absl::StrFormat("matmul %d^3 correct, %.1f GFLOP/s", n, gflops)};
}

CheckResult CheckProto() {
  v1::Rollout r;
  r.set_rollout_id(7);
  r.add_response_token_ids(42);
  r.add_behaviour_logprobs(-0.5f);
  r.mutable_summary()->set_waad_f16(std::string("\x00\x3c", 2));
  v1::Rollout back;
  if (!back.ParseFromString(r.SerializeAsString()) || back.rollout_id() != 7 ||
      back.summary().waad_f16() != r.summary().waad_f16()) {
    return {"protobuf", Outcome::kFail, "Rollout did not survive a round trip"};
  }
  return {"protobuf", Outcome::kOk, "Rollout round trip"};
}

// Serves the generated Learner service with no methods overridden (every RPC answers
// UNIMPLEMENTED) and calls it over a real channel: proves the generated code, the server and the
// client stack work end to end.
CheckResult CheckGrpc() {
  int port = 0;
  v1::Learner::Service service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return {"grpc", Outcome::kFail, "cannot start a server on 127.0.0.1:0"};
  }
  auto stub = v1::Learner::NewStub(
      grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::HeartbeatRequest request;
  v1::HeartbeatResponse response;
  const grpc::Status status = stub->Heartbeat(&context, request, &response);
  server->Shutdown();
  if (status.error_code() != grpc::StatusCode::UNIMPLEMENTED) {
    return {"grpc", Outcome::kFail,
            absl::StrCat("Heartbeat round trip returned code ", status.error_code(), ": ",
                         status.error_message())};
  }
  return {"grpc", Outcome::kOk, absl::StrCat("Learner service round trip on 127.0.0.1:", port)};
}

CheckResult CheckMetrics() {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("rhythm_selfcheck_probes_total")
      .Help("Probes made by rhythm selfcheck")
      .Register(*registry)
      .Add({})
      .Increment();
  auto server = common::MetricsServer::Start("127.0.0.1:0", registry);
  if (!server.ok()) return {"metrics", Outcome::kFail, std::string(server.status().message())};
  absl::StatusOr<std::string> body = common::ScrapeLocal((*server)->port());
  if (!body.ok()) return {"metrics", Outcome::kFail, std::string(body.status().message())};
  if (body->find("rhythm_selfcheck_probes_total 1") == std::string::npos) {
    return {"metrics", Outcome::kFail, "/metrics lacks the registered counter"};
  }
  return {"metrics", Outcome::kOk,
          absl::StrCat("/metrics served on 127.0.0.1:", (*server)->port())};
}

}  // namespace

std::vector<CheckResult> RunSelfCheck(const v1::RhythmConfig& config) {
  std::vector<CheckResult> results;
  results.push_back(CheckRuntime(config));
  results.push_back(CheckTorchMatmul());
  results.push_back(CheckProto());
  results.push_back(CheckGrpc());
  results.push_back(CheckMetrics());
  absl::Status bounds = common::ValidateBounds(config);
  results.push_back({"config", bounds.ok() ? Outcome::kOk : Outcome::kFail,
                     bounds.ok()
                         ? absl::StrCat("resolved, strategy ",
                                        common::EnumShortName(v1::CreditStrategy_descriptor(),
                                                              config.credit().strategy()))
                         : std::string(bounds.message())});
  return results;
}

}  // namespace rhythm::cli

// rhythm-weight-peer: a receiver of weights and nothing else, for the weight-transport tests
// and bench/weight_sync_bench. It connects to a Weights service (a learner, or a test host),
// receives every new version over gRPC or as a member of the Gloo group (joining again after a
// drop, like an actor), and prints one line per verified version:
//   peer ID version V bytes B crc C seconds S via T
// --die-at-version V --die-after-bucket N kills the process (SIGKILL, as kill -9 would) after
// N buckets of version V's broadcast: a member dying mid-broadcast, on cue.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/weights/communicator.h"
#include "common/weights/weight_client.h"
#include "common/weights/weight_metrics.h"

namespace rw = rhythm::common::weights;
namespace v1 = rhythm::v1;

namespace {

// `bytes` were verified against v.crc32c() by the receiver.
void Print(const std::string& id, const v1::WeightVersion& v, const std::string& bytes,
           double seconds, const char* via) {
  std::cout << absl::StrFormat("peer %s version %d bytes %d crc %u seconds %.6f via %s", id,
                               v.version(), bytes.size(), v.crc32c(), seconds, via)
            << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  std::string address, id = "peer", transport = "grpc", streams = "1", host = "127.0.0.1";
  std::string die_version = "-1", die_bucket = "0", exit_after = "0";
  rhythm::common::FlagParser p("rhythm-weight-peer --address HOST:PORT [flags]",
                               "Receives weights from a Weights service and prints a line per "
                               "verified version (for tests and benchmarks).");
  p.AddString("address", "HOST:PORT", "the Weights service", &address);
  p.AddString("id", "ID", "actor id to join with", &id);
  p.AddString("transport", "grpc|gloo", "how to receive", &transport);
  p.AddString("streams", "N", "parallel gRPC streams", &streams);
  p.AddString("host", "ADDR", "Gloo: this process's address", &host);
  p.AddString("die-at-version", "V", "fault injection: version to die in", &die_version);
  p.AddString("die-after-bucket", "N", "fault injection: buckets to receive first", &die_bucket);
  p.AddString("exit-after", "N", "exit 0 after N versions (0 = run until killed)", &exit_after);
  std::vector<std::string> rest;
  int64_t die_v = -1, die_b = 0, exit_n = 0, nstreams = 2;
  if (absl::Status s = p.Parse(argc, argv, 1, &rest);
      !s.ok() || address.empty() || !absl::SimpleAtoi(die_version, &die_v) ||
      !absl::SimpleAtoi(die_bucket, &die_b) || !absl::SimpleAtoi(exit_after, &exit_n) ||
      !absl::SimpleAtoi(streams, &nstreams) || (transport != "grpc" && transport != "gloo")) {
    std::cerr << "rhythm-weight-peer: " << (s.ok() ? "bad flags" : s.message()) << "\n"
              << p.Usage();
    return 2;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::Weights::NewStub(channel);
  int64_t delivered = 0;

  if (transport == "grpc") {
    int64_t have = -1;
    while (exit_n == 0 || delivered < exit_n) {
      grpc::ClientContext ctx;
      v1::WatchVersionsRequest req;
      req.set_actor_id(id);
      auto watch = stub->WatchVersions(&ctx, req);
      v1::WeightVersion v;
      while (watch->Read(&v)) {
        if (v.version() <= have) continue;
        const auto start = absl::Now();
        rw::FetchOptions o;
        o.streams = static_cast<int>(nstreams);
        absl::StatusOr<std::string> bytes = rw::FetchOverGrpc(*stub, v, o);
        if (!bytes.ok()) {
          std::cerr << "rhythm-weight-peer: " << bytes.status() << "\n";
          continue;
        }
        Print(id, v, *bytes, absl::ToDoubleSeconds(absl::Now() - start), "grpc");
        have = v.version();
        if (exit_n > 0 && ++delivered >= exit_n) return 0;
      }
      watch->Finish();
      absl::SleepFor(absl::Milliseconds(200));
    }
    return 0;
  }

  rw::CollectiveOptions co;
  co.host = host;
  while (true) {
    auto factory = rw::NewCommunicatorFactory(v1::TRANSPORT_KIND_GLOO, co);
    if (!factory.ok()) {
      std::cerr << "rhythm-weight-peer: " << factory.status() << "\n";
      return 1;
    }
    rw::GroupMember member(stub.get(), id, std::move(*factory), nullptr);
    if (die_v >= 0) {
      member.set_bucket_hook([&](int64_t version, uint64_t received) {
        static int64_t buckets = 0;
        if (version == die_v && ++buckets >= die_b) {
          std::cerr << "rhythm-weight-peer: dying after " << received << " bytes of version "
                    << version << "\n";
          raise(SIGKILL);
        }
      });
    }
    absl::Status s = member.Run([&](rw::ReceivedVersion r) {
      Print(id, r.announcement, r.bytes, r.seconds, "gloo");
      member.Recycle(std::move(r.bytes));
      if (exit_n > 0 && ++delivered >= exit_n)
        std::_Exit(0);  // skip static teardown under Gloo threads
    });
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      std::cerr << "rhythm-weight-peer: " << s.message() << "\n";
      return 3;
    }
    std::cerr << "rhythm-weight-peer: " << s << "; joining again\n";
    absl::SleepFor(absl::Milliseconds(300));
  }
}

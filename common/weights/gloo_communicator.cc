#include "common/weights/gloo_communicator.h"

#include <unistd.h>

#include <chrono>
#include <utility>
#include <vector>

#include "ATen/ATen.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/weights/gloo_group.h"

namespace rhythm::common::weights {
namespace {

constexpr int kConnections = 2;

std::chrono::milliseconds Millis(absl::Duration d) { return GlooMillis(d); }

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(c10::intrusive_ptr<c10d::ProcessGroupGloo> pg, int rank, int world,
                   absl::Duration timeout)
      : pg_(std::move(pg)), rank_(rank), world_(world), timeout_(timeout) {}

  absl::Status Broadcast(void* data, size_t size) override {
    if (aborted_) return absl::UnavailableError("gloo: the group was aborted");
    try {
      // One broadcast per connection (the group has kConnections devices), run concurrently:
      // a single TCP stream is what limits Gloo on one host.
      c10d::BroadcastOptions opts;
      opts.rootRank = 0;
      opts.timeout = Millis(timeout_);
      std::vector<c10::intrusive_ptr<c10d::Work>> works;
      const size_t part = (size + kConnections - 1) / kConnections;
      for (size_t off = 0; off < size; off += part) {
        std::vector<at::Tensor> tensors{at::from_blob(
            static_cast<char*>(data) + off, {static_cast<int64_t>(std::min(part, size - off))},
            at::TensorOptions(at::kByte))};
        works.push_back(pg_->broadcast(tensors, opts));
      }
      for (auto& w : works) w->wait(Millis(timeout_));
      return absl::OkStatus();
    } catch (const std::exception& e) {
      aborted_ = true;
      return absl::UnavailableError(absl::StrCat("gloo: broadcast of ", size,
                                                 " bytes failed (rank ", rank_, " of ", world_,
                                                 "): ", FirstLine(e)));
    }
  }
  void Abort() override { aborted_ = true; }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

 private:
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
  const int rank_, world_;
  const absl::Duration timeout_;
  bool aborted_ = false;
};

class GlooFactory final : public CommunicatorFactory {
 public:
  explicit GlooFactory(CollectiveOptions options) : options_(std::move(options)) {}

  absl::Status Init() {
    if (!options_.host_rendezvous) return absl::OkStatus();
    absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> server =
        HostStore(AdvertisedHost(), options_.store_port);
    if (!server.ok()) return server.status();
    server_ = *std::move(server);
    return absl::OkStatus();
  }

  v1::TransportKind kind() const override { return v1::TRANSPORT_KIND_GLOO; }

  absl::StatusOr<std::string> NewRendezvous(int64_t group_id) override {
    if (!server_) return absl::FailedPreconditionError("gloo: this process hosts no store");
    return absl::StrCat(AdvertisedHost(), ":", server_->getPort(), "/group-", group_id);
  }

  absl::StatusOr<std::unique_ptr<Communicator>> Connect(const std::string& rendezvous, int rank,
                                                        int world_size,
                                                        absl::Duration timeout) override {
    const size_t slash = rendezvous.find('/');
    const size_t colon = rendezvous.rfind(':', slash);
    int port = 0;
    if (slash == std::string::npos || colon == std::string::npos ||
        !absl::SimpleAtoi(rendezvous.substr(colon + 1, slash - colon - 1), &port)) {
      return absl::InvalidArgumentError(
          absl::StrCat("gloo: malformed rendezvous '", rendezvous, "'"));
    }
    c10::intrusive_ptr<c10d::Store> base;
    if (server_ && rank == 0) {
      base = server_;
    } else {
      absl::StatusOr<c10::intrusive_ptr<c10d::Store>> client =
          ConnectStore(rendezvous.substr(0, colon), port, timeout);
      if (!client.ok()) {
        return absl::UnavailableError(absl::StrCat("gloo: rank ", rank, " of ", world_size,
                                                   " could not join '", rendezvous,
                                                   "': ", client.status().message()));
      }
      base = *std::move(client);
    }
    absl::StatusOr<c10::intrusive_ptr<c10d::ProcessGroupGloo>> pg =
        JoinGlooGroup(base, rendezvous.substr(slash + 1), rank, world_size, timeout,
                      options_.host, kConnections);
    if (!pg.ok()) return pg.status();
    return std::unique_ptr<Communicator>(
        new GlooCommunicator(*std::move(pg), rank, world_size, timeout));
  }

 private:
  std::string AdvertisedHost() const {
    return options_.host.empty() ? LocalHostName() : options_.host;
  }

  CollectiveOptions options_;
  c10::intrusive_ptr<c10d::TCPStore> server_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CommunicatorFactory>> NewGlooFactory(
    const CollectiveOptions& options) {
  auto f = std::make_unique<GlooFactory>(options);
  if (absl::Status s = f->Init(); !s.ok()) return s;
  return std::unique_ptr<CommunicatorFactory>(std::move(f));
}

}  // namespace rhythm::common::weights

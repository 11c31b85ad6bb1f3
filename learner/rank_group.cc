#include "learner/rank_group.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "ATen/ATen.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/status.h"
#include "common/weights/gloo_group.h"
#if defined(USE_C10D_NCCL)
#include "torch/csrc/distributed/c10d/PrefixStore.hpp"
#include "torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp"
#endif

namespace rhythm::learner {
namespace fs = std::filesystem;
namespace weights = common::weights;

namespace {

constexpr int kConnections = 2;
constexpr char kPrefix[] = "learner-ranks";

absl::Status SplitAddress(const std::string& address, std::string& host, int& port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("learner.rendezvous_address = '", address, "': want host:port"));
  }
  host = address.substr(0, colon);
  return absl::OkStatus();
}

absl::Status Announce(const std::string& run_dir, const std::string& address) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  const std::string path = RankGroup::AnnouncePath(run_dir);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << address << "\n";
    if (!out) return absl::InternalError(absl::StrCat(tmp, ": cannot write"));
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat(path, ": ", ec.message()));
  return absl::OkStatus();
}

// A collective's tensor on its group's device (CUDA for NCCL, the CPU for Gloo): `t` itself when
// it is there already, else a copy (the caller writes it back with WriteBack).
at::Tensor OnGroupDevice(const at::Tensor& t, bool nccl) {
  if (t.is_cuda() == nccl) return t;
  return nccl ? t.cuda() : t.cpu();
}

void WriteBack(at::Tensor& t, const at::Tensor& staged) {
  if (!staged.is_same(t)) t.copy_(staged);
}

}  // namespace

struct RankGroup::Impl {
  int rank = 0, world = 1;
  absl::Duration timeout;
  bool nccl = false;
  bool aborted = false;
  c10::intrusive_ptr<c10d::TCPStore> server;  // rank 0
  c10::intrusive_ptr<c10d::ProcessGroup> pg;

  // Runs `works()` (which issues collectives) and waits for them all; any exception aborts.
  template <typename F>
  absl::Status Run(const char* what, F&& works) {
    if (aborted)
      return absl::UnavailableError(
          absl::StrCat("learner ranks: ", what, ": the rank group was aborted"));
    try {
      std::vector<c10::intrusive_ptr<c10d::Work>> w = works();
      for (auto& x : w) x->wait(weights::GlooMillis(timeout));
      return absl::OkStatus();
    } catch (const std::exception& e) {
      aborted = true;
      return absl::UnavailableError(absl::StrCat("learner ranks: ", what, " failed on rank ", rank,
                                                 " of ", world,
                                                 " (a rank died or exceeded "
                                                 "learner.rank_timeout_s): ",
                                                 weights::FirstLine(e)));
    }
  }
};

RankGroup::Options RankGroup::Options::FromConfig(const v1::RhythmConfig& config) {
  Options o;
  o.world_size = config.learner().world_size();
  o.rank = config.learner().rank();
  o.rendezvous_address = config.learner().rendezvous_address();
  o.run_dir = config.learner().run_dir();
  o.timeout = absl::Seconds(config.learner().rank_timeout_s());
  o.nccl = absl::StartsWith(config.runtime().device(), "cuda");
  return o;
}

std::string RankGroup::AnnouncePath(const std::string& run_dir) {
  return (fs::path(run_dir) / "learner-rendezvous").string();
}

RankGroup::RankGroup(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RankGroup::~RankGroup() = default;
int RankGroup::rank() const { return impl_->rank; }
int RankGroup::world_size() const { return impl_->world; }
absl::Duration RankGroup::timeout() const { return impl_->timeout; }
bool RankGroup::aborted() const { return impl_->aborted; }
void RankGroup::Abort() { impl_->aborted = true; }

absl::StatusOr<std::unique_ptr<RankGroup>> RankGroup::Create(const Options& o) {
  if (o.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("learner.world_size = ", o.world_size, ": want >= 1"));
  }
  if (o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("learner.rank = ", o.rank, ": want 0 .. ",
                                                   o.world_size - 1,
                                                   " (learner.world_size = ", o.world_size, ")"));
  }
#if !defined(USE_C10D_NCCL)
  if (o.nccl) {
    return absl::UnimplementedError(
        "learner.world_size > 1 on cuda needs NCCL, and this build's LibTorch has no "
        "ProcessGroupNCCL: build against a CUDA LibTorch (deploy/Dockerfile.cuda)");
  }
#endif
  auto impl = std::make_unique<Impl>();
  impl->rank = o.rank;
  impl->world = o.world_size;
  impl->timeout = o.timeout;
  impl->nccl = o.nccl;
  const bool local = o.rendezvous_address.empty();
  std::string host = "127.0.0.1";
  int port = 0;
  if (!local) {
    if (absl::Status s = SplitAddress(o.rendezvous_address, host, port); !s.ok()) return s;
  }
  c10::intrusive_ptr<c10d::Store> store;
  if (o.rank == 0) {
    if (local) {
      std::error_code ec;
      fs::remove(AnnouncePath(o.run_dir), ec);  // a previous run's
    }
    absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> server = weights::HostStore(host, port);
    if (!server.ok()) return server.status();
    impl->server = *server;
    store = *server;
    if (local) {
      if (absl::Status s = Announce(o.run_dir, absl::StrCat(host, ":", (*server)->getPort()));
          !s.ok()) {
        return s;
      }
    }
  } else {
    // Poll the announcement (rank 0 may start later than this rank, and a previous run may
    // have left one behind: a store that does not answer is re-read).
    const absl::Time deadline = absl::Now() + o.timeout;
    absl::Status last = absl::UnavailableError(
        absl::StrCat("no announcement in ", AnnouncePath(o.run_dir), " from learner rank 0"));
    while (!store) {
      if (absl::Now() > deadline) {
        return absl::UnavailableError(absl::StrCat("learner rank ", o.rank,
                                                   ": no rendezvous within learner.rank_timeout_s"
                                                   " = ",
                                                   absl::ToDoubleSeconds(o.timeout), ": ",
                                                   last.message()));
      }
      if (local) {
        std::ifstream in(AnnouncePath(o.run_dir));
        std::string address;
        if (!std::getline(in, address) || !SplitAddress(address, host, port).ok()) {
          absl::SleepFor(absl::Milliseconds(50));
          continue;
        }
      }
      absl::StatusOr<c10::intrusive_ptr<c10d::Store>> client =
          weights::ConnectStore(host, port, std::min(o.timeout, absl::Seconds(2)));
      if (client.ok()) {
        store = *client;
      } else {
        last = client.status();
        absl::SleepFor(absl::Milliseconds(100));
      }
    }
  }
  if (o.nccl) {
#if defined(USE_C10D_NCCL)
    try {
      store->setTimeout(weights::GlooMillis(o.timeout));
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>(kPrefix, store);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = weights::GlooMillis(o.timeout);
      impl->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, o.rank, o.world_size, opts);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("learner rank ", o.rank, ": NCCL group: ", weights::FirstLine(e)));
    }
#endif
  } else {
    absl::StatusOr<c10::intrusive_ptr<c10d::ProcessGroupGloo>> pg = weights::JoinGlooGroup(
        store, kPrefix, o.rank, o.world_size, o.timeout, local ? "127.0.0.1" : "", kConnections);
    if (!pg.ok()) return pg.status();
    impl->pg = *pg;
  }
  return std::unique_ptr<RankGroup>(new RankGroup(std::move(impl)));
}

absl::Status RankGroup::ExchangeCommand(RankCommand& command, int64_t& payload) {
  at::Tensor t = at::zeros({2}, at::kLong);
  if (impl_->rank == 0) {
    t[0] = static_cast<int64_t>(command);
    t[1] = payload;
  }
  at::Tensor d = OnGroupDevice(t, impl_->nccl);
  RHYTHM_RETURN_IF_ERROR(impl_->Run("command", [&] {
    std::vector<at::Tensor> ts{d};
    return std::vector{impl_->pg->allreduce(ts)};
  }));
  WriteBack(t, d);
  command = static_cast<RankCommand>(t[0].item<int64_t>());
  payload = t[1].item<int64_t>();
  return absl::OkStatus();
}

absl::Status RankGroup::Broadcast(at::Tensor& t) {
  at::Tensor d = OnGroupDevice(t, impl_->nccl);
  RHYTHM_RETURN_IF_ERROR(impl_->Run("broadcast", [&] {
    std::vector<at::Tensor> ts{d};
    c10d::BroadcastOptions opts;
    opts.rootRank = 0;
    return std::vector{impl_->pg->broadcast(ts, opts)};
  }));
  WriteBack(t, d);
  return absl::OkStatus();
}

absl::Status RankGroup::BroadcastBytes(std::string& bytes) {
  at::Tensor size = at::tensor({static_cast<int64_t>(bytes.size())}, at::kLong);
  RHYTHM_RETURN_IF_ERROR(Broadcast(size));
  const int64_t n = size.item<int64_t>();
  if (impl_->rank != 0) bytes.assign(static_cast<size_t>(n), '\0');
  if (n == 0) return absl::OkStatus();
  at::Tensor data = at::from_blob(bytes.data(), {n}, at::TensorOptions(at::kByte));
  return Broadcast(data);
}

absl::Status RankGroup::AllReduceSum(at::Tensor& flat) {
  at::Tensor d = OnGroupDevice(flat, impl_->nccl);
  const int64_t per = std::max<int64_t>(1, kBucketBytes / d.element_size());
  RHYTHM_RETURN_IF_ERROR(impl_->Run("gradient all-reduce", [&] {
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (int64_t off = 0; off < d.numel(); off += per) {
      std::vector<at::Tensor> ts{d.narrow(0, off, std::min(per, d.numel() - off))};
      works.push_back(impl_->pg->allreduce(ts));
    }
    return works;
  }));
  WriteBack(flat, d);
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> RankGroup::AllGather(const at::Tensor& shard) {
  const at::Tensor d = OnGroupDevice(shard, impl_->nccl).contiguous();
  std::vector<std::vector<at::Tensor>> out(1);
  for (int r = 0; r < impl_->world; ++r) out[0].push_back(at::empty_like(d));
  RHYTHM_RETURN_IF_ERROR(impl_->Run("parameter all-gather", [&] {
    std::vector<at::Tensor> in{d};
    return std::vector{impl_->pg->allgather(out, in)};
  }));
  return at::cat(out[0]).to(shard.device());
}

absl::StatusOr<at::Tensor> RankGroup::GatherToRank0(const at::Tensor& shard) {
  if (impl_->nccl) return AllGather(shard);  // NCCL has no gather in this c10d
  const at::Tensor d = OnGroupDevice(shard, false).contiguous();
  std::vector<std::vector<at::Tensor>> out;
  if (impl_->rank == 0) {
    out.resize(1);
    for (int r = 0; r < impl_->world; ++r) out[0].push_back(at::empty_like(d));
  }
  RHYTHM_RETURN_IF_ERROR(impl_->Run("state gather", [&] {
    std::vector<at::Tensor> in{d};
    c10d::GatherOptions opts;
    opts.rootRank = 0;
    return std::vector{impl_->pg->gather(out, in, opts)};
  }));
  if (impl_->rank != 0) return at::Tensor();
  return at::cat(out[0]).to(shard.device());
}

absl::StatusOr<int> RankFromHostName() {
  const char* env = std::getenv("HOSTNAME");
  const std::string name = env != nullptr && *env != '\0' ? env : weights::LocalHostName();
  const size_t dash = name.rfind('-');
  int rank = -1;
  if (dash == std::string::npos || !absl::SimpleAtoi(name.substr(dash + 1), &rank) || rank < 0) {
    return absl::InvalidArgumentError(absl::StrCat("--rank-from-hostname: host name '", name,
                                                   "' does not end in -N (a StatefulSet ordinal)"));
  }
  return rank;
}

std::string EncodeBatch(const std::vector<Group>& batch) {
  std::string out;
  auto put = [&out](uint64_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(batch.size());
  for (const Group& g : batch) {
    put(g.size());
    for (const v1::Rollout& r : g) {
      const std::string b = r.SerializeAsString();
      put(b.size());
      out += b;
    }
  }
  return out;
}

absl::StatusOr<std::vector<Group>> DecodeBatch(const std::string& bytes) {
  size_t pos = 0;
  auto get = [&](uint64_t& v) {
    if (bytes.size() - pos < sizeof(v)) return false;
    std::memcpy(&v, bytes.data() + pos, sizeof(v));
    pos += sizeof(v);
    return true;
  };
  const auto bad = [&] {
    return absl::DataLossError(
        absl::StrCat("learner ranks: malformed batch at byte ", pos, " of ", bytes.size()));
  };
  uint64_t groups = 0;
  if (!get(groups) || groups > bytes.size()) return bad();
  std::vector<Group> batch(groups);
  for (Group& g : batch) {
    uint64_t n = 0;
    if (!get(n) || n > bytes.size()) return bad();
    g.resize(n);
    for (v1::Rollout& r : g) {
      uint64_t len = 0;
      if (!get(len) || len > bytes.size() - pos) return bad();
      if (!r.ParseFromArray(bytes.data() + pos, static_cast<int>(len))) return bad();
      pos += len;
    }
  }
  if (pos != bytes.size()) return bad();
  return batch;
}

}  // namespace rhythm::learner

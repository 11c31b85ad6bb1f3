#include "common/weights/weight_source.h"

#include <grpcpp/grpcpp.h>

#include <utility>

#include "common/logging.h"
#include "common/status.h"

namespace rhythm::common::weights {

// ---------------------------------------------------------------------------------- gRPC

GrpcWeightSource::GrpcWeightSource(v1::Weights::StubInterface& stub, Options options)
    : stub_(stub), options_(std::move(options)) {
  thread_ = std::thread([this] { WatchLoop(); });
}

GrpcWeightSource::~GrpcWeightSource() { Stop(); }

void GrpcWeightSource::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (active_ != nullptr) active_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

bool GrpcWeightSource::Connected() const {
  absl::MutexLock lock(&mu_);
  return first_.has_value();
}

void GrpcWeightSource::Pause() {
  absl::MutexLock lock(&mu_);
  paused_ = true;
  CloseActiveLocked();
}

void GrpcWeightSource::CloseActiveLocked() {
  if (active_ == nullptr || cancelled_) return;
  cancelled_ = true;
  first_.reset();
  latest_.reset();
  active_->TryCancel();
}

void GrpcWeightSource::WatchLoop() {
  Backoff backoff(options_.reconnect, options_.seed);
  v1::WatchVersionsRequest req;
  req.set_actor_id(options_.actor_id);
  while (true) {
    // No deadline: the watch is meant to stay open. A dead connection is found by the
    // channel's keepalive pings, which end the call.
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      auto may_run = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !paused_; };
      mu_.Await(absl::Condition(&may_run));
      if (stop_) return;
      active_ = &ctx;
      reopen_ = false;
      cancelled_ = false;
    }
    auto reader = stub_.WatchVersions(&ctx, req);
    v1::WeightVersion v;
    bool announced = false;
    while (reader->Read(&v)) {
      absl::MutexLock lock(&mu_);
      if (cancelled_) continue;  // closing on purpose: its announcements no longer count
      if (!announced) {
        first_ = v;
        ++streams_;
        announced = true;
      }
      latest_ = std::move(v);
    }
    const grpc::Status s = reader->Finish();
    bool again;
    {
      absl::MutexLock lock(&mu_);
      active_ = nullptr;
      first_.reset();
      latest_.reset();
      if (stop_) return;
      again = cancelled_;  // closed on purpose (reopen, pause): no backoff, nothing to report
    }
    if (again) {
      backoff.Reset();
      continue;
    }
    if (announced) {
      backoff.Reset();
      RHYTHM_LOG(Warning) << "weights: the version watch ended ("
                          << (s.ok() ? std::string("the learner closed it") : s.error_message())
                          << "); watching again";
    }
    const absl::Duration wait = backoff.Next();
    absl::MutexLock lock(&mu_);
    auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || reopen_; };
    mu_.AwaitWithTimeout(absl::Condition(&wake), wait);
  }
}

absl::StatusOr<std::optional<WeightUpdate>> GrpcWeightSource::Newer(int64_t have) {
  v1::WeightVersion announced;
  {
    absl::MutexLock lock(&mu_);
    const bool resumed = paused_;
    paused_ = false;
    if (!first_.has_value() && (have < 0 || resumed)) {
      auto announced_or_stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || first_.has_value();
      };
      mu_.AwaitWithTimeout(absl::Condition(&announced_or_stopped), options_.announce_timeout);
    }
    if (stop_) return absl::CancelledError("weights: source stopped");
    if (!first_.has_value()) {
      if (have >= 0 && !resumed) return std::nullopt;  // reconnecting; nothing known newer
      return absl::UnavailableError("weights: no version announcement from the learner");
    }
    if (latest_->version() <= have) return std::nullopt;
    if (first_->version() != latest_->version()) {
      // Only the first announcement stays pinned for as long as the watch is open (the newest
      // moves on with every publication), so download the newest as a new watch's first.
      const uint64_t seen = streams_;
      reopen_ = true;
      CloseActiveLocked();
      auto reopened = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || (streams_ > seen && first_.has_value());
      };
      mu_.AwaitWithTimeout(absl::Condition(&reopened), options_.announce_timeout);
      if (stop_) return absl::CancelledError("weights: source stopped");
      if (streams_ <= seen || !first_.has_value()) {
        return absl::UnavailableError("weights: no version announcement after reopening the watch");
      }
      if (first_->version() <= have) return std::nullopt;
    }
    announced = *first_;
  }
  // The watch stays open (its thread keeps reading it) until the download is done and after.
  FetchOptions fo;
  fo.streams = options_.fetch_streams;
  fo.metrics = options_.metrics;
  RHYTHM_ASSIGN_OR_RETURN(std::string bytes, FetchOverGrpc(stub_, announced, fo));
  WeightUpdate u;
  u.announcement = std::move(announced);
  u.bytes = std::move(bytes);
  u.transport = v1::TRANSPORT_KIND_GRPC;
  return std::optional<WeightUpdate>(std::move(u));
}

// ---------------------------------------------------------------------------------- group

GroupWeightSource::GroupWeightSource(v1::Weights::StubInterface& stub, Options options)
    : stub_(stub), options_(std::move(options)) {
  thread_ = std::thread([this] { Loop(); });
}

GroupWeightSource::~GroupWeightSource() { Stop(); }

void GroupWeightSource::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    if (member_) member_->Stop();
  }
  if (thread_.joinable()) thread_.join();
}

bool GroupWeightSource::Connected() const {
  absl::MutexLock lock(&mu_);
  return member_ != nullptr && member_->connected();
}

void GroupWeightSource::Recycle(std::string bytes) {
  absl::MutexLock lock(&mu_);
  if (member_) member_->Recycle(std::move(bytes));
}

absl::StatusOr<std::optional<WeightUpdate>> GroupWeightSource::Newer(int64_t have) {
  std::optional<ReceivedVersion> r;
  {
    absl::MutexLock lock(&mu_);
    r.swap(received_);
  }
  if (!r.has_value()) return std::nullopt;
  if (r->announcement.version() <= have) {
    Recycle(std::move(r->bytes));
    return std::nullopt;
  }
  WeightUpdate u;
  u.announcement = std::move(r->announcement);
  u.bytes = std::move(r->bytes);
  u.transport = options_.kind;
  return std::optional<WeightUpdate>(std::move(u));
}

void GroupWeightSource::Loop() {
  Backoff backoff(options_.rejoin, options_.seed);
  while (true) {
    auto factory = NewCommunicatorFactory(options_.kind, options_.collective);
    if (!factory.ok()) {
      RHYTHM_LOG(Warning) << "actor: cannot use the " << TransportName(options_.kind)
                          << " weight group, using gRPC: " << factory.status();
      return;
    }
    // Run is not called under mu_, which its callback, Connected and Recycle take.
    GroupMember* member;
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return;
      member_ = std::make_unique<GroupMember>(&stub_, options_.actor_id, std::move(*factory),
                                              options_.metrics);
      member = member_.get();
    }
    absl::Status s = member->Run([this](ReceivedVersion r) {
      absl::MutexLock lock(&mu_);
      // A version not taken yet is superseded; its buffer serves the next broadcast.
      if (received_.has_value() && member_) member_->Recycle(std::move(received_->bytes));
      received_ = std::move(r);
    });
    if (s.code() == absl::StatusCode::kFailedPrecondition) {
      RHYTHM_LOG(Warning) << "actor: " << s.message() << "; using gRPC";
      return;
    }
    const absl::Duration wait = backoff.Next();
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    RHYTHM_LOG(Warning) << "actor: " << s << "; using gRPC, joining again in " << wait;
    auto stopped = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_; };
    mu_.AwaitWithTimeout(absl::Condition(&stopped), wait);
  }
}

// ------------------------------------------------------------------------------- fallback

FallbackWeightSource::FallbackWeightSource(std::unique_ptr<WeightSource> primary,
                                           std::unique_ptr<WeightSource> fallback,
                                           ActorWeightMetrics* metrics)
    : primary_(std::move(primary)), fallback_(std::move(fallback)), metrics_(metrics) {}

absl::StatusOr<std::optional<WeightUpdate>> FallbackWeightSource::Newer(int64_t have) {
  absl::StatusOr<std::optional<WeightUpdate>> got = primary_->Newer(have);
  if (got.ok() && got->has_value()) return got;
  if (!got.ok()) RHYTHM_LOG(Warning) << "weights: " << got.status() << "; asking the fallback";
  if (got.ok() && have >= 0 && primary_->Connected()) {
    // Versions arrive by the primary: nothing to hold open on the fallback meanwhile.
    fallback_->Pause();
    return std::nullopt;
  }
  got = fallback_->Newer(have);
  if (got.ok() && got->has_value() && metrics_ != nullptr) metrics_->sync.fallbacks.Increment();
  return got;
}

bool FallbackWeightSource::Connected() const {
  return primary_->Connected() || fallback_->Connected();
}

void FallbackWeightSource::Pause() {
  primary_->Pause();
  fallback_->Pause();
}

void FallbackWeightSource::Recycle(std::string bytes) { primary_->Recycle(std::move(bytes)); }

// -------------------------------------------------------------------------------- factory

std::unique_ptr<WeightSource> NewActorWeightSource(v1::Weights::StubInterface& stub,
                                                   const v1::TransportConfig& transport,
                                                   const ActorWeightSourceOptions& options) {
  GrpcWeightSource::Options go;
  go.actor_id = options.actor_id;
  go.fetch_streams = transport.fetch_streams();
  go.reconnect = options.reconnect;
  go.seed = options.seed + 3;
  go.metrics = options.metrics;
  auto grpc_source = std::make_unique<GrpcWeightSource>(stub, go);
  const v1::TransportKind kind = transport.kind();
  if (kind != v1::TRANSPORT_KIND_GLOO && kind != v1::TRANSPORT_KIND_NCCL) return grpc_source;
  GroupWeightSource::Options mo;
  mo.actor_id = options.actor_id;
  mo.kind = kind;
  mo.collective.host = transport.collective_host();
  mo.collective.cuda_device = options.cuda_device;
  mo.seed = options.seed + 7;
  mo.metrics = options.metrics;
  return std::make_unique<FallbackWeightSource>(std::make_unique<GroupWeightSource>(stub, mo),
                                                std::move(grpc_source), options.metrics);
}

}  // namespace rhythm::common::weights

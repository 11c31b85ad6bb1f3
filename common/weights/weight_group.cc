#include "common/weights/weight_group.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace rhythm::common::weights {
namespace {

constexpr uint64_t kMaxBucket = uint64_t{1} << 30;  // Gloo counts elements in int

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

WeightGroupHost::WeightGroupHost(const VersionStore* store,
                                 std::unique_ptr<CommunicatorFactory> factory,
                                 WeightGroupHostOptions options)
    : store_(store), factory_(std::move(factory)), options_(options) {}

WeightGroupHost::~WeightGroupHost() { Stop(); }

void WeightGroupHost::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void WeightGroupHost::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<WeightGroupHost::Member> WeightGroupHost::Join(const std::string& actor_id) {
  auto m = std::make_shared<Member>();
  m->actor_id_ = actor_id;
  absl::MutexLock lock(&mu_);
  for (auto& old : members_) {
    if (old->actor_id_ == actor_id) old->dropped_ = true;  // the actor reconnected
  }
  members_.push_back(m);
  dirty_ = true;
  RHYTHM_LOG(Info) << "weights: " << actor_id << " joined the " << TransportName(kind())
                   << " group";
  return m;
}

absl::Status WeightGroupHost::NextEvent(Member& m, absl::Duration wait, v1::WeightGroupEvent* event,
                                        bool* have) {
  *have = false;
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || m.dropped_ || !m.outbox_.empty();
  };
  mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
  if (stopping_) return absl::UnavailableError("the learner is stopping");
  if (m.dropped_) {
    return absl::UnavailableError(
        "dropped from the weight group (late answer to a form, or a newer stream of the same "
        "actor); use gRPC and join again");
  }
  if (!m.outbox_.empty()) {
    *event = std::move(m.outbox_.front());
    m.outbox_.pop_front();
    *have = true;
  }
  return absl::OkStatus();
}

void WeightGroupHost::Ready(Member& m, int64_t group_id) {
  absl::MutexLock lock(&mu_);
  m.ready_group_ = group_id;
}

void WeightGroupHost::Leave(Member& m) {
  absl::MutexLock lock(&mu_);
  if (!m.gone_ && !m.dropped_) dirty_ = true;  // a dropped member was already re-formed away
  m.gone_ = true;
}

int WeightGroupHost::group_size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(group_.size());
}

int64_t WeightGroupHost::group_id() const {
  absl::MutexLock lock(&mu_);
  return group_id_;
}

std::vector<std::shared_ptr<WeightGroupHost::Member>> WeightGroupHost::LiveMembersLocked() {
  members_.erase(std::remove_if(members_.begin(), members_.end(),
                                [](const auto& m) { return m->gone_ || m->dropped_; }),
                 members_.end());
  return members_;
}

void WeightGroupHost::Form() {
  comm_.reset();
  last_sent_ = -1;
  while (true) {
    std::vector<std::shared_ptr<Member>> live;
    int64_t id = 0;
    {
      absl::MutexLock lock(&mu_);
      group_.clear();
      dirty_ = false;
      if (stopping_) return;
      live = LiveMembersLocked();
      if (live.empty()) {
        if (options_.metrics) options_.metrics->group_size.Set(0);
        return;
      }
      id = ++group_id_;
    }
    absl::StatusOr<std::string> rendezvous = factory_->NewRendezvous(id);
    if (!rendezvous.ok()) {
      RHYTHM_LOG(Warning) << "weights: " << rendezvous.status();
      absl::MutexLock lock(&mu_);
      dirty_ = true;
      return;
    }
    const int world = static_cast<int>(live.size()) + 1;
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < live.size(); ++i) {
      v1::WeightGroupEvent e;
      v1::WeightGroupEvent::Form* f = e.mutable_form();
      f->set_group_id(id);
      f->mutable_source()->set_transport(kind());
      f->mutable_source()->set_rendezvous(*rendezvous);
      f->mutable_source()->set_rank(static_cast<int>(i) + 1);
      f->mutable_source()->set_world_size(world);
      f->set_timeout_s(absl::ToDoubleSeconds(options_.timeout));
      live[i]->outbox_.push_back(std::move(e));
    }
    auto answered = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      if (stopping_) return true;
      for (auto& m : live) {
        if (!m->gone_ && !m->dropped_ && m->ready_group_ != id) return false;
      }
      return true;
    };
    mu_.AwaitWithTimeout(absl::Condition(&answered), options_.timeout);
    if (stopping_) return;
    bool changed = false;
    for (auto& m : live) {
      if (m->gone_ || m->dropped_) {
        changed = true;
      } else if (m->ready_group_ != id) {
        RHYTHM_LOG(Warning) << "weights: " << m->actor_id_ << " did not answer group " << id
                            << " within " << options_.timeout << "; it falls back to gRPC";
        m->dropped_ = true;
        if (options_.metrics) options_.metrics->sync.fallbacks.Increment();
        changed = true;
      }
    }
    if (changed) continue;  // form again with the members that answered
    for (auto& m : live) {
      v1::WeightGroupEvent e;
      e.mutable_connect()->set_group_id(id);
      m->outbox_.push_back(std::move(e));
    }
    group_ = live;
    mu_.Unlock();
    absl::StatusOr<std::unique_ptr<Communicator>> c =
        factory_->Connect(*rendezvous, 0, world, options_.timeout);
    mu_.Lock();
    if (!c.ok()) {
      RHYTHM_LOG(Warning) << "weights: group " << id << " did not connect: " << c.status();
      group_.clear();
      dirty_ = true;
      return;
    }
    comm_ = std::move(*c);
    ++reforms_;
    if (options_.metrics) {
      options_.metrics->reforms.Increment();
      options_.metrics->group_size.Set(static_cast<double>(live.size()));
    }
    RHYTHM_LOG(Info) << "weights: group " << id << " formed with " << live.size() << " actors";
    return;
  }
}

absl::Status WeightGroupHost::Broadcast(const PublishedVersion& v) {
  const auto start = std::chrono::steady_clock::now();
  {
    absl::MutexLock lock(&mu_);
    // Check everyone before telling anyone, so no member waits for a broadcast that won't come.
    for (const auto& m : group_) {
      if (m->gone_ || m->dropped_) {
        return absl::UnavailableError(absl::StrCat(m->actor_id_, " left the group"));
      }
    }
    for (size_t i = 0; i < group_.size(); ++i) {
      v1::WeightGroupEvent e;
      *e.mutable_broadcast() = v.announcement;
      v1::WeightSource* s = e.mutable_broadcast()->mutable_source();
      s->set_transport(kind());
      s->set_rank(static_cast<int>(i) + 1);
      s->set_world_size(static_cast<int>(group_.size()) + 1);
      group_[i]->outbox_.push_back(std::move(e));
    }
  }
  const uint64_t bucket = std::min<uint64_t>(kMaxBucket, v.announcement.bucket_bytes());
  char* data = const_cast<char*>(v.bytes.data());  // rank 0 only reads
  for (uint64_t off = 0; off < v.bytes.size(); off += bucket) {
    const uint64_t len = std::min<uint64_t>(bucket, v.bytes.size() - off);
    absl::Status s = comm_->Broadcast(data + off, len);
    if (!s.ok()) return s;
  }
  if (options_.metrics) {
    options_.metrics->sync.Record(kind(), v.bytes.size(), Since(start));
  }
  return absl::OkStatus();
}

void WeightGroupHost::Loop() {
  while (true) {
    bool need_form = false;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      need_form = dirty_;
    }
    if (need_form) Form();  // leaves comm_ null when there is no group
    if (comm_ == nullptr) {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || dirty_; };
      mu_.AwaitWithTimeout(absl::Condition(&wake), absl::Milliseconds(200));
      continue;
    }
    std::shared_ptr<const PublishedVersion> latest =
        store_->WaitNewer(last_sent_.load(), absl::Milliseconds(100));
    if (!latest || latest->announcement.version() <= last_sent_.load()) continue;
    absl::Status s = Broadcast(*latest);
    if (s.ok()) {
      last_sent_ = latest->announcement.version();
      continue;
    }
    RHYTHM_LOG(Warning) << "weights: broadcast of version " << latest->announcement.version()
                        << " failed, re-forming the group: " << s;
    if (options_.metrics) options_.metrics->failures.Increment();
    comm_->Abort();
    comm_.reset();
    absl::MutexLock lock(&mu_);
    dirty_ = true;
  }
  if (comm_) comm_->Abort();
  comm_.reset();
}

}  // namespace rhythm::common::weights

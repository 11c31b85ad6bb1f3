#include "actor/rollout_streamer.h"

#include <set>

#include "common/logging.h"
#include "grpcpp/grpcpp.h"

namespace rhythm::actor {

RolloutStreamer::RolloutStreamer(v1::Learner::Stub& stub, const Options& options,
                                 std::function<absl::Status()> reconnect)
    : stub_(stub), options_(options), reconnect_(std::move(reconnect)) {
  thread_ = std::thread([this] { ConnectionLoop(); });
}

RolloutStreamer::~RolloutStreamer() { Close(); }

void RolloutStreamer::SetAckObserver(std::function<void(const v1::RolloutAck&)> observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
}

absl::Status RolloutStreamer::Deliver(std::vector<v1::Rollout> group) {
  absl::MutexLock lock(&mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || static_cast<int64_t>(unacked_.size()) < options_.max_unacked;
  };
  for (v1::Rollout& rollout : group) {
    mu_.Await(absl::Condition(&room));
    if (closed_) return absl::CancelledError("rollout streamer closed");
    const uint64_t id = rollout.rollout_id();
    unacked_[id] = std::move(rollout);
    to_send_.push_back(id);
    ++counters_.sent;
  }
  return absl::OkStatus();
}

bool RolloutStreamer::Flush(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return unacked_.empty(); };
  return mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
}

void RolloutStreamer::Close() {
  {
    absl::MutexLock lock(&mu_);
    if (closed_ && !thread_.joinable()) return;
    closed_ = true;
    if (active_context_ != nullptr) active_context_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

StreamerCounters RolloutStreamer::counters() const {
  absl::MutexLock lock(&mu_);
  StreamerCounters c = counters_;
  c.unacked = static_cast<int64_t>(unacked_.size());
  return c;
}

std::vector<uint64_t> RolloutStreamer::UnackedGroups() const {
  absl::MutexLock lock(&mu_);
  std::set<uint64_t> groups;
  for (const auto& [id, r] : unacked_) groups.insert(r.group_id());
  return {groups.begin(), groups.end()};
}

void RolloutStreamer::ConnectionLoop() {
  common::Backoff backoff(options_.backoff, options_.seed);
  bool first = true;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
    }
    if (!first) {
      const absl::Status s = reconnect_ ? reconnect_() : absl::OkStatus();
      if (!s.ok()) RHYTHM_LOG(Warning) << "actor: re-register failed: " << s;
    }
    first = false;
    const absl::Time started = absl::Now();
    RunStream();
    {
      absl::MutexLock lock(&mu_);
      if (closed_) return;
      ++counters_.reconnects;
    }
    // A stream that lived a while resets the backoff: the learner was healthy.
    if (absl::Now() - started > absl::Seconds(10)) backoff.Reset();
    const absl::Duration wait = backoff.Next();
    RHYTHM_LOG(Warning) << "actor: rollout stream to the learner broke; retrying in " << wait;
    absl::MutexLock lock(&mu_);
    auto closed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_; };
    mu_.AwaitWithTimeout(absl::Condition(&closed), wait);
  }
}

void RolloutStreamer::RunStream() {
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (closed_) return;
    active_context_ = &context;
    stream_broken_ = false;
    credits_ = 0;
    // Everything unacked goes again, oldest first.
    to_send_.clear();
    for (const auto& [id, r] : unacked_) to_send_.push_back(id);
  }
  auto stream = stub_.StreamRollouts(&context);
  v1::RolloutStreamRequest hello;
  hello.mutable_hello()->set_actor_id(options_.actor_id);
  hello.mutable_hello()->set_run_id(options_.run_id);
  const bool hello_ok = stream->Write(hello);
  std::thread reader([&] {
    v1::RolloutStreamResponse resp;
    while (hello_ok && stream->Read(&resp)) {
      std::function<void(const v1::RolloutAck&)> observer;
      absl::MutexLock lock(&mu_);
      credits_ += resp.granted_credits();
      if (resp.kind_case() == v1::RolloutStreamResponse::kCredit) credits_ += resp.credit();
      if (resp.has_ack()) {
        const v1::RolloutAck& ack = resp.ack();
        writes_.erase(ack.rollout_id());
        if (unacked_.erase(ack.rollout_id()) > 0) {
          if (ack.code() == 0) {
            ++counters_.acked;
          } else {
            ++counters_.rejected;
            RHYTHM_LOG(Warning) << "actor: learner rejected rollout " << ack.rollout_id() << ": "
                                << ack.error_message();
          }
        }
        if (observer_) observer_(ack);
      }
    }
    absl::MutexLock lock(&mu_);
    stream_broken_ = true;
  });
  // Writer: this thread, as credits allow.
  while (true) {
    v1::RolloutStreamRequest req;
    {
      absl::ReleasableMutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return closed_ || stream_broken_ || (credits_ > 0 && !to_send_.empty());
      };
      if (!mu_.AwaitWithTimeout(absl::Condition(&ready), options_.keepalive)) {
        lock.Release();
        if (!stream->Write(req)) break;  // empty: a keepalive
        continue;
      }
      if (closed_ || stream_broken_) break;
      const uint64_t id = to_send_.front();
      to_send_.pop_front();
      auto it = unacked_.find(id);
      if (it == unacked_.end()) continue;  // acked meanwhile (a resend raced an ack)
      *req.mutable_rollout() = it->second;
      --credits_;
      if (writes_[id]++ > 0) ++counters_.resent;
    }
    if (!stream->Write(req)) break;
  }
  context.TryCancel();
  reader.join();
  stream->Finish();
  absl::MutexLock lock(&mu_);
  active_context_ = nullptr;
}

}  // namespace rhythm::actor

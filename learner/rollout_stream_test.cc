#include "learner/rollout_stream.h"

#include <atomic>
#include <deque>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace rhythm::learner {
namespace {

// A client scripted by the test: Read hands out the messages pushed so far (blocking while
// there are none, false once closed); Write records what the session sent.
class FakeStream : public RolloutStream {
 public:
  void Push(v1::RolloutStreamRequest m) {
    absl::MutexLock lock(&mu_);
    incoming_.push_back(std::move(m));
  }
  void PushRollout(uint64_t id) {
    v1::RolloutStreamRequest m;
    m.mutable_rollout()->set_rollout_id(id);
    Push(std::move(m));
  }
  void CloseWrites() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }
  int64_t reads() {
    absl::MutexLock lock(&mu_);
    return reads_;
  }
  std::vector<v1::RolloutStreamResponse> sent() {
    absl::MutexLock lock(&mu_);
    return sent_;
  }
  // Credits granted so far: the first `credit`, later `credit`s and every `granted_credits`.
  int64_t credits() {
    int64_t n = 0;
    for (const auto& r : sent()) n += r.credit() + r.granted_credits();
    return n;
  }

  bool Read(v1::RolloutStreamRequest* msg) override {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](FakeStream* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) {
          return s->closed_ || !s->incoming_.empty();
        },
        this));
    if (incoming_.empty()) return false;
    *msg = std::move(incoming_.front());
    incoming_.pop_front();
    ++reads_;
    return true;
  }
  bool NextMessageSize(uint32_t* sz) override {
    *sz = 1 << 20;
    return true;
  }
  using RolloutStream::Write;
  bool Write(const v1::RolloutStreamResponse& msg, grpc::WriteOptions) override {
    absl::MutexLock lock(&mu_);
    sent_.push_back(msg);
    return true;
  }
  void SendInitialMetadata() override {}

 private:
  absl::Mutex mu_;
  std::deque<v1::RolloutStreamRequest> incoming_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::RolloutStreamResponse> sent_ ABSL_GUARDED_BY(mu_);
};

v1::RolloutStreamRequest Hello() {
  v1::RolloutStreamRequest m;
  m.mutable_hello()->set_actor_id("a");
  return m;
}

bool WaitUntil(const std::function<bool()>& cond) {
  for (int i = 0; i < 400; ++i) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return false;
}

TEST(RolloutStreamTest, TheFirstMessageMustBeHello) {
  FakeStream stream;
  stream.PushRollout(1);
  RolloutStreamOptions o;
  o.queue_has_room = [] { return true; };
  o.stop = [] { return false; };
  o.submit = [](v1::Rollout, AckFn) { ADD_FAILURE() << "nothing is submitted"; };
  const grpc::Status s = ServeRolloutStream(stream, o);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("hello"), std::string::npos) << s.error_message();
}

TEST(RolloutStreamTest, IsNotReadPastItsCreditsAndOwedCreditsFollowRoom) {
  FakeStream stream;
  stream.Push(Hello());
  for (uint64_t id = 1; id <= 10; ++id) stream.PushRollout(id);
  std::atomic<bool> room{false};
  std::vector<uint64_t> submitted;
  absl::Mutex mu;
  RolloutStreamOptions o;
  o.initial_credits = 3;
  o.queue_has_room = [&] { return room.load(); };
  o.stop = [] { return false; };
  o.submit = [&](v1::Rollout r, AckFn done) {
    {
      absl::MutexLock lock(&mu);
      submitted.push_back(r.rollout_id());
    }
    v1::RolloutAck a;
    a.set_rollout_id(r.rollout_id());
    done(a);
  };
  std::thread session([&] { EXPECT_TRUE(ServeRolloutStream(stream, o).ok()); });
  // Hello + 3 rollouts, and their 3 acks, but no credit back: the queue is full.
  ASSERT_TRUE(WaitUntil([&] { return stream.sent().size() == 4; }));
  absl::SleepFor(absl::Milliseconds(150));
  EXPECT_EQ(stream.reads(), 4) << "not read past the 3 credits granted";
  EXPECT_EQ(stream.credits(), 3);
  // Room again: the 3 owed credits go out in one `credit` message, and 3 more are read.
  room = true;
  ASSERT_TRUE(WaitUntil([&] { return stream.reads() >= 7; }));
  // With room, each ack brings its credit back, so the rest flows.
  ASSERT_TRUE(WaitUntil([&] { return stream.reads() == 11; }));
  stream.CloseWrites();
  session.join();
  EXPECT_EQ(submitted, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  int acks = 0;
  bool owed_sent = false;
  const std::vector<v1::RolloutStreamResponse> sent = stream.sent();
  for (size_t i = 0; i < sent.size(); ++i) {
    acks += sent[i].has_ack() ? 1 : 0;
    owed_sent |= i > 0 && sent[i].kind_case() == v1::RolloutStreamResponse::kCredit &&
                 sent[i].credit() == 3;
  }
  EXPECT_EQ(acks, 10) << "every rollout read is acked once";
  EXPECT_TRUE(owed_sent);
}

TEST(RolloutStreamTest, WaitsForLateAcksAndDropsUnavailableOnes) {
  FakeStream stream;
  stream.Push(Hello());
  for (uint64_t id = 1; id <= 4; ++id) stream.PushRollout(id);
  stream.CloseWrites();
  std::vector<AckFn> later;
  absl::Mutex mu;
  RolloutStreamOptions o;
  o.initial_credits = 8;
  o.queue_has_room = [] { return true; };
  o.stop = [] { return false; };
  o.submit = [&](v1::Rollout r, AckFn done) {
    absl::MutexLock lock(&mu);
    later.push_back([r, done](const v1::RolloutAck&) {
      v1::RolloutAck a;
      a.set_rollout_id(r.rollout_id());
      // Odd ids were not made durable (the learner is shutting down): not acked.
      if (r.rollout_id() % 2 == 1) a.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
      done(a);
    });
  };
  std::atomic<bool> returned{false};
  std::thread session([&] {
    EXPECT_TRUE(ServeRolloutStream(stream, o).ok());
    returned = true;
  });
  ASSERT_TRUE(WaitUntil([&] {
    absl::MutexLock lock(&mu);
    return later.size() == 4;
  }));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(returned.load()) << "the session waits for every submitted rollout's ack";
  // The acks come from another thread, as the ingest thread's do.
  std::thread ingest([&] {
    absl::MutexLock lock(&mu);
    for (AckFn& f : later) f({});
  });
  ingest.join();
  session.join();
  std::vector<uint64_t> acked;
  for (const auto& r : stream.sent()) {
    if (r.has_ack()) acked.push_back(r.ack().rollout_id());
  }
  EXPECT_EQ(acked, (std::vector<uint64_t>{2, 4})) << "UNAVAILABLE is not an ack";
}

TEST(RolloutStreamTest, StopsReadingWhenTheLearnerStops) {
  FakeStream stream;
  stream.Push(Hello());
  stream.PushRollout(1);
  std::atomic<bool> stop{false};
  std::atomic<int> submitted{0};
  RolloutStreamOptions o;
  o.initial_credits = 1;  // after one rollout the session waits for a credit that never comes
  o.queue_has_room = [] { return false; };
  o.stop = [&] { return stop.load(); };
  o.submit = [&](v1::Rollout, AckFn done) {
    ++submitted;
    done({});
  };
  std::thread session([&] { EXPECT_TRUE(ServeRolloutStream(stream, o).ok()); });
  ASSERT_TRUE(WaitUntil([&] { return submitted.load() == 1; }));
  stream.PushRollout(2);
  stop = true;
  session.join();  // returns without the client closing
  EXPECT_EQ(submitted.load(), 1);
}

TEST(RolloutStreamTest, ACancelledCallWaitingForCreditsEnds) {
  FakeStream stream;
  stream.Push(Hello());
  stream.PushRollout(1);
  std::atomic<bool> cancelled{false};
  std::atomic<int> submitted{0};
  RolloutStreamOptions o;
  o.initial_credits = 1;
  o.queue_has_room = [] { return false; };
  o.stop = [] { return false; };
  o.cancelled = [&] { return cancelled.load(); };
  o.submit = [&](v1::Rollout, AckFn done) {
    ++submitted;
    done({});
  };
  std::thread session([&] { EXPECT_TRUE(ServeRolloutStream(stream, o).ok()); });
  ASSERT_TRUE(WaitUntil([&] { return submitted.load() == 1; }));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(stream.reads(), 2) << "waiting for a credit, not reading";
  cancelled = true;
  stream.CloseWrites();  // a cancelled call's Read fails, as gRPC's does
  session.join();
  EXPECT_EQ(submitted.load(), 1);
}

}  // namespace
}  // namespace rhythm::learner

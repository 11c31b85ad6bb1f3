#include "learner/rollout_stream.h"

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/bounded_queue.h"

namespace rhythm::learner {

namespace {

// Why Read returned false. gRPC's synchronous API says only "no message", whether the client
// half-closed, the call was cancelled, or the bytes did not parse. A failed parse is the one
// case where gRPC has handed the message to protobuf, which clears it first; so the message
// is marked before each Read and a mark that is gone means the bytes were unparseable.
constexpr char kUnread[] = "\x01unread";

void MarkUnread(v1::RolloutStreamRequest& req) {
  req.Clear();
  req.mutable_hello()->set_run_id(kUnread);
}

bool ParseFailed(const v1::RolloutStreamRequest& req) {
  return !(req.has_hello() && req.hello().run_id() == kUnread);
}

}  // namespace

grpc::Status ServeRolloutStream(RolloutStream& stream, const RolloutStreamOptions& o) {
  auto ended = [&](const char* how) {
    if (o.ended) o.ended(how);
  };
  v1::RolloutStreamRequest req;
  MarkUnread(req);
  if (!stream.Read(&req)) {
    const bool unparseable = ParseFailed(req);
    ended(unparseable ? "unparseable" : o.cancelled() ? "cancelled" : "no_hello");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        unparseable ? "the first message is not a RolloutStreamRequest"
                                    : "the first message on the stream must be hello");
  }
  if (o.touched) o.touched();
  if (!req.has_hello()) {
    ended("no_hello");
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on the stream must be hello");
  }
  if (o.hello) {
    if (grpc::Status s = o.hello(req.hello()); !s.ok()) {
      ended("refused");
      return s;
    }
  }
  common::BoundedQueue<v1::RolloutAck> acks(1 << 16);
  std::atomic<int64_t> owed{0};
  std::atomic<int64_t> granted{o.initial_credits};
  std::thread writer([&] {
    v1::RolloutStreamResponse first;
    first.set_credit(static_cast<uint32_t>(o.initial_credits));
    stream.Write(first);
    while (true) {
      std::optional<v1::RolloutAck> ack = acks.PopWithTimeout(absl::Milliseconds(50));
      if (ack && ack->code() == static_cast<int>(absl::StatusCode::kUnavailable)) continue;
      if (ack) {
        v1::RolloutStreamResponse out;
        *out.mutable_ack() = *ack;
        if (o.queue_has_room()) {
          out.set_granted_credits(1);
        } else {
          ++owed;
        }
        if (!stream.Write(out)) break;
        granted += out.granted_credits();
        continue;
      }
      if (acks.closed()) break;
      if (owed.load() > 0 && o.queue_has_room()) {
        v1::RolloutStreamResponse out;
        out.set_credit(static_cast<uint32_t>(owed.exchange(0)));
        if (!stream.Write(out)) break;
        granted += out.credit();
      }
    }
  });
  // Acks may arrive after this function returned (durability is asynchronous): they hold a
  // shared handle to the queue's liveness and are dropped once the stream is gone.
  auto alive = std::make_shared<std::atomic<bool>>(true);
  auto pending = std::make_shared<std::atomic<int64_t>>(0);
  int64_t received = 0;
  const char* how = "stopping";
  grpc::Status status = grpc::Status::OK;
  while (!o.stop()) {
    // Cancellation is only polled while waiting for credits (a cancelled call's Read returns
    // false anyway): grpc::ServerContext::IsCancelled polls its completion queue, which per
    // message halved the ingest rate.
    // (A client out of credits is not idle: the learner is the one holding it up.)
    while (!o.stop() && !o.cancelled() && received >= granted.load()) {
      if (o.touched) o.touched();
      absl::SleepFor(absl::Milliseconds(5));
    }
    if (o.stop()) break;
    MarkUnread(req);
    if (!stream.Read(&req)) {
      if (ParseFailed(req)) {
        how = "unparseable";
        status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "a message on the stream is not a RolloutStreamRequest");
      } else {
        how = o.cancelled() ? "cancelled" : "half_close";
      }
      break;
    }
    if (o.touched) o.touched();
    if (!req.has_rollout()) continue;
    ++received;
    pending->fetch_add(1);
    o.submit(std::move(*req.mutable_rollout()), [&acks, alive, pending](const v1::RolloutAck& a) {
      if (alive->load()) acks.TryPush(a);
      pending->fetch_sub(1);
    });
  }
  // Let in-flight rollouts finish becoming durable (every submit ends in exactly one `done`),
  // so their acks go out on this stream while it is open.
  while (pending->load() > 0) absl::SleepFor(absl::Milliseconds(5));
  alive->store(false);
  acks.Close();
  writer.join();
  ended(how);
  return status;
}

}  // namespace rhythm::learner

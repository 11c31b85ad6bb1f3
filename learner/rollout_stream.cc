#include "learner/rollout_stream.h"

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "common/bounded_queue.h"

namespace rhythm::learner {

grpc::Status ServeRolloutStream(RolloutStream& stream, const RolloutStreamOptions& o) {
  v1::RolloutStreamRequest req;
  if (!stream.Read(&req) || !req.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "the first message on the stream must be hello");
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
  while (!o.stop()) {
    // Cancellation is only polled while waiting for credits (a cancelled call's Read returns
    // false anyway): grpc::ServerContext::IsCancelled polls its completion queue, which per
    // message halved the ingest rate.
    while (!o.stop() && !o.cancelled() && received >= granted.load()) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    if (o.stop() || !stream.Read(&req)) break;
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
  return grpc::Status::OK;
}

}  // namespace rhythm::learner

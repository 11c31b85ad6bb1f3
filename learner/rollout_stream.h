// The learner's side of one actor's StreamRollouts call: the stream protocol (hello, credits,
// acks), apart from the gRPC service that owns the state. The learner's handler passes the
// stream and a `submit` that makes a rollout durable; everything about flow control is here
// (docs/architecture.md §4.7).
//
// Protocol:
//   - The first message from the client must be `hello`; otherwise INVALID_ARGUMENT.
//   - The first message to the client is `credit: initial_credits`.
//   - Credits are enforced, not just advertised: the stream is not read past what was granted.
//     A credit comes back with each ack (`granted_credits: 1`) while queue_has_room(); while
//     it has not, the credit is owed, and is sent as a `credit` message once there is room. So
//     a client that stops reading acks stops getting credits once its receive window is full,
//     then stops being read, and HTTP/2 flow control blocks its writes: the learner's memory
//     for the stream stays bounded.
//   - Every rollout read is submitted once; submit's `done` may run later, on another thread.
//     Its ack is written unless its code is UNAVAILABLE (not durable: the actor resends) or
//     the stream is gone by then (it is dropped).
//
// Threads: the caller's thread reads; one writer thread per stream writes (gRPC allows one of
// each at a time). ServeRolloutStream returns after the client half-closed, was cancelled, or
// stopping() turned true, and every submitted rollout's `done` has run.
#pragma once

#include <cstdint>
#include <functional>

#include "grpcpp/support/status.h"
#include "grpcpp/support/sync_stream.h"
#include "rhythm/v1/learner_service.pb.h"

namespace rhythm::learner {

using RolloutStream =
    grpc::ServerReaderWriterInterface<v1::RolloutStreamResponse, v1::RolloutStreamRequest>;
using AckFn = std::function<void(const v1::RolloutAck&)>;

struct RolloutStreamOptions {
  int64_t initial_credits = 64;
  // Whether the learner's queue can take more (credits are owed while it cannot).
  std::function<bool()> queue_has_room;
  // Whether to stop reading: the learner is stopping (checked once per message).
  std::function<bool()> stop;
  // Whether the call was cancelled (checked only while waiting for credits).
  std::function<bool()> cancelled = [] { return false; };
  // Takes one rollout; calls `done` exactly once with its ack, now or later, on any thread.
  std::function<void(v1::Rollout, AckFn done)> submit;
  // Checks the hello (ids, identity); a non-OK status ends the stream with it. Optional.
  std::function<grpc::Status(const v1::StreamHello&)> hello;
  // Called after each message read (idle timeouts). Optional.
  std::function<void()> touched;
  // Called once when the stream ends, with how: "half_close" (the client finished),
  // "cancelled" (the call was cancelled or failed in gRPC), "unparseable" (a message that is
  // not a RolloutStreamRequest; the stream ends with INVALID_ARGUMENT), "no_hello",
  // "refused" (hello() said no) or "stopping". Optional.
  std::function<void(const char* how)> ended;
};

grpc::Status ServeRolloutStream(RolloutStream& stream, const RolloutStreamOptions& options);

}  // namespace rhythm::learner

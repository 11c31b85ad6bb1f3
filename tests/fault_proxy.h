// FaultProxy: an in-process TCP proxy for fault tests. It listens on a free loopback port and
// forwards every accepted connection to an upstream port (the learner's), byte for byte, until
// told to misbehave:
//
//   actor ──TCP──▶ FaultProxy(port()) ──TCP──▶ 127.0.0.1:upstream_port (rhythm-learner)
//
//   - reply dropping: each reply chunk the upstream sends back is, with probability p
//     (seeded), not forwarded; the proxy cuts that connection instead (shutdown + close, both
//     sides). The upstream has then read and acted on the requests before it (journaled a
//     lease, acked a rollout) whose reply the client never sees. gRPC multiplexes every call on
//     one connection, so a cut fails every call in flight on it; the client reconnects.
//     With Options::http2 (gRPC's framing) a reply chunk is one that holds the start of an
//     HTTP/2 HEADERS, CONTINUATION or DATA frame, i.e. part of some call's response; control
//     frames (SETTINGS, PING, WINDOW_UPDATE, GOAWAY) are always forwarded, so a cut never
//     comes before the upstream has answered. Without it, every upstream chunk is a reply.
//   - DropNextReply(): one shot of the above with p = 1, at the first reply chunk that follows
//     request bytes forwarded after the call (an idle gRPC connection sends no replies, so
//     that is the reply to the next request).
//   - Blackhole(d): for d nothing is forwarded either way (connections stall, new ones are
//     accepted and stall too), then every connection open during it is cut.
//
// Upstream refusing (the learner is down) closes the client's connection at once, as a refused
// connect would look to it. Each connection is served by one thread; all are joined by the
// destructor. Thread-safety: every method may be called from any thread.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rhythm::testing {

class FaultProxy {
 public:
  struct Options {
    int upstream_port = 0;  // on 127.0.0.1
    uint64_t seed = 1;      // the reply-drop coin
    bool http2 = true;      // parse the upstream's bytes as HTTP/2 frames (see above)
  };
  struct Counters {
    int64_t connections = 0;      // accepted from clients
    int64_t refused = 0;          // accepted but the upstream could not be reached
    int64_t replies_dropped = 0;  // connections cut instead of forwarding a reply chunk
    int64_t blackhole_cuts = 0;   // connections cut at the end of a blackhole
    int64_t bytes_up = 0;         // client -> upstream, forwarded
    int64_t bytes_down = 0;       // upstream -> client, forwarded
  };

  // Listens on 127.0.0.1:<free port> and starts accepting. INTERNAL naming the call on a
  // socket error.
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(const Options& options);
  // Stops accepting, cuts every connection, joins every thread.
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const { return port_; }
  // Probability in [0, 1] that a reply chunk is dropped (its connection cut); 0 = forward all.
  void SetReplyDropProbability(double p);
  // Cuts the connection at the first reply chunk after request bytes forwarded from now on.
  void DropNextReply();
  // Forwards nothing for `duration` (from now), then cuts what was open during it.
  void Blackhole(absl::Duration duration);
  Counters counters() const;

 private:
  struct Conn {
    int client_fd = -1;
    int server_fd = -1;
    bool closed = false;  // guarded by FaultProxy::mu_; fds are closed only under it
  };
  explicit FaultProxy(int listen_fd, int port, const Options& options);
  void AcceptLoop();
  void Serve(std::shared_ptr<Conn> conn);
  // Shuts down and closes both fds of `conn` once.
  void CloseConn(Conn& conn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What to do with a reply chunk that just arrived: true = cut instead of forwarding.
  bool ShouldDropReply();

  const int listen_fd_;
  const int port_;
  const Options options_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;

  mutable absl::Mutex mu_;
  std::vector<std::shared_ptr<Conn>> conns_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_);
  double drop_p_ ABSL_GUARDED_BY(mu_) = 0;
  bool drop_next_armed_ ABSL_GUARDED_BY(mu_) = false;
  bool drop_next_primed_ ABSL_GUARDED_BY(mu_) = false;  // request bytes went up since armed
  absl::Time blackhole_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  Counters counters_ ABSL_GUARDED_BY(mu_);
};

// 127.0.0.1:port as a socket address (port 0: any free port, for bind).
sockaddr_in Loopback(int port);

}  // namespace rhythm::testing

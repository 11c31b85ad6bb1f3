// MetricsServer: serves a Prometheus registry on /metrics (text format 0.0.4) over HTTP.
//
// Every rhythm process owns one, built in main from the address in its config; components
// register their metric families in the shared registry (one metrics struct per component).
// Bind "127.0.0.1:0" in tests and read port() back.
//
// Why not prometheus-cpp's Exposer: it runs civetweb, whose worker threads get a fixed 100 KB
// stack, and in a process that has loaded LibTorch (large static TLS) glibc refuses to create
// them ("Cannot create first worker thread"). So this is a small HTTP/1.x server of our own: one
// thread that polls every open connection at once, GET /metrics -> 200, anything else -> 404.
// prometheus-cpp still provides the registry and the text serializer.
// A slow client cannot hold scrapes hostage: each connection has kMetricsRequestTimeout from
// accept to send its request head (at most 16 KB) and is cut after it, while the others are
// served; at most kMetricsMaxConnections wait at once (more are refused), and a response write
// gives up after the same timeout.
// With a bearer token, every request must carry `Authorization: Bearer <token>` (Prometheus:
// `authorization: {credentials_file: ...}`); others get 401. For TLS, bind the endpoint to
// loopback and put a TLS proxy in front (deploy/README.md).
// Thread-safe after Start(); the destructor stops the thread.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace rhythm::common {

inline constexpr double kMetricsRequestTimeoutSeconds = 2.0;
inline constexpr int kMetricsMaxConnections = 64;

class MetricsServer {
 public:
  // Listens on `address` ("host:port"; host may be a name, an IPv4 address or 0.0.0.0; port 0
  // picks a free one). INVALID_ARGUMENT for a malformed address, UNAVAILABLE when it cannot
  // bind; both name the address.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& address, std::shared_ptr<prometheus::Registry> registry,
      std::string bearer_token = "");
  ~MetricsServer();

  // The bound port (the real one when 0 was asked for).
  int port() const { return port_; }

 private:
  MetricsServer(int listen_fd, int port, std::shared_ptr<prometheus::Registry> registry,
                std::string bearer_token);
  void Serve();
  // Answers one complete (or oversized) request head on `fd`.
  void Respond(int fd, const std::string& request);

  const int listen_fd_;
  const int port_;
  const std::shared_ptr<prometheus::Registry> registry_;
  const std::string bearer_token_;  // empty: no authentication
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The registry's current contents in Prometheus text format (what /metrics would return, without
// the exposer's own series). For tests and for tools that print metrics.
std::string SerializeMetrics(const prometheus::Registry& registry);

// GETs http://127.0.0.1:<port>/metrics over a plain socket and returns the whole HTTP response
// (status line, headers, body). For tests, `rhythm selfcheck` and tools. UNAVAILABLE when the
// connection fails.
// With `bearer_token`, sends it in an Authorization header.
absl::StatusOr<std::string> ScrapeLocal(int port, const std::string& path = "/metrics",
                                        const std::string& bearer_token = "");

}  // namespace rhythm::common

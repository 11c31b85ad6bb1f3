#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace rhythm::common {
namespace {

// Writes all of `data`; false if the peer went away.
bool WriteAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string HttpResponse(int code, const char* reason, const std::string& content_type,
                         const std::string& body) {
  return absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
}

// Whether the request head has `Authorization: Bearer <token>` (header name in any case).
bool HasBearer(const std::string& request, const std::string& token) {
  for (absl::string_view line : absl::StrSplit(request, "\r\n")) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos ||
        !absl::EqualsIgnoreCase(line.substr(0, colon), "authorization")) {
      continue;
    }
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (!absl::StartsWith(value, "Bearer ")) return false;
    const absl::string_view given = value.substr(7);
    // Compared in full whatever the first difference, so timing says nothing about the token.
    unsigned diff = given.size() != token.size() ? 1u : 0u;
    for (size_t i = 0; i < given.size(); ++i) {
      diff |= static_cast<unsigned>(given[i] ^ token[i % token.size()]);
    }
    return diff == 0;
  }
  return false;
}

}  // namespace

MetricsServer::MetricsServer(int listen_fd, int port,
                             std::shared_ptr<prometheus::Registry> registry,
                             std::string bearer_token)
    : listen_fd_(listen_fd),
      port_(port),
      registry_(std::move(registry)),
      bearer_token_(std::move(bearer_token)) {
  thread_ = std::thread([this] { Serve(); });
}

MetricsServer::~MetricsServer() {
  stop_ = true;
  thread_.join();
  close(listen_fd_);
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& address, std::shared_ptr<prometheus::Registry> registry,
    std::string bearer_token) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: address '", address, "' must look like host:port"));
  }
  std::string host = address.substr(0, colon);
  if (host.empty() || host == "*") host = "0.0.0.0";
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: cannot resolve host of address '", address, "'"));
  }
  sockaddr_in addr = *reinterpret_cast<sockaddr_in*>(found->ai_addr);
  freeaddrinfo(found);
  addr.sin_port = htons(static_cast<uint16_t>(port));

  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("metrics: socket() failed");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 16) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on '", address, "': ", std::strerror(err)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(fd, ntohs(addr.sin_port), std::move(registry), std::move(bearer_token)));
}

void MetricsServer::Serve() {
  struct Pending {
    int fd;
    std::string request;
    std::chrono::steady_clock::time_point deadline;
  };
  const auto timeout =
      std::chrono::milliseconds(static_cast<int64_t>(kMetricsRequestTimeoutSeconds * 1000));
  std::vector<Pending> pending;
  std::vector<pollfd> fds;
  char buf[2048];
  while (!stop_) {
    fds.assign(1, pollfd{listen_fd_, POLLIN, 0});
    for (const Pending& c : pending) fds.push_back(pollfd{c.fd, POLLIN, 0});
    // Wake every 100 ms to notice stop_ and deadlines.
    if (poll(fds.data(), fds.size(), 100) < 0) continue;
    const auto now = std::chrono::steady_clock::now();
    std::vector<Pending> still;
    for (size_t i = 0; i < pending.size(); ++i) {
      Pending& c = pending[i];
      bool done = false;
      if (fds[i + 1].revents & (POLLIN | POLLHUP | POLLERR)) {
        const ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
        if (n <= 0) {
          done = true;
        } else {
          c.request.append(buf, static_cast<size_t>(n));
          if (c.request.find("\r\n\r\n") != std::string::npos || c.request.size() >= 16384) {
            Respond(c.fd, c.request);
            done = true;
          }
        }
      }
      if (!done && now >= c.deadline) done = true;  // too slow: cut, the others go on
      if (done) {
        close(c.fd);
      } else {
        still.push_back(std::move(c));
      }
    }
    pending = std::move(still);
    if (fds[0].revents & POLLIN) {
      const int conn = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (conn < 0) continue;
      if (static_cast<int>(pending.size()) >= kMetricsMaxConnections) {
        close(conn);
        continue;
      }
      // A response write to a client that does not read gives up after the timeout too.
      timeval tv{static_cast<time_t>(kMetricsRequestTimeoutSeconds), 0};
      setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      pending.push_back({conn, "", now + timeout});
    }
  }
  for (const Pending& c : pending) close(c.fd);
}

void MetricsServer::Respond(int fd, const std::string& request) {
  const size_t line_end = request.find("\r\n");
  const std::string line = request.substr(0, line_end);
  // "GET /metrics HTTP/1.1" (a query string is ignored).
  const bool is_get = line.rfind("GET ", 0) == 0;
  std::string path = is_get ? line.substr(4, line.find(' ', 4) - 4) : "";
  path = path.substr(0, path.find('?'));
  if (!bearer_token_.empty() && !HasBearer(request, bearer_token_)) {
    WriteAll(fd, absl::StrCat("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\n"
                              "Content-Type: text/plain\r\nContent-Length: 26\r\n"
                              "Connection: close\r\n\r\nauthorization is required\n"));
    return;
  }
  if (is_get && (path == "/metrics" || path == "/")) {
    WriteAll(fd, HttpResponse(200, "OK", "text/plain; version=0.0.4; charset=utf-8",
                              SerializeMetrics(*registry_)));
  } else if (!is_get) {
    WriteAll(fd, HttpResponse(405, "Method Not Allowed", "text/plain", "only GET\n"));
  } else {
    WriteAll(fd, HttpResponse(404, "Not Found", "text/plain", "try /metrics\n"));
  }
}

std::string SerializeMetrics(const prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

absl::StatusOr<std::string> ScrapeLocal(int port, const std::string& path,
                                        const std::string& bearer_token) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError("metrics: socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("metrics: cannot connect to 127.0.0.1:", port));
  }
  const std::string auth =
      bearer_token.empty() ? "" : absl::StrCat("Authorization: Bearer ", bearer_token, "\r\n");
  if (!WriteAll(fd, absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: localhost\r\n", auth,
                                 "\r\n"))) {
    close(fd);
    return absl::UnavailableError("metrics: write failed");
  }
  std::string response;
  char buf[8192];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) response.append(buf, static_cast<size_t>(n));
  close(fd);
  return response;
}

}  // namespace rhythm::common

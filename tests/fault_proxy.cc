#include "tests/fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace rhythm::testing {
namespace {

absl::Status Errno(const char* what) {
  return absl::InternalError(absl::StrCat("fault proxy: ", what, ": ", std::strerror(errno)));
}


// Writes all of buf; false when the peer is gone.
bool WriteAll(int fd, const char* buf, ssize_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    buf += w;
    n -= w;
  }
  return true;
}

// Follows the HTTP/2 frames of one direction across chunks: a 9-byte header (24-bit payload
// length, type, flags, stream id), then the payload.
struct FrameScan {
  unsigned char header[9];
  int have = 0;       // header bytes seen of the frame being started
  uint64_t skip = 0;  // payload bytes of the current frame still to come
};

// Advances `scan` over `data`; true if a HEADERS (1), CONTINUATION (9) or DATA (0) frame starts
// in it: a call's response.
bool HoldsReply(FrameScan& scan, const char* data, size_t n) {
  bool reply = false;
  for (size_t i = 0; i < n;) {
    if (scan.skip > 0) {
      const size_t k = std::min<uint64_t>(scan.skip, n - i);
      scan.skip -= k;
      i += k;
      continue;
    }
    scan.header[scan.have++] = static_cast<unsigned char>(data[i++]);
    if (scan.have < 9) continue;
    const int type = scan.header[3];
    reply = reply || type == 0 || type == 1 || type == 9;
    scan.skip = uint64_t{scan.header[0]} << 16 | uint64_t{scan.header[1]} << 8 | scan.header[2];
    scan.have = 0;
  }
  return reply;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(const Options& options) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Errno("socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = Loopback(0);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 64) != 0) {
    const absl::Status s = Errno("bind/listen");
    close(fd);
    return s;
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<FaultProxy>(new FaultProxy(fd, ntohs(addr.sin_port), options));
}

FaultProxy::FaultProxy(int listen_fd, int port, const Options& options)
    : listen_fd_(listen_fd), port_(port), options_(options), rng_(options.seed) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

FaultProxy::~FaultProxy() {
  stop_ = true;
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    // Wakes the serving threads; each closes its own fds.
    for (const std::shared_ptr<Conn>& c : conns_) {
      if (c->closed) continue;
      shutdown(c->client_fd, SHUT_RDWR);
      shutdown(c->server_fd, SHUT_RDWR);
    }
    threads = std::move(threads_);
  }
  for (std::thread& t : threads) t.join();
  close(listen_fd_);
}

void FaultProxy::SetReplyDropProbability(double p) {
  absl::MutexLock lock(&mu_);
  drop_p_ = p;
}

void FaultProxy::DropNextReply() {
  absl::MutexLock lock(&mu_);
  drop_next_armed_ = true;
  drop_next_primed_ = false;
}

void FaultProxy::Blackhole(absl::Duration duration) {
  absl::MutexLock lock(&mu_);
  blackhole_until_ = absl::Now() + duration;
}

FaultProxy::Counters FaultProxy::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void FaultProxy::AcceptLoop() {
  while (!stop_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    const int client = accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    const int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in up = Loopback(options_.upstream_port);
    const bool connected =
        server >= 0 && connect(server, reinterpret_cast<sockaddr*>(&up), sizeof(up)) == 0;
    absl::MutexLock lock(&mu_);
    ++counters_.connections;
    if (!connected) {
      ++counters_.refused;
      if (server >= 0) close(server);
      close(client);
      continue;
    }
    const int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto conn = std::make_shared<Conn>();
    conn->client_fd = client;
    conn->server_fd = server;
    conns_.push_back(conn);
    threads_.emplace_back([this, conn] { Serve(conn); });
  }
}

void FaultProxy::CloseConn(Conn& conn) {
  if (conn.closed) return;
  conn.closed = true;
  shutdown(conn.client_fd, SHUT_RDWR);
  shutdown(conn.server_fd, SHUT_RDWR);
  close(conn.client_fd);
  close(conn.server_fd);
}

bool FaultProxy::ShouldDropReply() {
  absl::MutexLock lock(&mu_);
  if (drop_next_armed_ && drop_next_primed_) {
    drop_next_armed_ = false;
    return true;
  }
  return drop_p_ > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < drop_p_;
}

void FaultProxy::Serve(std::shared_ptr<Conn> conn) {
  std::vector<char> buf(64 << 10);
  FrameScan down;
  bool stalled = false;  // seen inside a blackhole
  while (!stop_.load()) {
    absl::Time blackhole_until;
    {
      absl::MutexLock lock(&mu_);
      blackhole_until = blackhole_until_;
    }
    if (absl::Now() < blackhole_until) {
      stalled = true;
      absl::SleepFor(absl::Milliseconds(20));
      continue;
    }
    if (stalled) {
      absl::MutexLock lock(&mu_);
      ++counters_.blackhole_cuts;
      break;
    }
    pollfd p[2] = {{conn->client_fd, POLLIN, 0}, {conn->server_fd, POLLIN, 0}};
    if (poll(p, 2, 50) <= 0) continue;
    {
      // A blackhole that began while this thread was polling holds the bytes that woke it.
      absl::MutexLock lock(&mu_);
      if (absl::Now() < blackhole_until_) continue;
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = read(conn->client_fd, buf.data(), buf.size());
      if (n <= 0 || !WriteAll(conn->server_fd, buf.data(), n)) break;
      absl::MutexLock lock(&mu_);
      counters_.bytes_up += n;
      if (drop_next_armed_) drop_next_primed_ = true;
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      const ssize_t n = read(conn->server_fd, buf.data(), buf.size());
      if (n <= 0) break;
      const bool reply = !options_.http2 || HoldsReply(down, buf.data(), static_cast<size_t>(n));
      if (reply && ShouldDropReply()) {
        absl::MutexLock lock(&mu_);
        ++counters_.replies_dropped;
        break;
      }
      if (!WriteAll(conn->client_fd, buf.data(), n)) break;
      absl::MutexLock lock(&mu_);
      counters_.bytes_down += n;
    }
  }
  absl::MutexLock lock(&mu_);
  CloseConn(*conn);
}

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  return addr;
}

}  // namespace rhythm::testing

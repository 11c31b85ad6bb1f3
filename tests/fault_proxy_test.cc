// FaultProxy against a loopback echo server: it forwards, it drops the next reply after the
// request reached upstream, it blackholes then cuts, and it closes clients when upstream is gone.
#include "tests/fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "gtest/gtest.h"

namespace rhythm::testing {
namespace {


// Echoes every byte back on every connection; counts the bytes it received.
class EchoServer {
 public:
  EchoServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = Loopback(0);
    bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    listen(fd_, 16);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      std::vector<std::thread> conns;
      while (!stop_) {
        pollfd p{fd_, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0) continue;
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) continue;
        conns.emplace_back([this, c] {
          char buf[4096];
          while (!stop_) {
            pollfd q{c, POLLIN, 0};
            if (poll(&q, 1, 50) <= 0) continue;
            const ssize_t n = read(c, buf, sizeof(buf));
            if (n <= 0) break;
            received_ += n;
            send(c, buf, static_cast<size_t>(n), MSG_NOSIGNAL);
          }
          close(c);
        });
      }
      for (std::thread& t : conns) t.join();
    });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }
  int64_t received() const { return received_.load(); }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> received_{0};
  std::thread thread_;
};

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = Loopback(port);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// What arrives within `ms` (or until `want` bytes came): the bytes, or "<eof>" appended when
// the connection closed.
std::string ReadFor(int fd, int ms, size_t want = SIZE_MAX) {
  std::string out;
  char buf[4096];
  for (int waited = 0; waited < ms && out.size() < want; waited += 10) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10) <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return out + "<eof>";
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

TEST(FaultProxy, ForwardsBothWays) {
  EchoServer echo;
  auto proxy = FaultProxy::Start({echo.port(), 1, /*http2=*/false});
  ASSERT_TRUE(proxy.ok()) << proxy.status();
  const int fd = Connect((*proxy)->port());
  ASSERT_EQ(send(fd, "hello", 5, 0), 5);
  EXPECT_EQ(ReadFor(fd, 1000, 5), "hello");
  close(fd);
  EXPECT_EQ((*proxy)->counters().bytes_up, 5);
  EXPECT_EQ((*proxy)->counters().replies_dropped, 0);
}

TEST(FaultProxy, DropNextReplyDeliversTheRequestAndCutsInsteadOfReplying) {
  EchoServer echo;
  auto proxy = FaultProxy::Start({echo.port(), 1, /*http2=*/false});
  ASSERT_TRUE(proxy.ok());
  const int fd = Connect((*proxy)->port());
  ASSERT_EQ(send(fd, "a", 1, 0), 1);
  EXPECT_EQ(ReadFor(fd, 1000, 1), "a") << "before arming: forwarded";
  (*proxy)->DropNextReply();
  ASSERT_EQ(send(fd, "b", 1, 0), 1);
  EXPECT_EQ(ReadFor(fd, 1000), "<eof>") << "the reply never comes: the connection is cut";
  EXPECT_EQ(echo.received(), 2) << "but upstream got the request";
  EXPECT_EQ((*proxy)->counters().replies_dropped, 1);
  close(fd);
  // One shot: the next connection works again.
  const int again = Connect((*proxy)->port());
  ASSERT_EQ(send(again, "c", 1, 0), 1);
  EXPECT_EQ(ReadFor(again, 1000, 1), "c");
  close(again);
}

// An HTTP/2 frame: 9-byte header (length, type, flags, stream 1) and `payload`.
std::string Frame(int type, const std::string& payload) {
  std::string f = {0, 0, static_cast<char>(payload.size()), static_cast<char>(type), 0, 0, 0, 0, 1};
  return f + payload;
}

TEST(FaultProxy, WithHttp2FramingOnlyResponseFramesCountAsReplies) {
  EchoServer echo;  // echoes frames back: the "upstream" answers with what it is sent
  auto proxy = FaultProxy::Start({echo.port(), 1, /*http2=*/true});
  ASSERT_TRUE(proxy.ok());
  const int fd = Connect((*proxy)->port());
  (*proxy)->DropNextReply();
  const std::string ping = Frame(6, "12345678"), window = Frame(8, "wxyz");
  ASSERT_EQ(send(fd, ping.data(), ping.size(), 0), static_cast<ssize_t>(ping.size()));
  EXPECT_EQ(ReadFor(fd, 1000, ping.size()), ping) << "a PING is not a reply: forwarded";
  ASSERT_EQ(send(fd, window.data(), window.size(), 0), static_cast<ssize_t>(window.size()));
  EXPECT_EQ(ReadFor(fd, 1000, window.size()), window) << "nor is a WINDOW_UPDATE";
  const std::string headers = Frame(1, "hdrs");
  ASSERT_EQ(send(fd, headers.data(), headers.size(), 0), static_cast<ssize_t>(headers.size()));
  EXPECT_EQ(ReadFor(fd, 1000), "<eof>") << "HEADERS is the reply: cut";
  EXPECT_EQ((*proxy)->counters().replies_dropped, 1);
  close(fd);
}

TEST(FaultProxy, ReplyDropProbabilityOneCutsEveryConnectionAtItsFirstReply) {
  EchoServer echo;
  auto proxy = FaultProxy::Start({echo.port(), 7, /*http2=*/false});
  ASSERT_TRUE(proxy.ok());
  (*proxy)->SetReplyDropProbability(1);
  for (int i = 0; i < 3; ++i) {
    const int fd = Connect((*proxy)->port());
    ASSERT_EQ(send(fd, "x", 1, 0), 1);
    EXPECT_EQ(ReadFor(fd, 1000), "<eof>");
    close(fd);
  }
  EXPECT_EQ((*proxy)->counters().replies_dropped, 3);
  EXPECT_EQ(echo.received(), 3);
}

TEST(FaultProxy, BlackholeForwardsNothingThenCuts) {
  EchoServer echo;
  auto proxy = FaultProxy::Start({echo.port(), 1, /*http2=*/false});
  ASSERT_TRUE(proxy.ok());
  const int fd = Connect((*proxy)->port());
  (*proxy)->Blackhole(absl::Milliseconds(400));
  ASSERT_EQ(send(fd, "q", 1, 0), 1);
  EXPECT_EQ(ReadFor(fd, 300), "") << "nothing comes back during the blackhole";
  EXPECT_EQ(echo.received(), 0) << "nothing goes up either";
  EXPECT_EQ(ReadFor(fd, 1000), "<eof>") << "cut when it ends";
  EXPECT_EQ((*proxy)->counters().blackhole_cuts, 1);
  close(fd);
}

TEST(FaultProxy, ClosesClientsWhileUpstreamIsDown) {
  int port;
  {
    EchoServer gone;
    port = gone.port();
  }
  auto proxy = FaultProxy::Start({port, 1, /*http2=*/false});
  ASSERT_TRUE(proxy.ok());
  const int fd = Connect((*proxy)->port());
  EXPECT_EQ(ReadFor(fd, 1000), "<eof>");
  close(fd);
  EXPECT_EQ((*proxy)->counters().refused, 1);
}

}  // namespace
}  // namespace rhythm::testing

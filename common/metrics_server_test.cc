#include "common/metrics_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace rhythm::common {
namespace {

TEST(MetricsServer, ServesRegisteredMetricsOnAnEphemeralPort) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter()
                     .Name("rhythm_test_events_total")
                     .Help("Events seen by the test")
                     .Register(*registry);
  family.Add({{"kind", "a"}}).Increment(3);
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  absl::StatusOr<std::string> scraped = ScrapeLocal((*server)->port());
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  const std::string& body = *scraped;
  EXPECT_NE(body.find("200 OK"), std::string::npos) << body;
  EXPECT_NE(body.find("rhythm_test_events_total{kind=\"a\"} 3"), std::string::npos) << body;
  absl::StatusOr<std::string> missing = ScrapeLocal((*server)->port(), "/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_NE(missing->find("404"), std::string::npos) << *missing;
  EXPECT_NE(SerializeMetrics(*registry).find("# TYPE rhythm_test_events_total counter"),
            std::string::npos);
}

TEST(MetricsServer, BearerTokenGuardsEveryPath) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("rhythm_test_secret_total").Help("h").Register(*registry).Add({});
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      MetricsServer::Start("127.0.0.1:0", registry, "tok-123");
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  for (const std::string& token : {std::string(), std::string("tok-12"), std::string("tok-1234"),
                                   std::string("TOK-123")}) {
    absl::StatusOr<std::string> r = ScrapeLocal(port, "/metrics", token);
    ASSERT_TRUE(r.ok());
    EXPECT_NE(r->find("401 Unauthorized"), std::string::npos) << token << ": " << *r;
    EXPECT_EQ(r->find("rhythm_test_secret_total"), std::string::npos) << token;
  }
  absl::StatusOr<std::string> ok = ScrapeLocal(port, "/metrics", "tok-123");
  ASSERT_TRUE(ok.ok());
  EXPECT_NE(ok->find("200 OK"), std::string::npos) << *ok;
  EXPECT_NE(ok->find("rhythm_test_secret_total"), std::string::npos);
  // Unknown paths are not revealed either.
  absl::StatusOr<std::string> other = ScrapeLocal(port, "/nope");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->find("401"), std::string::npos) << *other;
}

TEST(MetricsServer, BindFailureIsUnavailableNamingTheAddress) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(first.ok());
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = MetricsServer::Start(taken, registry);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(taken), std::string::npos) << second.status();
}

TEST(MetricsServer, MalformedAddressIsInvalidArgument) {
  auto registry = std::make_shared<prometheus::Registry>();
  for (const std::string address : {"localhost", "127.0.0.1:99999", "127.0.0.1:abc"}) {
    auto server = MetricsServer::Start(address, registry);
    ASSERT_FALSE(server.ok()) << address;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_NE(server.status().message().find(address), std::string::npos) << server.status();
  }
}

TEST(MetricsServer, ServesRepeatedScrapesAndSeesUpdates) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& counter = prometheus::BuildCounter()
                      .Name("rhythm_test_scrapes_total")
                      .Help("h")
                      .Register(*registry)
                      .Add({});
  auto server = MetricsServer::Start("localhost:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  for (int i = 1; i <= 20; ++i) {
    counter.Increment();
    absl::StatusOr<std::string> body = ScrapeLocal((*server)->port());
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_NE(body->find("rhythm_test_scrapes_total " + std::to_string(i)), std::string::npos)
        << *body;
  }
}

int ConnectLocal(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

// Seconds until the server closes `fd` (recv returns 0 or fails), sending `trickle` one byte
// every 300 ms meanwhile (empty: sends nothing); -1 if still open after `limit` seconds.
double SecondsUntilCut(int fd, const std::string& trickle, double limit) {
  const auto start = std::chrono::steady_clock::now();
  size_t sent = 0;
  char buf[256];
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < limit) {
    if (sent < trickle.size()) send(fd, trickle.data() + sent++, 1, MSG_NOSIGNAL);
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 300) > 0 && recv(fd, buf, sizeof(buf), 0) <= 0) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  }
  return -1;
}

// The probe: one client trickling a byte every 1.5 s made every scrape time out. Now
// scrapes are answered while a trickler and a crowd of idle connections wait, and the slow ones
// are cut after kMetricsRequestTimeoutSeconds.
TEST(MetricsServer, SlowClientsDoNotHoldScrapesHostage) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter().Name("rhythm_test_up_total").Help("h").Register(*registry).Add({});
  auto server = MetricsServer::Start("127.0.0.1:0", registry);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  const int trickler = ConnectLocal(port);
  std::vector<int> idle;
  for (int i = 0; i < 10; ++i) idle.push_back(ConnectLocal(port));
  double trickler_cut = -2;
  std::thread slow(
      [&] { trickler_cut = SecondsUntilCut(trickler, "GET /metrics HTTP/1.1\r\nHost: x\r\n", 6); });
  absl::SleepFor(absl::Milliseconds(200));
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<std::string> body = ScrapeLocal(port);
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_NE(body->find("rhythm_test_up_total"), std::string::npos);
    EXPECT_LT(took, 0.5) << "scrape " << i << " waited behind the slow clients";
    absl::SleepFor(absl::Milliseconds(200));
  }
  slow.join();
  EXPECT_GT(trickler_cut, 1.5) << "the trickler is given the request timeout";
  EXPECT_LT(trickler_cut, kMetricsRequestTimeoutSeconds + 1.0) << "and cut after it (-1: never)";
  for (int fd : idle) {
    const double cut = SecondsUntilCut(fd, "", 3);
    EXPECT_GE(cut, 0) << "an idle connection is cut too";
    close(fd);
  }
  close(trickler);
}

}  // namespace
}  // namespace rhythm::common

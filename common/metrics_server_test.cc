#include "common/metrics_server.h"

#include <string>

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

}  // namespace
}  // namespace rhythm::common

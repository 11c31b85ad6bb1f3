// The Gloo weight group against real member processes (rhythm-weight-peer): kill -9 of a
// member in the middle of a broadcast, and a member stalled with SIGSTOP. The host (learner
// side) is in this process; it must re-form the group without the dead or stalled member and
// deliver to the others within the collective timeout, and never block a publisher.
#include <signal.h>

#include <map>
#include <random>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/crc32c.h"
#include "common/weights/test_host.h"
#include "gtest/gtest.h"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

using common::weights::RandomBytes;
using common::weights::TestHost;
using common::weights::TestHostOptions;

constexpr double kTimeoutS = 2.0;  // the group's collective timeout in these tests

struct Peer {
  ChildProcess p;
  std::string id;
  std::map<int64_t, uint32_t> crc_by_version;  // what it printed

  void Start(const std::string& address, const std::string& name,
             std::vector<std::string> extra = {}) {
    id = name;
    std::vector<std::string> args = {BinaryPath("rhythm-weight-peer"),
                                     "--address",
                                     address,
                                     "--transport",
                                     "gloo",
                                     "--id",
                                     name};
    for (auto& a : extra) args.push_back(a);
    ASSERT_TRUE(p.Start(args, ::testing::TempDir() + "/weight_peer_" + name + ".log"));
  }
  // Reads lines until `version` was reported or `seconds` pass; returns its CRC (0 if none).
  uint32_t WaitFor(int64_t version, double seconds) {
    const absl::Time end = absl::Now() + absl::Seconds(seconds);
    while (crc_by_version.count(version) == 0 && absl::Now() < end) {
      const std::string line = p.ReadLine(absl::ToDoubleSeconds(end - absl::Now()));
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      // peer ID version V bytes B crc C seconds S via T
      if (f.size() == 12 && f[0] == "peer") {
        crc_by_version[std::stoll(f[3])] = static_cast<uint32_t>(std::stoul(f[7]));
      }
    }
    return crc_by_version.count(version) ? crc_by_version[version] : 0;
  }
};

TestHostOptions Options() {
  TestHostOptions o;
  o.gloo_group = true;
  o.timeout = absl::Seconds(kTimeoutS);
  o.bucket_bytes = 1 << 20;
  return o;
}

TEST(WeightGroupProcesses, KillNineMidBroadcastReformsAndCarriesOn) {
  TestHost host(Options());
  Peer a, b, c;
  a.Start(host.address(), "a");
  b.Start(host.address(), "b");
  // c dies (SIGKILL) after 3 of version 2's 16 buckets.
  c.Start(host.address(), "c", {"--die-at-version", "2", "--die-after-bucket", "3"});
  ASSERT_TRUE(host.WaitForGroupSize(3, absl::Seconds(30)));

  const std::string v1 = RandomBytes(16 << 20, 1);
  host.Publish(1, v1);
  for (Peer* p : {&a, &b, &c}) EXPECT_EQ(p->WaitFor(1, 30), common::Crc32c(v1)) << p->id;

  const std::string v2 = RandomBytes(16 << 20, 2);
  const absl::Time publish = absl::Now();
  host.Publish(2, v2);
  EXPECT_LT(absl::Now() - publish, absl::Seconds(1)) << "publishing never waits on the group";
  const int64_t reforms = host.group()->reforms();
  for (Peer* p : {&a, &b}) EXPECT_EQ(p->WaitFor(2, 30), common::Crc32c(v2)) << p->id;
  const double took = absl::ToDoubleSeconds(absl::Now() - publish);
  // Detection within the timeout, one re-form (its ready wait is bounded by the timeout too),
  // then a 16 MB broadcast on loopback.
  EXPECT_LT(took, 3 * kTimeoutS + 5) << "the survivors got version 2 after " << took << " s";
  EXPECT_EQ(c.p.Stop(0, 10), 128 + SIGKILL) << "c died by kill -9 mid-broadcast";
  EXPECT_EQ(host.group()->group_size(), 2);
  EXPECT_GE(host.metrics().failures.Value() + host.group()->reforms() - reforms, 1)
      << "the broadcast failed or the group re-formed without c";
  host.WaitForBroadcast(2, absl::Seconds(20));
  EXPECT_EQ(host.group()->last_broadcast_version(), 2);

  // And it carries on: version 3 reaches both.
  const std::string v3 = RandomBytes(1 << 20, 3);
  host.Publish(3, v3);
  for (Peer* p : {&a, &b}) EXPECT_EQ(p->WaitFor(3, 30), common::Crc32c(v3)) << p->id;
}

TEST(WeightGroupProcesses, AStalledMemberIsDroppedAndRejoinsWhenItWakes) {
  TestHost host(Options());
  Peer a, slow;
  a.Start(host.address(), "a");
  slow.Start(host.address(), "slow");
  ASSERT_TRUE(host.WaitForGroupSize(2, absl::Seconds(30)));
  const std::string v1 = RandomBytes(4 << 20, 4);
  host.Publish(1, v1);
  for (Peer* p : {&a, &slow}) EXPECT_EQ(p->WaitFor(1, 30), common::Crc32c(v1)) << p->id;

  ASSERT_EQ(kill(slow.p.pid(), SIGSTOP), 0);
  const std::string v2 = RandomBytes(4 << 20, 5);
  const absl::Time publish = absl::Now();
  host.Publish(2, v2);
  // The broadcast times out, the re-form's ready wait drops the stalled member (its stream
  // ends: it will use gRPC), and a alone gets version 2.
  EXPECT_EQ(a.WaitFor(2, 30), common::Crc32c(v2));
  const double took = absl::ToDoubleSeconds(absl::Now() - publish);
  EXPECT_LT(took, 3 * kTimeoutS + 5) << took;
  EXPECT_GE(host.metrics().sync.fallbacks.Value(), 1) << "the stalled member was dropped";
  EXPECT_EQ(host.group()->group_size(), 1);

  // Woken up, it joins again and is brought to the current version without a new publish.
  ASSERT_EQ(kill(slow.p.pid(), SIGCONT), 0);
  EXPECT_EQ(slow.WaitFor(2, 30), common::Crc32c(v2));
  EXPECT_TRUE(host.WaitForGroupSize(2, absl::Seconds(30)));
}

}  // namespace
}  // namespace rhythm::testing

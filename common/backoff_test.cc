#include "common/backoff.h"

#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

TEST(Backoff, WithoutJitterDoublesUpToMax) {
  Backoff b({absl::Milliseconds(100), absl::Milliseconds(1000), 2.0, 0.0}, 1);
  EXPECT_EQ(b.Next(), absl::Milliseconds(100));
  EXPECT_EQ(b.Next(), absl::Milliseconds(200));
  EXPECT_EQ(b.Next(), absl::Milliseconds(400));
  EXPECT_EQ(b.Next(), absl::Milliseconds(800));
  EXPECT_EQ(b.Next(), absl::Milliseconds(1000));
  EXPECT_EQ(b.Next(), absl::Milliseconds(1000));
  b.Reset();
  EXPECT_EQ(b.Next(), absl::Milliseconds(100));
}

TEST(Backoff, JitterStaysWithinBandAndIsSeeded) {
  BackoffOptions opts{absl::Milliseconds(100), absl::Seconds(10), 2.0, 0.5};
  Backoff a(opts, 42), b(opts, 42), c(opts, 43);
  bool any_difference = false;
  for (int n = 0; n < 8; ++n) {
    const double base = std::min(10.0, 0.1 * (1 << n));
    const absl::Duration da = a.Next();
    EXPECT_EQ(da, b.Next()) << "same seed, same delays";
    if (da != c.Next()) any_difference = true;
    EXPECT_GE(absl::ToDoubleSeconds(da), 0.5 * base - 1e-9) << "attempt " << n;
    EXPECT_LE(absl::ToDoubleSeconds(da), base + 1e-9) << "attempt " << n;
  }
  EXPECT_TRUE(any_difference) << "different seeds should jitter differently";
}

TEST(Backoff, ManyAttemptsNeverOverflow) {
  Backoff b({absl::Milliseconds(1), absl::Seconds(3), 10.0, 0.0}, 7);
  for (int i = 0; i < 1000; ++i) b.Next();
  EXPECT_EQ(b.Next(), absl::Seconds(3));
}

}  // namespace
}  // namespace rhythm::common

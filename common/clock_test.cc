#include "common/clock.h"

#include <atomic>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

TEST(FakeClock, MovesOnlyWhenAdvanced) {
  FakeClock clock(absl::FromUnixSeconds(100));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(100));
  clock.Advance(absl::Seconds(5));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(105));
}

TEST(FakeClock, SleepWakesWhenTimeIsAdvancedFarEnough) {
  FakeClock clock;
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    clock.SleepFor(absl::Seconds(10));
    woke = true;
  });
  while (clock.sleepers() == 0) absl::SleepFor(absl::Milliseconds(1));
  clock.Advance(absl::Seconds(9));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(woke.load());
  clock.Advance(absl::Seconds(1));
  sleeper.join();
  EXPECT_TRUE(woke.load());
}

TEST(RealClock, NowAdvances) {
  RealClock& clock = RealClock::Get();
  const absl::Time a = clock.Now();
  clock.SleepFor(absl::Milliseconds(5));
  EXPECT_GE(clock.Now() - a, absl::Milliseconds(4));
}

}  // namespace
}  // namespace rhythm::common

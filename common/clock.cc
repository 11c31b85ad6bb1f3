#include "common/clock.h"

#include "absl/time/clock.h"

namespace rhythm::common {

absl::Time RealClock::Now() { return absl::Now(); }
void RealClock::SleepFor(absl::Duration d) { absl::SleepFor(d); }
RealClock& RealClock::Get() {
  static RealClock* clock = new RealClock();
  return *clock;
}

absl::Time FakeClock::Now() {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::SleepFor(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  const absl::Time wake = now_ + d;
  ++sleepers_;
  auto reached = [this, wake]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return now_ >= wake; };
  mu_.Await(absl::Condition(&reached));
  --sleepers_;
}

void FakeClock::Advance(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  now_ += d;
}

int FakeClock::sleepers() const {
  absl::MutexLock lock(&mu_);
  return sleepers_;
}

}  // namespace rhythm::common

// Clock: the injectable source of time. Production code takes a `Clock&` (RealClock in main);
// tests pass a FakeClock and move time by hand, so lease expiry, heartbeats and backoff are
// deterministic.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rhythm::common {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
  // Blocks the caller for `d` of this clock's time.
  virtual void SleepFor(absl::Duration d) = 0;
};

// Wall-clock time. Thread-safe.
class RealClock final : public Clock {
 public:
  absl::Time Now() override;
  void SleepFor(absl::Duration d) override;
  // A process-wide instance.
  static RealClock& Get();
};

// Time that moves only when told. SleepFor(d) blocks until another thread has advanced the
// clock by at least d (or returns at once for d <= 0). Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}
  absl::Time Now() override;
  void SleepFor(absl::Duration d) override;
  void Advance(absl::Duration d);
  // Number of threads currently blocked in SleepFor (lets tests wait for a sleeper).
  int sleepers() const;

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  int sleepers_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rhythm::common

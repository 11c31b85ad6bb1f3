// A slow disk for tests and bench_learner_latency: LD_PRELOAD'ed into a real rhythm-learner
// (build/bin/librhythm_slow_fsync.so), it makes every fsync(2) and fdatasync(2) sleep
// RHYTHM_SLOW_FSYNC_MS milliseconds (default 5) before the real call. This machine's disk syncs
// in about 0.2 ms at the median, so without it a sync is too short to see what waits for it;
// network disks and busy SSDs take milliseconds. Test-only: no rhythm binary links or loads it.
#include <dlfcn.h>
#include <time.h>

#include <cstdlib>

namespace {

void Delay() {
  const char* ms = std::getenv("RHYTHM_SLOW_FSYNC_MS");
  const long n = ms != nullptr ? std::atol(ms) : 5;
  timespec ts{n / 1000, (n % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

}  // namespace

extern "C" int fsync(int fd) {
  using Fn = int (*)(int);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "fsync"));
  Delay();
  return real(fd);
}

extern "C" int fdatasync(int fd) {
  using Fn = int (*)(int);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "fdatasync"));
  Delay();
  return real(fd);
}

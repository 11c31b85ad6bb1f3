#include "common/logging.h"

#include <atomic>
#include <cstdio>
#include <cstring>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace rhythm::common {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogSeverity::kInfo)};

absl::Mutex& WriteMutex() {
  static absl::Mutex* mu = new absl::Mutex();
  return *mu;
}

char SeverityLetter(LogSeverity s) {
  switch (s) {
    case LogSeverity::kDebug:
      return 'D';
    case LogSeverity::kInfo:
      return 'I';
    case LogSeverity::kWarning:
      return 'W';
    case LogSeverity::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

void SetMinLogLevel(LogSeverity min) { g_min_level.store(static_cast<int>(min)); }

bool LogEnabled(LogSeverity severity) {
  return static_cast<int>(severity) >= g_min_level.load(std::memory_order_relaxed);
}

LogMessage::LogMessage(const char* file, int line, LogSeverity severity) : severity_(severity) {
  const char* base = std::strrchr(file, '/');
  base = base ? base + 1 : file;
  stream_ << SeverityLetter(severity)
          << absl::FormatTime("%m%d %H:%M:%E3S", absl::Now(), absl::UTCTimeZone()) << ' '
          << base << ':' << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string text = stream_.str();
  absl::MutexLock lock(&WriteMutex());
  std::fwrite(text.data(), 1, text.size(), stderr);
  if (severity_ >= LogSeverity::kWarning) std::fflush(stderr);
}

}  // namespace rhythm::common

// Minimal leveled logging to stderr: `RHYTHM_LOG(INFO) << "listening on " << port;`
//
// One line per message: "I1129 01:35:26.123 learner.cc:42] text". Messages below the minimum
// level (SetMinLogLevel, from runtime.log_level) are not formatted at all. Thread-safe: each
// message is written with one fwrite under a mutex, so lines never interleave.
#pragma once

#include <sstream>
#include <string_view>

namespace rhythm::common {

enum class LogSeverity { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Messages with severity below `min` are dropped. Default: kInfo.
void SetMinLogLevel(LogSeverity min);
bool LogEnabled(LogSeverity severity);

// One log line; written when destroyed.
class LogMessage {
 public:
  LogMessage(const char* file, int line, LogSeverity severity);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

// Lets the macro below be an expression whose operands are skipped when logging is disabled.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace rhythm::common

#define RHYTHM_LOG(severity)                                                                \
  !::rhythm::common::LogEnabled(::rhythm::common::LogSeverity::k##severity)                 \
      ? (void)0                                                                             \
      : ::rhythm::common::LogVoidify() &                                                    \
            ::rhythm::common::LogMessage(__FILE__, __LINE__,                                \
                                         ::rhythm::common::LogSeverity::k##severity)        \
                .stream()


#include "tests/subprocess.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>

namespace rhythm::testing {

std::string BinaryPath(const std::string& name) {
  const char* dir = std::getenv("RHYTHM_BIN_DIR");
  return std::string(dir != nullptr ? dir : "build/bin") + "/" + name;
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

int CountLines(const std::string& text) {
  int lines = 0;
  bool in_line = false;
  for (char c : text) {
    if (c == '\n') {
      if (in_line) ++lines;
      in_line = false;
    } else {
      in_line = true;
    }
  }
  return lines + (in_line ? 1 : 0);
}

ProcessResult RunChromium(const std::vector<std::string>& extra) {
  static std::atomic<int> calls{0};
  const char* tmp = std::getenv("TMPDIR");
  const std::string profile = std::string(tmp != nullptr ? tmp : "/tmp") + "/rhythm_chromium_" +
                              std::to_string(getpid()) + "_" + std::to_string(calls++);
  std::filesystem::remove_all(profile);
  std::filesystem::create_directories(profile);
  std::vector<std::string> argv = {kChromium,
                                   "--headless",
                                   "--no-sandbox",
                                   "--disable-gpu",
                                   "--disable-quic",
                                   "--no-first-run",
                                   "--disable-background-networking",
                                   "--disable-component-update",
                                   "--disable-sync",
                                   "--user-data-dir=" + profile,
                                   "--enable-logging=stderr",
                                   "--v=0"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  ProcessResult r = RunProcess(argv, 120);
  std::filesystem::remove_all(profile);
  return r;
}

}  // namespace rhythm::testing

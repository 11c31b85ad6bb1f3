#include "tests/subprocess.h"

#include <cstdlib>

namespace rhythm::testing {

std::string BinaryPath(const std::string& name) {
  const char* dir = std::getenv("RHYTHM_BIN_DIR");
  return std::string(dir != nullptr ? dir : "build/bin") + "/" + name;
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

}  // namespace rhythm::testing

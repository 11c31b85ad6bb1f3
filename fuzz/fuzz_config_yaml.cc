// fuzz_config_yaml: the typed config loader (common/config.h), YAML file and --set overrides.
//
// Feeds: the input bytes as a YAML config file to LoadConfig, through a memfd; every line that
// starts with "#set " (a YAML comment, so the file still parses) is also passed as a --set
// override, e.g. "#set trainer.lr=0.5".
// Asserts: no crash, abort (an uncaught YAML::Exception is one), sanitizer report or hang; a
// rejection is INVALID_ARGUMENT with a message starting "config: "; an accepted config
// round-trips: LoadConfig of ConfigToYaml(config) is accepted and writes back the same text.
// Seeds: fuzz/corpus/config_yaml/ (the README's examples and the deploy configs).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config.h"
#include "fuzz/fuzz_check.h"

namespace {

struct File {
  int fd = memfd_create("fuzz_config.yaml", 0);
  std::string path = absl::StrCat("/proc/self/fd/", fd);
};

void Fill(const File& f, absl::string_view text) {
  FUZZ_CHECK(f.fd >= 0 && ftruncate(f.fd, 0) == 0, "memfd");
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = pwrite(f.fd, text.data() + done, text.size() - done, done);
    FUZZ_CHECK(n > 0, "pwrite");
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const File* file = new File;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, "#set ")) overrides.emplace_back(line);
  }
  Fill(*file, text);
  auto config = rhythm::common::LoadConfig(file->path, overrides);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument,
               config.status().ToString());
    FUZZ_CHECK(absl::StartsWith(config.status().message(), "config: "), config.status().ToString());
    return 0;
  }
  const std::string written = rhythm::common::ConfigToYaml(*config);
  Fill(*file, written);
  auto again = rhythm::common::LoadConfig(file->path, {});
  FUZZ_CHECK(again.ok(), absl::StrCat(again.status().ToString(), " for\n", written));
  const std::string rewritten = rhythm::common::ConfigToYaml(*again);
  FUZZ_CHECK(rewritten == written, absl::StrCat("round trip differs:\n", written, "\n", rewritten));
  return 0;
}

// fuzz_safetensors: safetensors files (common/model/safetensors.h), header and data together.
//
// Feeds: the input bytes as a whole .safetensors file (8-byte length, JSON header, data) to
// ReadSafetensors, through a memfd (no disk I/O). The data section is the rest of the input,
// so a header can claim anything but real tensor data is never larger than the input.
// Asserts: no crash, abort (an uncaught c10::Error from at::empty is one), sanitizer report or
// hang; a rejection is INVALID_ARGUMENT naming the file; every accepted tensor's bytes lie
// inside the input; accepted files round-trip: WriteSafetensors of the tensors, read back,
// gives the same names, dtypes, shapes and bytes.
// Seeds: fuzz/corpus/safetensors/ (a tiny Qwen2-style checkpoint in F32, BF16 and F16).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "ATen/ATen.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/model/safetensors.h"
#include "fuzz/fuzz_check.h"

namespace {

// One memfd for the input and one for the round trip, reused by every run.
struct Files {
  int in_fd = memfd_create("fuzz_in.safetensors", 0);
  int out_fd = memfd_create("fuzz_out.safetensors", 0);
  std::string in_path = absl::StrCat("/proc/self/fd/", in_fd);
  std::string out_path = absl::StrCat("/proc/self/fd/", out_fd);
};

void Fill(int fd, const uint8_t* data, size_t size) {
  FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0, "pwrite");
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using rhythm::common::model::TensorMap;
  static const Files* files = new Files;
  FUZZ_CHECK(files->in_fd >= 0 && files->out_fd >= 0, "memfd_create");
  Fill(files->in_fd, data, size);
  absl::StatusOr<TensorMap> read = rhythm::common::model::ReadSafetensors(files->in_path);
  if (!read.ok()) {
    FUZZ_CHECK(read.status().code() == absl::StatusCode::kInvalidArgument,
               read.status().ToString());
    FUZZ_CHECK(absl::StartsWith(read.status().message(), files->in_path), read.status().ToString());
    return 0;
  }
  uint64_t total = 0;
  for (const auto& [name, t] : *read) {
    total += static_cast<uint64_t>(t.numel()) * t.element_size();
  }
  FUZZ_CHECK(total <= size, absl::StrCat(total, " tensor bytes from a ", size, "-byte file"));
  FUZZ_CHECK(rhythm::common::model::WriteSafetensors(files->out_path, *read).ok(), "write");
  absl::StatusOr<TensorMap> back = rhythm::common::model::ReadSafetensors(files->out_path);
  FUZZ_CHECK(back.ok(), back.status().ToString());
  FUZZ_CHECK(back->size() == read->size(), "tensor count differs after the round trip");
  for (const auto& [name, t] : *read) {
    auto it = back->find(name);
    FUZZ_CHECK(it != back->end(), absl::StrCat("lost tensor '", name, "'"));
    const at::Tensor& u = it->second;
    FUZZ_CHECK(u.scalar_type() == t.scalar_type() && u.sizes() == t.sizes(),
               absl::StrCat("tensor '", name, "' changed dtype or shape"));
    FUZZ_CHECK(t.numel() == 0 ||
                   std::memcmp(u.data_ptr(), t.data_ptr(), t.numel() * t.element_size()) == 0,
               absl::StrCat("tensor '", name, "' changed bytes"));
  }
  return 0;
}

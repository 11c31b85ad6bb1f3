// File helpers for the tokenizers (internal to rhythm_tokenizer).
//
// Thread-safe: stateless.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rhythm::common::tokenizer_internal {

// Whole contents of `path`. NOT_FOUND if it does not exist, FAILED_PRECONDITION if it cannot
// be read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `contents` to <dir>/<name> (creating `dir`), through a temporary file renamed into
// place so a reader never sees half a file. FAILED_PRECONDITION naming the path on failure.
absl::Status WriteFileAtomically(const std::string& dir, absl::string_view name,
                                 absl::string_view contents);

// <dir>/<name>, without doubling a trailing slash.
std::string JoinPath(const std::string& dir, absl::string_view name);

bool FileExists(const std::string& path);

}  // namespace rhythm::common::tokenizer_internal

// The one adapter from LibTorch exceptions to absl::Status.
//
// LibTorch reports errors by throwing c10::Error; rhythm's modules return absl::Status across
// their boundaries. Wrap every call into torch that can fail on user data (shapes, dtypes,
// loading) in TorchCall / TorchTry. Codes: c10::IndexError -> OUT_OF_RANGE,
// ValueError / TypeError -> INVALID_ARGUMENT, NotImplementedError -> UNIMPLEMENTED,
// OutOfMemoryError / std::bad_alloc -> RESOURCE_EXHAUSTED, a StatusOr's .value() on an error
// (absl::BadStatusOrAccess) -> that status's own code, any other exception -> INTERNAL.
// The message is "<what>: <first line of the torch message>" (no C++ backtrace).
// This header does not include torch, so any translation unit may use it cheaply.
#pragma once

#include <optional>
#include "absl/strings/string_view.h"
#include <type_traits>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace rhythm::common {

// Runs `fn`; returns OK, or the status of what it threw. `what` names the operation.
absl::Status TorchCall(absl::string_view what, absl::FunctionRef<void()> fn);

// Runs `fn` and returns its value, or the status of what it threw.
template <typename F>
auto TorchTry(absl::string_view what, F&& fn) -> absl::StatusOr<std::invoke_result_t<F>> {
  std::optional<std::invoke_result_t<F>> result;
  absl::Status status = TorchCall(what, [&]() { result.emplace(std::forward<F>(fn)()); });
  if (!status.ok()) return status;
  return std::move(*result);
}

}  // namespace rhythm::common

// Status helpers used across rhythm: the return/assign macros our absl (20220623) lacks, and
// small constructors for the error messages every boundary writes.
//
// Thread-safe: everything here is stateless.
#pragma once

#include "absl/strings/string_view.h"
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define RHYTHM_STATUS_CONCAT_INNER_(a, b) a##b
#define RHYTHM_STATUS_CONCAT_(a, b) RHYTHM_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define RHYTHM_RETURN_IF_ERROR(expr)                   \
  do {                                                 \
    ::absl::Status rhythm_status_ = (expr);            \
    if (!rhythm_status_.ok()) return rhythm_status_;   \
  } while (0)

// `RHYTHM_ASSIGN_OR_RETURN(auto x, MakeX());` evaluates an absl::StatusOr<T>; on error returns
// its status from the enclosing function, otherwise moves the value into `lhs`.
#define RHYTHM_ASSIGN_OR_RETURN(lhs, rexpr) \
  RHYTHM_ASSIGN_OR_RETURN_IMPL_(RHYTHM_STATUS_CONCAT_(rhythm_statusor_, __LINE__), lhs, rexpr)

#define RHYTHM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return statusor.status();             \
  lhs = std::move(statusor).value()

namespace rhythm::common {

// Returns `status` with `context` prepended to its message ("context: message"), keeping the
// code. OK stays OK.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace rhythm::common

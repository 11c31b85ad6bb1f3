#include "common/torch_status.h"

#include <exception>
#include <new>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "c10/util/Exception.h"

namespace rhythm::common {
namespace {

std::string FirstLine(const char* text) {
  std::string s(text);
  if (size_t nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

}  // namespace

absl::Status TorchCall(absl::string_view what, absl::FunctionRef<void()> fn) {
  try {
    fn();
    return absl::OkStatus();
  } catch (const c10::IndexError& e) {
    return absl::OutOfRangeError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::ValueError& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::TypeError& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::NotImplementedError& e) {
    return absl::UnimplementedError(
        absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::OutOfMemoryError& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(what, ": ", FirstLine(e.what_without_backtrace())));
  } catch (const absl::BadStatusOrAccess& e) {
    // A StatusOr's .value() on an error inside `fn`: that status as it was (an
    // INVALID_ARGUMENT stays one), the operation named in front.
    return absl::Status(e.status().code(), absl::StrCat(what, ": ", e.status().message()));
  } catch (const std::bad_alloc& e) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", FirstLine(e.what())));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": unknown exception"));
  }
}

}  // namespace rhythm::common

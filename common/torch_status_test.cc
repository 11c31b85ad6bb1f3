#include "common/torch_status.h"

#include <stdexcept>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

TEST(TorchStatus, ShapeMismatchBecomesStatusNamingTheOperation) {
  absl::StatusOr<at::Tensor> r = TorchTry("project hidden state", [] {
    return at::matmul(at::ones({2, 3}), at::ones({4, 5}));
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal);
  const std::string msg(r.status().message());
  EXPECT_EQ(msg.rfind("project hidden state: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("cannot be multiplied"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "no backtrace in the message";
}

TEST(TorchStatus, IndexErrorIsOutOfRange) {
  absl::Status s = TorchCall("select layer", [] { at::ones({3}).select(0, 7); });
  EXPECT_EQ(s.code(), absl::StatusCode::kOutOfRange) << s;
}

TEST(TorchStatus, TypeErrorIsInvalidArgument) {
  // Integer tensors have no mean: torch raises a c10::TypeError-like error.
  absl::Status s = TorchCall("mean of ids", [] { at::ones({3}, at::kLong).mean(); });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("mean of ids: "), std::string::npos) << s;
}

TEST(TorchStatus, SuccessReturnsValueAndStdExceptionsAreCaught) {
  absl::StatusOr<double> v = TorchTry("sum", [] { return at::ones({4}).sum().item<double>(); });
  ASSERT_TRUE(v.ok());
  EXPECT_DOUBLE_EQ(*v, 4.0);
  absl::Status s = TorchCall("parse", [] { throw std::runtime_error("bad header\nmore"); });
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "parse: bad header");
  s = TorchCall("alloc", [] { throw std::bad_alloc(); });
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
}

// A StatusOr's .value() inside the body keeps its status's code: a clean INVALID_ARGUMENT from
// a model call (a bad capture layer, a prompt that does not fit) does not come back INTERNAL.
TEST(TorchStatus, StatusOrValueOnAnErrorKeepsItsCode) {
  absl::Status s = TorchCall("decode step", [] {
    absl::StatusOr<int> bad = absl::InvalidArgumentError("capture layer 9 is outside [0, 4)");
    (void)bad.value();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "decode step: capture layer 9 is outside [0, 4)");
  absl::StatusOr<int> v = TorchTry("prefill", []() -> int {
    return absl::StatusOr<int>(absl::FailedPreconditionError("prompt does not fit")).value();
  });
  EXPECT_EQ(v.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace rhythm::common

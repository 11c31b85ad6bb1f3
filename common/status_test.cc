#include "common/status.h"

#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

absl::Status FailIf(bool fail) {
  return fail ? absl::NotFoundError("missing") : absl::OkStatus();
}

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::Status Chain(bool fail, int* calls) {
  RHYTHM_RETURN_IF_ERROR(FailIf(fail));
  ++*calls;
  return absl::OkStatus();
}

absl::StatusOr<int> Quarter(int x) {
  RHYTHM_ASSIGN_OR_RETURN(int h, Half(x));
  RHYTHM_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

TEST(StatusMacros, ReturnIfErrorStopsAtFirstError) {
  int calls = 0;
  EXPECT_TRUE(Chain(false, &calls).ok());
  EXPECT_EQ(calls, 1);
  absl::Status s = Chain(true, &calls);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(calls, 1);
}

TEST(StatusMacros, AssignOrReturnPropagatesValueAndError) {
  EXPECT_EQ(Quarter(8).value(), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Quarter(3).status().message(), "odd");
}

TEST(Annotate, PrependsContextAndKeepsCode) {
  absl::Status s = Annotate(absl::DataLossError("bad crc"), "chunk 3");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(s.message(), "chunk 3: bad crc");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "x").ok());
}

}  // namespace
}  // namespace rhythm::common

#include "common/model/load_model.h"

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

v1::TinyModelConfig Tiny() {
  v1::TinyModelConfig t;
  t.set_hidden_size(16);
  t.set_num_layers(1);
  t.set_num_heads(2);
  t.set_num_kv_heads(1);
  t.set_intermediate_size(32);
  return t;
}

TEST(LoadModelTest, NoDirectoryIsAFreshTinyModelOnTheCharacterTokenizerFromTheSeed) {
  auto a = LoadModelAndTokenizer("", Tiny(), 5);
  auto b = LoadModelAndTokenizer("", Tiny(), 5);
  auto c = LoadModelAndTokenizer("", Tiny(), 6);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << a.status();
  EXPECT_EQ(a->model->config().vocab_size, a->tokenizer->vocab_size());
  EXPECT_EQ(a->model->config().hidden_size, 16);
  const auto pa = a->model->NamedParameters(), pb = b->model->NamedParameters(),
             pc = c->model->NamedParameters();
  ASSERT_FALSE(pa.empty());
  bool all_same = true, any_differs = false;
  for (const auto& [name, t] : pa) {
    all_same = all_same && at::equal(t, pb.at(name));
    any_differs = any_differs || !at::equal(t, pc.at(name));
  }
  EXPECT_TRUE(all_same) << "the same seed, the same weights";
  EXPECT_TRUE(any_differs) << "another seed, other weights";
}

TEST(LoadModelTest, AMissingDirectoryIsAnErrorNamingIt) {
  auto m = LoadModelAndTokenizer("/nonexistent/rhythm-model", Tiny(), 1);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("/nonexistent/rhythm-model"), std::string::npos)
      << m.status();
}

TEST(LoadModelTest, Bf16IsTheFp32ModelRoundedAndFp16IsRefusedNamingTheKey) {
  auto fp32 = LoadModelAndTokenizer("", Tiny(), 5);
  auto bf16 = LoadModelAndTokenizer("", Tiny(), 5, at::kCPU, v1::DTYPE_BF16);
  ASSERT_TRUE(fp32.ok() && bf16.ok()) << bf16.status();
  EXPECT_EQ(bf16->model->dtype(), at::kBFloat16);
  EXPECT_EQ(fp32->model->dtype(), at::kFloat);
  const TensorMap b = bf16->model->NamedParameters();
  for (const auto& [name, t] : fp32->model->NamedParameters()) {
    EXPECT_EQ(b.at(name).scalar_type(), at::kBFloat16) << name;
    EXPECT_TRUE(at::equal(b.at(name), t.to(at::kBFloat16))) << name;
  }
  auto fp16 = LoadModelAndTokenizer("", Tiny(), 5, at::kCPU, v1::DTYPE_FP16);
  ASSERT_FALSE(fp16.ok());
  EXPECT_EQ(fp16.status().message(), "model.dtype = DTYPE_FP16: not supported (fp32, bf16)");
  EXPECT_EQ(*ModelDType(v1::DTYPE_UNSPECIFIED), at::kFloat);
}

}  // namespace
}  // namespace rhythm::common::model

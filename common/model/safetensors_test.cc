#include "common/model/safetensors.h"

#include <filesystem>
#include <fstream>

#include "ATen/ATen.h"
#include "gtest/gtest.h"

namespace rhythm::common::model {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/st_" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// A file assembled byte by byte, independent of the writer under test.
void WriteRaw(const std::string& path, const std::string& header, const std::string& data,
              uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << data;
}

std::string Floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float));
}

TEST(Safetensors, ReadsAHandAssembledFile) {
  const std::string path = TempDir("raw") + "/m.safetensors";
  WriteRaw(path,
           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
           R"("b":{"dtype":"F32","shape":[1,1],"data_offsets":[8,12]},"__metadata__":{"x":"y"}})",
           Floats({1.5f, -2.0f, 7.25f}));
  absl::StatusOr<TensorMap> t = ReadSafetensors(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->at("a")[1].item<float>(), -2.0f);
  EXPECT_EQ(t->at("b").sizes(), at::IntArrayRef({1, 1}));
  EXPECT_EQ(t->at("b")[0][0].item<float>(), 7.25f);
}

TEST(Safetensors, RoundTripIsBitExactForEveryDtype) {
  const std::string path = TempDir("rt") + "/m.safetensors";
  at::manual_seed(0);
  TensorMap in = {{"f32", at::randn({3, 5})},
                  {"bf16", at::randn({4, 2}).to(at::kBFloat16)},
                  {"f16", at::randn({7}).to(at::kHalf)},
                  {"scalar", at::randn({})},
                  {"empty", at::zeros({0, 3})}};
  ASSERT_TRUE(WriteSafetensors(path, in).ok());
  std::ifstream f(path, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes";
  TensorMap out = *ReadSafetensors(path);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [name, t] : in) {
    EXPECT_EQ(out.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(out.at(name).equal(t)) << name;
  }
  EXPECT_FALSE(WriteSafetensors(path, {{"ids", at::zeros({2}, at::kLong)}}).ok());
}

TEST(Safetensors, BadFilesNameTheFileAndTheTensor) {
  const std::string dir = TempDir("bad");
  const std::string good_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  struct Case {
    std::string header, data;
    uint64_t len_override;
    std::string want;
  } cases[] = {
      {good_header, Floats({1.f}), 0, "tensor 'w': data_offsets end 8 lies past the data (4 bytes)"},
      {good_header, "", 4096, "header length 4096 exceeds the file"},
      {"{not json", "", 0, "header is not a JSON object"},
      {R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", "ab", 0,
       "tensor 'w': dtype \"I8\" is not supported"},
      {R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", Floats({1.f, 2.f}), 0,
       "tensor 'w': data_offsets [0,8] hold 8 bytes but shape [3] of F32 needs 12"},
      {R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
       Floats({1.f, 2.f}), 0, "tensor 'v': data overlaps tensor 'w'"},
      {R"({"w":{"dtype":"F32","shape":[2]}})", Floats({1.f, 2.f}), 0,
       "tensor 'w': data_offsets must be [begin, end]"},
      // Issue 17: 2^32 * 2^32 elements wrapped the byte count to 0, so [0, 0] passed and
      // at::empty aborted the process.
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "", 0,
       "tensor 'w': shape [4294967296,4294967296] of F32 overflows 64-bit byte counts"},
      {R"({"w":{"dtype":"BF16","shape":[4611686018427387904],"data_offsets":[0,0]}})", "", 0,
       "tensor 'w': shape [4611686018427387904] of BF16 overflows"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string path = dir + "/bad" + std::to_string(i++) + ".safetensors";
    WriteRaw(path, c.header, c.data, c.len_override);
    absl::StatusOr<TensorMap> r = ReadSafetensors(path);
    ASSERT_FALSE(r.ok()) << c.want;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status();
    EXPECT_NE(r.status().message().find(c.want), std::string::npos) << r.status();
  }
  std::ofstream(dir + "/tiny.safetensors") << "abc";
  EXPECT_NE(ReadSafetensors(dir + "/tiny.safetensors").status().message().find("truncated"),
            std::string::npos);
  EXPECT_EQ(ReadSafetensors(dir + "/missing.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

// Found while fuzzing (fuzz/): "bad shape <shape>" quoted a shape nested 100,000 deep and
// overflowed the stack in nlohmann's dump(). Headers and indexes nest at most 64 levels.
TEST(Safetensors, DeepNestingIsAnErrorNotAStackOverflow) {
  const std::string dir = TempDir("deep");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  WriteRaw(dir + "/deep.safetensors",
           R"({"w":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,0]}})", "");
  absl::StatusOr<TensorMap> r = ReadSafetensors(dir + "/deep.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().message(), dir + "/deep.safetensors: header nests deeper than 64 levels");
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map": )" << deep << "}";
  absl::StatusOr<CheckpointTensors> c = ReadCheckpointTensors(dir);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            dir + "/model.safetensors.index.json: nests deeper than 64 levels");
}

TEST(Safetensors, TruncatingAWrittenFileIsDetected) {
  const std::string dir = TempDir("trunc");
  ASSERT_TRUE(WriteSafetensors(dir + "/m.safetensors", {{"w", at::ones({64})}}).ok());
  fs::resize_file(dir + "/m.safetensors", fs::file_size(dir + "/m.safetensors") - 10);
  absl::StatusOr<TensorMap> r = ReadSafetensors(dir + "/m.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tensor 'w'"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("truncated"), std::string::npos) << r.status();
}

TEST(Safetensors, ShardedCheckpointsRoundTrip) {
  const std::string dir = TempDir("shards");
  TensorMap in;
  for (int i = 0; i < 6; ++i) in["layer." + std::to_string(i)] = at::full({100}, float(i));
  ASSERT_TRUE(WriteCheckpointTensors(dir, in, /*max_shard_bytes=*/900).ok());
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/model-00003-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));
  CheckpointTensors out = *ReadCheckpointTensors(dir);
  ASSERT_EQ(out.tensors.size(), 6u);
  for (const auto& [name, t] : in) EXPECT_TRUE(out.tensors.at(name).equal(t)) << name;
  EXPECT_NE(out.file_of.at("layer.5").find("model-00003-of-00003"), std::string::npos);

  // An index that points a tensor at the wrong shard.
  std::ofstream(dir + "/model.safetensors.index.json")
      << R"({"weight_map": {"layer.0": "model-00002-of-00003.safetensors"}})";
  absl::StatusOr<CheckpointTensors> bad = ReadCheckpointTensors(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(
                "maps tensor 'layer.0' to model-00002-of-00003.safetensors, which does not"),
            std::string::npos)
      << bad.status();
  EXPECT_EQ(ReadCheckpointTensors(TempDir("empty")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace rhythm::common::model

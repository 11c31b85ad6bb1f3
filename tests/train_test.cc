// `rhythm train` end to end, shortened (a 2-layer model, 20 warm-start steps, 6 RL steps with a
// checkpoint every 3): the run directory, metrics.csv with held-out evaluations of the
// checkpoints, and report.html as headless Chromium renders it (DOM and pixels).
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <vector>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/subprocess.h"

namespace rhythm::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path, std::ios::binary).rdbuf();
  return s.str();
}

class TrainTest : public ::testing::Test {
 protected:
  // One shortened run shared by the tests below (~30 s on two cores).
  static void SetUpTestSuite() {
    out_ = new std::string(::testing::TempDir() + "/train_test_run");
    fs::remove_all(*out_);
    std::vector<std::string> args = {BinaryPath("rhythm"), "train", "--out", *out_};
    for (const char* arg : {"--sft-steps", "20",
                            "--steps",     "6",
                            "--actors",    "2",
                            "--n",         "64",
                            "--pass-k",    "2",
                            "--set",       "model.tiny.num_layers=2",
                            "--set",       "model.tiny.hidden_size=64",
                            "--set",       "model.tiny.intermediate_size=128",
                            "--set",       "trainer.batch_groups=2",
                            "--set",       "learner.checkpoint_every=3",
                            // Several updates per batch, as the reasoning regime's default.
                            "--set",       "trainer.mini_batches=4",
                            // The learner scores its own weights too, and the report shows it.
                            "--set",       "learner.eval_every=2",
                            "--set",       "learner.eval_n=16",
                            "--set",       "learner.eval_k=2"}) {
      args.push_back(arg);
    }
    result_ = new ProcessResult(RunProcess(args, 400));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete out_;
  }
  static std::string* out_;
  static ProcessResult* result_;
};
std::string* TrainTest::out_ = nullptr;
ProcessResult* TrainTest::result_ = nullptr;

TEST_F(TrainTest, WritesTheRunDirectoryAndEvaluatesCheckpoints) {
  const ProcessResult& r = *result_;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("held-out pass@1 before RL "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 6/6"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  held-out "), std::string::npos) << "progress shows held-out accuracy";
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(held-out pass@1 [0-9.]+% greedy, [0-9.]+% )"
                                                  R"(sampled -> [0-9.]+% greedy, [0-9.]+% )"
                                                  R"(sampled \(n=64\))")))
      << r.out;
  for (const char* f :
       {"config.yaml", "metrics.csv", "report.html", "final/config.json", "final/model.safetensors",
        "final/rhythm_tokenizer.json", "sft/config.json", "run/checkpoints/LATEST"}) {
    EXPECT_TRUE(fs::exists(*out_ + "/" + f)) << f;
  }
  // metrics.csv: learner rows (reward set) and held-out rows (held-out columns set).
  std::istringstream csv(ReadFile(*out_ + "/metrics.csv"));
  std::string header;
  std::getline(csv, header);
  const std::vector<std::string> columns = absl::StrSplit(header, ',');
  ASSERT_EQ(columns.size(), 16u) << header;
  EXPECT_EQ(columns[0], "version");
  EXPECT_EQ(columns[2], "reward");
  EXPECT_EQ(columns[12], "heldout_pass1");
  EXPECT_EQ(columns[13], "heldout_sampled_pass1");
  EXPECT_EQ(columns[14], "fai_defined");
  EXPECT_EQ(columns[15], "amplified_tokens");
  int64_t max_version = 0;
  std::vector<int64_t> heldout_versions;
  for (std::string line; std::getline(csv, line);) {
    const std::vector<std::string> cells = absl::StrSplit(line, ',');
    ASSERT_EQ(cells.size(), 16u) << line;
    const int64_t version = std::stoll(cells[0]);
    if (!cells[2].empty()) {
      max_version = std::max(max_version, version);
      EXPECT_TRUE(cells[12].empty()) << line;
    } else {
      heldout_versions.push_back(version);
      for (int c : {12, 13}) {
        const double v = std::stod(cells[c]);
        EXPECT_GE(v, 0.0) << line;
        EXPECT_LE(v, 1.0) << line;
      }
    }
  }
  EXPECT_GE(max_version, 6) << "the policy version advanced";
  // The warm start, at least one checkpoint during the run, and the final model.
  ASSERT_GE(heldout_versions.size(), 3u);
  EXPECT_EQ(heldout_versions.front(), 0);
  EXPECT_GE(heldout_versions.back(), 6);
  EXPECT_TRUE(std::is_sorted(heldout_versions.begin(), heldout_versions.end()));
  // The run summary says where the credit landed, and result.json holds it all.
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(credit \(mean over steps\): FAI defined on [0-9.]+% of response )"
                        R"(tokens, [0-9.]+% of \|shaped advantage\| on preplan)")))
      << r.out;
  nlohmann::json result = nlohmann::json::parse(ReadFile(*out_ + "/result.json"));
  EXPECT_EQ(result["strategy"], "coupled");
  EXPECT_EQ(result["after"]["problems"], 64);
  EXPECT_GT(result["fai_defined"].get<double>(), 0.0);
  EXPECT_GT(result["amplified_tokens"].get<double>(), 0.0);
  // Four updates per batch: the later ones see a policy that moved.
  EXPECT_NE(result["approx_kl"].get<double>(), 0.0);
  EXPECT_GE(result["curve"].size(), 3u);
  const std::string html = ReadFile(*out_ + "/report.html");
  EXPECT_NE(html.find("class='tok"), std::string::npos) << "rollouts rendered by token";
  EXPECT_NE(html.find("clip fraction"), std::string::npos);
  EXPECT_NE(html.find("the learner's own evaluation"), std::string::npos);
  EXPECT_NE(html.find("data-label='learner avg@2'"), std::string::npos)
      << "learner.eval_every's curve";
  EXPECT_EQ(html.find("<script"), std::string::npos) << "the report is static";
}

// A decoded 8-bit RGB or RGBA, non-interlaced PNG (what Chromium's --screenshot writes).
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // row-major, `channels` bytes per pixel
};

uint32_t BigEndian32(const std::string& s, size_t at) {
  return (uint32_t{static_cast<uint8_t>(s[at])} << 24) |
         (uint32_t{static_cast<uint8_t>(s[at + 1])} << 16) |
         (uint32_t{static_cast<uint8_t>(s[at + 2])} << 8) |
         uint32_t{static_cast<uint8_t>(s[at + 3])};
}

bool DecodePng(const std::string& png, Image* image, std::string* error) {
  if (png.size() < 8 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) {
    *error = "not a PNG";
    return false;
  }
  std::string idat;
  for (size_t at = 8; at + 12 <= png.size();) {
    const uint32_t length = BigEndian32(png, at);
    const std::string type = png.substr(at + 4, 4);
    if (at + 12 + length > png.size()) break;
    if (type == "IHDR") {
      image->width = static_cast<int>(BigEndian32(png, at + 8));
      image->height = static_cast<int>(BigEndian32(png, at + 12));
      const int depth = static_cast<uint8_t>(png[at + 16]);
      const int colour = static_cast<uint8_t>(png[at + 17]);
      const int interlace = static_cast<uint8_t>(png[at + 20]);
      if (depth != 8 || (colour != 2 && colour != 6) || interlace != 0) {
        *error = "unsupported PNG format";
        return false;
      }
      image->channels = colour == 2 ? 3 : 4;
    } else if (type == "IDAT") {
      idat += png.substr(at + 8, length);
    }
    at += 12 + length;
  }
  const size_t stride = static_cast<size_t>(image->width) * image->channels;
  std::vector<uint8_t> raw((stride + 1) * image->height);
  uLongf raw_size = raw.size();
  if (image->channels == 0 ||
      uncompress(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) !=
          Z_OK ||
      raw_size != raw.size()) {
    *error = "bad image data";
    return false;
  }
  image->pixels.assign(stride * image->height, 0);
  const int bpp = image->channels;
  for (int y = 0; y < image->height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* row = &image->pixels[y * stride];
    const uint8_t* up = y > 0 ? &image->pixels[(y - 1) * stride] : nullptr;
    for (size_t i = 0; i < stride; ++i) {
      const int a = i >= static_cast<size_t>(bpp) ? row[i - bpp] : 0;
      const int b = up != nullptr ? up[i] : 0;
      const int c = up != nullptr && i >= static_cast<size_t>(bpp) ? up[i - bpp] : 0;
      int predictor = 0;
      switch (filter) {
        case 0:
          predictor = 0;
          break;
        case 1:
          predictor = a;
          break;
        case 2:
          predictor = b;
          break;
        case 3:
          predictor = (a + b) / 2;
          break;
        case 4: {
          const int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
          predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default:
          *error = "bad PNG filter";
          return false;
      }
      row[i] = static_cast<uint8_t>(in[i] + predictor);
    }
  }
  return true;
}

// Pixels within a small distance of `rgb` (anti-aliased edges excluded).
int64_t CountColour(const Image& image, uint32_t rgb) {
  int64_t n = 0;
  const int r = (rgb >> 16) & 0xff, g = (rgb >> 8) & 0xff, b = rgb & 0xff;
  for (size_t i = 0; i + 2 < image.pixels.size(); i += image.channels) {
    if (std::abs(image.pixels[i] - r) + std::abs(image.pixels[i + 1] - g) +
            std::abs(image.pixels[i + 2] - b) <=
        12) {
      ++n;
    }
  }
  return n;
}

TEST_F(TrainTest, ReportRendersItsPlotsInHeadlessChromium) {
  if (!fs::exists(kChromium)) GTEST_SKIP() << kChromium << " is not installed";
  ASSERT_EQ(result_->exit_code, 0) << result_->err;
  const std::string url = "file://" + fs::absolute(*out_ + "/report.html").string();

  // The DOM Chromium built: every chart is an <svg class="chart"> with a data line.
  ProcessResult dom = RunChromium({"--dump-dom", url});
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  EXPECT_EQ(dom.err.find(":CONSOLE"), std::string::npos) << "console messages:\n" << dom.err;
  const std::regex chart(R"(<svg class="chart")");
  EXPECT_EQ(std::distance(std::sregex_iterator(dom.out.begin(), dom.out.end(), chart),
                          std::sregex_iterator()),
            10)  // nine, and the learner's own evaluation (learner.eval_every)
      << dom.out.substr(0, 2000);
  // Polylines with at least two points, by series.
  std::map<std::string, int> points_by_series;
  const std::regex line(
      R"re(<polyline class="series" data-label="([^"]+)"[^>]* points="([^"]*)")re");
  for (auto it = std::sregex_iterator(dom.out.begin(), dom.out.end(), line);
       it != std::sregex_iterator(); ++it) {
    const std::vector<std::string> pts =
        absl::StrSplit((*it)[2].str(), ' ', absl::SkipWhitespace());
    points_by_series[(*it)[1].str()] = static_cast<int>(pts.size());
  }
  for (const char* label : {"reward", "accuracy", "loss", "kl", "entropy", "tokens/s"}) {
    EXPECT_GE(points_by_series[label], 2) << label;
  }
  EXPECT_GE(points_by_series["greedy pass@1"], 3) << "warm start, a checkpoint, final model";
  EXPECT_GE(points_by_series["sampled pass@1"], 3);
  EXPECT_GE(points_by_series["learner avg@2"], 2) << "versions 0 and 2 at least";

  // The pixels: the plot lines are drawn in their colours.
  const std::string png = ::testing::TempDir() + "/train_report.png";
  fs::remove(png);
  ProcessResult shot = RunChromium({"--screenshot=" + png, "--window-size=1200,1000", url});
  ASSERT_EQ(shot.exit_code, 0) << shot.err;
  EXPECT_EQ(shot.err.find(":CONSOLE"), std::string::npos) << shot.err;
  Image image;
  std::string error;
  ASSERT_TRUE(DecodePng(ReadFile(png), &image, &error)) << error;
  EXPECT_EQ(image.width, 1200);
  EXPECT_EQ(image.height, 1000);
  EXPECT_GT(CountColour(image, 0x2563eb), 300) << "blue training curves";
  EXPECT_GT(CountColour(image, 0x16a34a), 30) << "green held-out greedy curve";
  EXPECT_GT(CountColour(image, 0x9333ea), 30) << "purple held-out sampled curve";
  EXPECT_LT(CountColour(image, 0xffffff), static_cast<int64_t>(image.width) * image.height)
      << "not blank";
}

}  // namespace
}  // namespace rhythm::testing

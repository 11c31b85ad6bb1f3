#include "learner/rollout_log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/crc32c.h"
#include "gtest/gtest.h"

namespace rhythm::learner {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class RolloutLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::testing::TempDir()) /
            absl::StrCat("rollout_log_test_", ::getpid(), "_", info->name()))
               .string();
    root_ = dir_;
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  RolloutLog::Options Opts(int64_t segment_bytes = int64_t{64} << 20) const {
    RolloutLog::Options o;
    o.dir = dir_;
    o.segment_bytes = segment_bytes;
    return o;
  }

  std::unique_ptr<RolloutLog> MustOpen(const RolloutLog::Options& o) {
    auto log = RolloutLog::Open(o);
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? std::move(log).value() : nullptr;
  }

  // Segment files in sequence order (names sort numerically: fixed width).
  std::vector<std::string> SegmentFiles() const {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (absl::StartsWith(name, "rollouts-")) files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  std::string dir_;   // the log's directory; a test may point it below root_
  std::string root_;  // removed after the test
};

std::vector<std::pair<uint64_t, std::string>> ReplayAll(const RolloutLog& log,
                                                        uint64_t after_seq = 0) {
  std::vector<std::pair<uint64_t, std::string>> out;
  const absl::Status s = log.Replay(after_seq, [&](uint64_t seq, absl::string_view record) {
    out.emplace_back(seq, std::string(record));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::string RandomBytes(size_t n, std::mt19937& rng) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

uint32_t Le32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

// An independent reader of the documented on-disk format: the first sequence number from the
// file name, then [u32 LE length][u32 LE crc32c][payload] to the end of the file.
struct ParsedSegment {
  uint64_t first_seq = 0;
  std::vector<std::string> records;
  std::vector<size_t> offsets;  // byte offset of each record
  size_t size = 0;
};
ParsedSegment ParseSegmentFile(const std::string& path) {
  ParsedSegment p;
  const std::string name = fs::path(path).filename().string();
  EXPECT_EQ(name.size(), std::string("rollouts-0000000000000001.log").size()) << name;
  EXPECT_TRUE(absl::SimpleAtoi(name.substr(9, 16), &p.first_seq)) << name;
  const std::string data = ReadFile(path);
  p.size = data.size();
  size_t at = 0;
  while (at < data.size()) {
    EXPECT_LE(at + 8, data.size()) << path;
    const uint32_t length = Le32(data, at);
    const uint32_t crc = Le32(data, at + 4);
    EXPECT_LE(at + 8 + length, data.size()) << path;
    const std::string payload = data.substr(at + 8, length);
    EXPECT_EQ(common::Crc32c(payload), crc) << path << " at " << at;
    p.records.push_back(payload);
    p.offsets.push_back(at);
    at += 8 + length;
  }
  return p;
}

TEST_F(RolloutLogTest, FreshDirectoryIsCreatedEmpty) {
  dir_ = absl::StrCat(dir_, "/nested/deeper");
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->last_seq(), 0u);
  EXPECT_EQ(log->first_seq(), 1u);
  EXPECT_EQ(log->bytes_on_disk(), 0);
  EXPECT_EQ(log->recovery().records, 0u);
  EXPECT_TRUE(ReplayAll(*log).empty());
  ASSERT_EQ(SegmentFiles().size(), 1u);
  EXPECT_EQ(fs::path(SegmentFiles()[0]).filename(), "rollouts-0000000000000001.log");
  auto empty_batch = log->AppendAndSync({});
  ASSERT_TRUE(empty_batch.ok());
  EXPECT_EQ(*empty_batch, 0u);
}

TEST_F(RolloutLogTest, BadOptionsAreInvalidArgument) {
  RolloutLog::Options o = Opts();
  o.segment_bytes = 0;
  EXPECT_EQ(RolloutLog::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Opts();
  o.dir = "";
  EXPECT_EQ(RolloutLog::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RolloutLogTest, RoundTripAcrossManySegmentsInTheDocumentedFormat) {
  constexpr int64_t kSegmentBytes = 1024;
  std::mt19937 rng(42);
  std::vector<std::string> expected;
  {
    auto log = MustOpen(Opts(kSegmentBytes));
    ASSERT_NE(log, nullptr);
    while (expected.size() < 400) {
      std::vector<std::string> batch(1 + rng() % 17);
      for (std::string& r : batch) r = RandomBytes(rng() % 200, rng);
      auto last = log->AppendAndSync(batch);
      ASSERT_TRUE(last.ok()) << last.status();
      expected.insert(expected.end(), batch.begin(), batch.end());
      ASSERT_EQ(*last, expected.size());
    }
    EXPECT_EQ(log->last_seq(), expected.size());
    const auto replayed = ReplayAll(*log);
    ASSERT_EQ(replayed.size(), expected.size());
    for (size_t i = 0; i < replayed.size(); ++i) {
      ASSERT_EQ(replayed[i].first, i + 1);
      ASSERT_EQ(replayed[i].second, expected[i]) << "seq " << i + 1;
    }
    // Replay from the middle.
    const auto tail = ReplayAll(*log, 137);
    ASSERT_EQ(tail.size(), expected.size() - 137);
    EXPECT_EQ(tail.front().first, 138u);
    EXPECT_EQ(tail.front().second, expected[137]);

    // The files, read independently: names carry the first seq, sequence is contiguous, no
    // segment exceeds the target (all records are smaller than it), checksums match.
    const std::vector<std::string> files = SegmentFiles();
    EXPECT_GT(files.size(), 20u);
    uint64_t next = 1;
    int64_t total = 0;
    for (const std::string& f : files) {
      const ParsedSegment p = ParseSegmentFile(f);
      EXPECT_EQ(p.first_seq, next) << f;
      EXPECT_LE(p.size, static_cast<size_t>(kSegmentBytes)) << f;
      EXPECT_FALSE(p.records.empty()) << f;
      for (const std::string& r : p.records) EXPECT_EQ(r, expected[next++ - 1]);
      total += static_cast<int64_t>(p.size);
    }
    EXPECT_EQ(next, expected.size() + 1);
    EXPECT_EQ(log->bytes_on_disk(), total);
  }
  // Reopen: every record verified and still there.
  auto log = MustOpen(Opts(kSegmentBytes));
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->recovery().records, expected.size());
  EXPECT_EQ(log->recovery().truncated_bytes, 0);
  EXPECT_EQ(ReplayAll(*log).size(), expected.size());
}

TEST_F(RolloutLogTest, SequenceNumbersContinueAfterReopen) {
  {
    auto log = MustOpen(Opts());
    ASSERT_NE(log, nullptr);
    for (int i = 1; i <= 10; ++i) {
      auto seq = log->AppendAndSync({absl::StrCat("r", i)});
      ASSERT_TRUE(seq.ok());
      EXPECT_EQ(*seq, static_cast<uint64_t>(i));
    }
  }
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->last_seq(), 10u);
  EXPECT_EQ(log->first_seq(), 1u);
  EXPECT_EQ(log->recovery().records, 10u);
  auto seq = log->AppendAndSync({"r11", "r12", "r13", "r14", "r15"});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 15u);
  const auto all = ReplayAll(*log);
  ASSERT_EQ(all.size(), 15u);
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].first, i + 1);
    EXPECT_EQ(all[i].second, absl::StrCat("r", i + 1));
  }
}

TEST_F(RolloutLogTest, SecondOpenOfTheSameDirectoryIsRefusedWhileTheFirstLives) {
  auto first = MustOpen(Opts());
  ASSERT_NE(first, nullptr);
  auto second = RolloutLog::Open(Opts());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  first.reset();
  EXPECT_TRUE(RolloutLog::Open(Opts()).ok());
}

// Writes records "a0".."a4" (one per append) and returns the segment's path.
std::string WriteFiveRecords(const RolloutLog::Options& o) {
  auto log = RolloutLog::Open(o);
  EXPECT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 5; ++i) EXPECT_TRUE((*log)->AppendAndSync({absl::StrCat("a", i)}).ok());
  return absl::StrCat(o.dir, "/rollouts-0000000000000001.log");
}

void ExpectFourIntactRecordsThenAppendWorks(std::unique_ptr<RolloutLog> log) {
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->last_seq(), 4u);
  const auto all = ReplayAll(*log);
  ASSERT_EQ(all.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(all[i].second, absl::StrCat("a", i));
  auto seq = log->AppendAndSync({"new5"});
  ASSERT_TRUE(seq.ok());
  EXPECT_EQ(*seq, 5u);
  EXPECT_EQ(ReplayAll(*log, 4).at(0).second, "new5");
}

TEST_F(RolloutLogTest, TornTailCutMidPayloadIsTruncatedAndReported) {
  const std::string path = WriteFiveRecords(Opts());
  const std::string data = ReadFile(path);
  ASSERT_EQ(data.size(), 5u * (8 + 2));
  WriteFile(path, data.substr(0, data.size() - 1));  // last record loses one payload byte
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->recovery().records, 4u);
  EXPECT_EQ(log->recovery().truncated_bytes, 9);
  EXPECT_EQ(fs::file_size(path), 40u);
  ExpectFourIntactRecordsThenAppendWorks(std::move(log));
  // The repaired log reopens clean.
  auto again = MustOpen(Opts());
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->recovery().truncated_bytes, 0);
  EXPECT_EQ(again->recovery().records, 5u);
}

TEST_F(RolloutLogTest, TornTailCutMidHeaderIsTruncated) {
  const std::string path = WriteFiveRecords(Opts());
  const std::string data = ReadFile(path);
  WriteFile(path, data.substr(0, 40 + 5));  // 4 records + 5 bytes of the fifth header
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->recovery().truncated_bytes, 5);
  ExpectFourIntactRecordsThenAppendWorks(std::move(log));
}

TEST_F(RolloutLogTest, GarbageLengthAtTheEndIsTruncated) {
  const std::string path = WriteFiveRecords(Opts());
  std::string data = ReadFile(path).substr(0, 40);  // drop the fifth record...
  data += std::string(
      "\xff\xff\xff\x7f"
      "\x01\x02\x03\x04"
      "junk",
      12);  // ...append garbage
  WriteFile(path, data);
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->recovery().records, 4u);
  EXPECT_EQ(log->recovery().truncated_bytes, 12);
  ExpectFourIntactRecordsThenAppendWorks(std::move(log));
}

TEST_F(RolloutLogTest, CorruptLastRecordIsATornTail) {
  const std::string path = WriteFiveRecords(Opts());
  std::string data = ReadFile(path);
  data[data.size() - 1] ^= 0x01;  // payload byte of the last record
  WriteFile(path, data);
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->recovery().truncated_bytes, 10);
  ExpectFourIntactRecordsThenAppendWorks(std::move(log));
}

TEST_F(RolloutLogTest, CorruptionInTheMiddleIsDataLossNamingFileAndOffset) {
  const std::string path = WriteFiveRecords(Opts());
  std::string data = ReadFile(path);
  const size_t third_record = 2 * 10;
  data[third_record + 8] ^= 0x40;  // first payload byte of record 3
  WriteFile(path, data);
  auto log = RolloutLog::Open(Opts());
  ASSERT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
  EXPECT_TRUE(absl::StrContains(log.status().message(), path)) << log.status();
  EXPECT_TRUE(absl::StrContains(log.status().message(), "byte offset 20:")) << log.status();
  EXPECT_EQ(ReadFile(path), data) << "a failed Open must not modify the log";
}

TEST_F(RolloutLogTest, DamagedTailOfAnEarlierSegmentIsDataLossNotTorn) {
  // 10-byte records, 30-byte segments: 3 records per segment, 3 segments.
  {
    auto log = MustOpen(Opts(30));
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->AppendAndSync({"a0", "a1", "a2", "a3", "a4", "a5", "a6"}).ok());
  }
  const std::vector<std::string> files = SegmentFiles();
  ASSERT_EQ(files.size(), 3u);
  std::string data = ReadFile(files[0]);
  ASSERT_EQ(data.size(), 30u);
  WriteFile(files[0], data.substr(0, 25));  // the first segment's last record loses bytes
  auto log = RolloutLog::Open(Opts(30));
  ASSERT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
  EXPECT_TRUE(absl::StrContains(log.status().message(), files[0])) << log.status();
  EXPECT_TRUE(absl::StrContains(log.status().message(), "byte offset 20:")) << log.status();
}

TEST_F(RolloutLogTest, MissingMiddleSegmentIsDataLoss) {
  {
    auto log = MustOpen(Opts(30));
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->AppendAndSync({"a0", "a1", "a2", "a3", "a4", "a5", "a6"}).ok());
  }
  const std::vector<std::string> files = SegmentFiles();
  ASSERT_EQ(files.size(), 3u);
  fs::remove(files[1]);
  auto log = RolloutLog::Open(Opts(30));
  ASSERT_EQ(log.status().code(), absl::StatusCode::kDataLoss) << log.status();
  EXPECT_TRUE(absl::StrContains(log.status().message(), files[2])) << log.status();
  EXPECT_TRUE(absl::StrContains(log.status().message(), "sequence gap")) << log.status();
}

TEST_F(RolloutLogTest, ReplayNoticesCorruptionAfterOpen) {
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->AppendAndSync({"a0", "a1", "a2"}).ok());
  const std::string path = SegmentFiles().at(0);
  std::string data = ReadFile(path);
  data[10 + 8] ^= 0x01;  // record 2's payload
  WriteFile(path, data);
  int calls = 0;
  const absl::Status s = log->Replay(0, [&](uint64_t, absl::string_view) {
    ++calls;
    return absl::OkStatus();
  });
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "byte offset 10:")) << s;
  EXPECT_EQ(calls, 1);
}

TEST_F(RolloutLogTest, ReplayStopsAtTheCallbacksFirstError) {
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->AppendAndSync({"a", "b", "c", "d"}).ok());
  std::vector<uint64_t> seen;
  const absl::Status s = log->Replay(0, [&](uint64_t seq, absl::string_view) {
    seen.push_back(seq);
    return seq == 3 ? absl::CancelledError("enough") : absl::OkStatus();
  });
  EXPECT_EQ(s, absl::CancelledError("enough"));
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(RolloutLogTest, TrimRemovesExactlyTheCoveredSegments) {
  // 100-byte records (92-byte payload) in 1000-byte segments: segment k holds 10k+1..10k+10.
  const auto record = [](uint64_t seq) {
    std::string r = absl::StrCat("record-", seq, "-");
    r.resize(92, '.');
    return r;
  };
  auto log = MustOpen(Opts(1000));
  ASSERT_NE(log, nullptr);
  std::vector<std::string> batch;
  for (uint64_t seq = 1; seq <= 95; ++seq) batch.push_back(record(seq));
  ASSERT_EQ(*log->AppendAndSync(batch), 95u);
  ASSERT_EQ(SegmentFiles().size(), 10u);

  // Reference: the non-last segments whose last seq (10k+10) is <= up_to.
  const auto check = [&](uint64_t up_to, int want_removed, uint64_t want_first) {
    const size_t before = SegmentFiles().size();
    auto removed = log->Trim(up_to);
    ASSERT_TRUE(removed.ok()) << removed.status();
    EXPECT_EQ(*removed, want_removed) << "Trim(" << up_to << ")";
    EXPECT_EQ(SegmentFiles().size(), before - want_removed);
    EXPECT_EQ(log->first_seq(), want_first);
    EXPECT_EQ(ParseSegmentFile(SegmentFiles().at(0)).first_seq, want_first);
    const auto replayed = ReplayAll(*log);
    ASSERT_EQ(replayed.size(), 95 - want_first + 1);
    EXPECT_EQ(replayed.front().first, want_first);
    EXPECT_EQ(replayed.front().second, record(want_first));
    EXPECT_EQ(replayed.back().first, 95u);
    int64_t total = 0;
    for (const std::string& f : SegmentFiles()) total += fs::file_size(f);
    EXPECT_EQ(log->bytes_on_disk(), total);
  };
  check(0, 0, 1);
  check(9, 0, 1);    // 1..10 not fully covered
  check(25, 2, 21);  // 1..10 and 11..20
  check(25, 0, 21);
  check(30, 1, 31);
  check(1000, 6, 91);  // everything but the active segment 91..95
  check(1000, 0, 91);
  // Replay from before first_seq starts at first_seq.
  EXPECT_EQ(ReplayAll(*log, 3).front().first, 91u);

  log.reset();
  log = MustOpen(Opts(1000));
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->first_seq(), 91u);
  EXPECT_EQ(log->last_seq(), 95u);
  EXPECT_EQ(log->recovery().records, 5u);
  EXPECT_EQ(*log->AppendAndSync({record(96)}), 96u);
}

TEST_F(RolloutLogTest, EmptyAndLargeRecords) {
  std::mt19937 rng(7);
  const std::vector<std::string> records = {"",  RandomBytes(1 << 20, rng),       "",
                                            "x", RandomBytes((1 << 20) + 3, rng), ""};
  {
    auto log = MustOpen(Opts(512 << 10));
    ASSERT_NE(log, nullptr);
    ASSERT_EQ(*log->AppendAndSync({records[0], records[1], records[2]}), 3u);
    ASSERT_EQ(*log->AppendAndSync({records[3], records[4], records[5]}), 6u);
    const auto all = ReplayAll(*log);
    ASSERT_EQ(all.size(), records.size());
    for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(all[i].second, records[i]) << i;
  }
  // A record larger than segment_bytes gets a segment of its own (others stay together).
  const std::vector<std::string> files = SegmentFiles();
  std::vector<size_t> counts;
  for (const std::string& f : files) counts.push_back(ParseSegmentFile(f).records.size());
  EXPECT_EQ(counts, (std::vector<size_t>{1, 1, 2, 1, 1}));  // "" | 1M | "","x" | 1M | ""
  auto log = MustOpen(Opts(512 << 10));
  ASSERT_NE(log, nullptr);
  const auto all = ReplayAll(*log);
  ASSERT_EQ(all.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(all[i].second, records[i]) << i;
}

// The first record of a fresh (or freshly rolled) segment goes into it whatever its size: no
// empty segment is left behind and no name is reused.
TEST_F(RolloutLogTest, OversizedFirstRecordStaysInTheFirstSegment) {
  auto log = MustOpen(Opts(16));
  ASSERT_NE(log, nullptr);
  auto seq = log->AppendAndSync({"longer than sixteen bytes", "and another long one"});
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_EQ(*seq, 2u);
  const std::vector<std::string> files = SegmentFiles();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(ParseSegmentFile(files[0]).records,
            (std::vector<std::string>{"longer than sixteen bytes"}));
  EXPECT_EQ(ParseSegmentFile(files[1]).first_seq, 2u);
}

TEST_F(RolloutLogTest, ConcurrentAppendsAreEachReplayedOnceInPerThreadOrder) {
  constexpr int kThreads = 4;
  constexpr int kBatches = 40;
  auto log = MustOpen(Opts(2048));  // small segments: rolls happen under contention too
  ASSERT_NE(log, nullptr);
  // Per thread: (last seq returned, batch size) of each batch.
  std::vector<std::vector<std::pair<uint64_t, int>>> acks(kThreads);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      int next = 0;
      for (int b = 0; b < kBatches; ++b) {
        std::vector<std::string> batch(1 + (b + t) % 4);
        for (std::string& r : batch) r = absl::StrCat(t, ":", next++);
        auto last = log->AppendAndSync(batch);
        if (!last.ok()) {
          ++failures;
          return;
        }
        acks[t].emplace_back(*last, static_cast<int>(batch.size()));
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_EQ(failures.load(), 0);

  const auto all = ReplayAll(*log);
  std::vector<int> next_index(kThreads, 0);
  std::map<uint64_t, std::pair<int, int>> by_seq;  // seq -> (thread, index)
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].first, i + 1);
    const std::vector<std::string> parts = absl::StrSplit(all[i].second, ':');
    ASSERT_EQ(parts.size(), 2u);
    int t, index;
    ASSERT_TRUE(absl::SimpleAtoi(parts[0], &t) && absl::SimpleAtoi(parts[1], &index));
    ASSERT_TRUE(t >= 0 && t < kThreads);
    // Exactly once and in the thread's order: each thread's records appear as 0, 1, 2, ...
    ASSERT_EQ(index, next_index[t]++) << "thread " << t << " at seq " << i + 1;
    by_seq[i + 1] = {t, index};
  }
  int total = 0;
  for (int t = 0; t < kThreads; ++t) {
    int index = 0;
    for (const auto& [last, size] : acks[t]) {
      // A batch is contiguous and ends at the returned seq.
      for (int k = 0; k < size; ++k) {
        ASSERT_EQ(by_seq.at(last - size + 1 + k), std::make_pair(t, index++));
      }
    }
    EXPECT_EQ(next_index[t], index);
    total += index;
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(total));
  EXPECT_EQ(log->last_seq(), static_cast<uint64_t>(total));
}

// Passes calls through to POSIX until told to fail.
class FaultySyscalls : public LogSyscalls {
 public:
  // Writes succeed for this many more bytes (the one that crosses it is cut short), then fail.
  std::atomic<int64_t> write_budget{INT64_MAX};
  int write_errno = ENOSPC;
  // The next this-many fsyncs succeed, then they fail.
  std::atomic<int> fsyncs_left{INT_MAX};
  // Every write is cut to at most this many bytes (exercises short-write handling).
  size_t max_write = SIZE_MAX;
  std::atomic<int> writes{0};

  ssize_t Write(int fd, const void* buf, size_t count) override {
    ++writes;
    const int64_t budget = write_budget.load();
    if (budget <= 0) {
      errno = write_errno;
      return -1;
    }
    count = std::min({count, max_write, static_cast<size_t>(budget)});
    const ssize_t n = ::write(fd, buf, count);
    if (n > 0) write_budget -= n;
    return n;
  }
  int Fsync(int fd) override {
    if (fsyncs_left.fetch_sub(1) <= 0) {
      errno = EIO;
      return -1;
    }
    return ::fsync(fd);
  }
};

TEST_F(RolloutLogTest, ShortWritesAreCompleted) {
  FaultySyscalls sys;
  sys.max_write = 7;
  RolloutLog::Options o = Opts(100);
  o.syscalls = &sys;
  std::vector<std::string> records;
  for (int i = 0; i < 30; ++i) records.push_back(std::string(i, static_cast<char>('a' + i % 26)));
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  ASSERT_EQ(*log->AppendAndSync(records), 30u);
  EXPECT_GT(sys.writes.load(), 60);
  log.reset();
  log = MustOpen(Opts(100));
  ASSERT_NE(log, nullptr);
  const auto all = ReplayAll(*log);
  ASSERT_EQ(all.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) EXPECT_EQ(all[i].second, records[i]);
}

TEST_F(RolloutLogTest, FailedWriteIsReportedThenEveryAppendIsRefused) {
  FaultySyscalls sys;
  RolloutLog::Options o = Opts();
  o.syscalls = &sys;
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  ASSERT_EQ(*log->AppendAndSync({"good1", "good2"}), 2u);
  ASSERT_EQ(*log->AppendAndSync({"good3"}), 3u);

  sys.write_budget = 10;  // the disk fills up partway through the next batch
  auto failed = log->AppendAndSync({"doomed-record-1", "doomed-record-2"});
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  const std::string path = SegmentFiles().at(0);
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "write " + path)) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), std::strerror(ENOSPC)))
      << failed.status();

  sys.write_budget = INT64_MAX;  // even once the disk recovers, the log stays poisoned
  auto refused = log->AppendAndSync({"later"});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), std::strerror(ENOSPC)));
  EXPECT_EQ(log->last_seq(), 3u);
  EXPECT_EQ(ReplayAll(*log).size(), 3u);
  log.reset();

  // After a restart the acked records are all there; the partial record is a torn tail.
  log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->recovery().truncated_bytes, 10);
  const auto all = ReplayAll(*log);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].second, "good1");
  EXPECT_EQ(all[2].second, "good3");
  EXPECT_EQ(*log->AppendAndSync({"after-restart"}), 4u);
}

TEST_F(RolloutLogTest, FailedFsyncIsReportedThenEveryAppendIsRefused) {
  FaultySyscalls sys;
  RolloutLog::Options o = Opts();
  o.syscalls = &sys;
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  ASSERT_EQ(*log->AppendAndSync({"good1", "good2"}), 2u);

  sys.fsyncs_left = 0;
  auto failed = log->AppendAndSync({"unsynced1", "unsynced2"});
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  const std::string path = SegmentFiles().at(0);
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "fsync " + path)) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), std::strerror(EIO))) << failed.status();
  sys.fsyncs_left = INT_MAX;
  EXPECT_EQ(log->AppendAndSync({"later"}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(log->last_seq(), 2u);
  log.reset();

  // The acked records come back first. The un-acked batch reached the page cache here, so it
  // may reappear (never acked, so a consumer's dedupe handles it); nothing else may.
  log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  const auto all = ReplayAll(*log);
  const std::vector<std::string> allowed = {"good1", "good2", "unsynced1", "unsynced2"};
  ASSERT_GE(all.size(), 2u);
  ASSERT_LE(all.size(), allowed.size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].second, allowed[i]);
}

TEST_F(RolloutLogTest, FailedDirectoryFsyncWhileRollingPoisonsTheLog) {
  FaultySyscalls sys;
  RolloutLog::Options o = Opts(30);  // three 10-byte records per segment
  o.syscalls = &sys;
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  ASSERT_EQ(*log->AppendAndSync({"a0", "a1", "a2"}), 3u);
  sys.fsyncs_left = 1;  // the finished segment's fsync succeeds; the directory's fails
  auto failed = log->AppendAndSync({"a3"});
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kInternal) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "fsync " + dir_ + ":"))
      << failed.status();
  EXPECT_EQ(log->AppendAndSync({"a4"}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(log->last_seq(), 3u);
}

TEST_F(RolloutLogTest, AppendedRecordsAreDurableAndReplayedOnlyAfterSync) {
  auto log = MustOpen(Opts());
  ASSERT_NE(log, nullptr);
  ASSERT_EQ(*log->AppendAndSync({"a0"}), 1u);
  ASSERT_EQ(*log->Append({"a1", "a2"}), 3u);
  EXPECT_EQ(log->last_seq(), 1u) << "appended, not yet durable";
  EXPECT_EQ(ReplayAll(*log).size(), 1u);
  EXPECT_EQ(*log->Append({}), 3u) << "an empty batch names the last appended record";
  const absl::Status beyond = log->Sync(4);
  EXPECT_EQ(beyond.code(), absl::StatusCode::kInvalidArgument) << beyond;
  EXPECT_TRUE(absl::StrContains(beyond.message(), "Sync(4)")) << beyond;
  ASSERT_TRUE(log->Sync(2).ok());
  EXPECT_EQ(log->last_seq(), 3u) << "one fsync covers everything appended so far";
  EXPECT_TRUE(log->Sync(3).ok());
  EXPECT_EQ(ReplayAll(*log).size(), 3u);
}

// Once armed, an fsync waits at a gate until the test opens it.
class GatedSyscalls : public LogSyscalls {
 public:
  std::atomic<bool> armed{false};
  std::atomic<bool> in_fsync{false};
  absl::Notification open;
  int Fsync(int fd) override {
    if (!armed.load()) return ::fsync(fd);
    in_fsync = true;
    open.WaitForNotification();
    in_fsync = false;
    return ::fsync(fd);
  }
};

TEST_F(RolloutLogTest, AppendsGoOnWhileASyncIsInItsFsync) {
  GatedSyscalls sys;
  RolloutLog::Options o = Opts();
  o.syscalls = &sys;
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  const uint64_t first = *log->Append({"a0"});
  sys.armed = true;
  std::thread syncer([&] { EXPECT_TRUE(log->Sync(first).ok()); });
  while (!sys.in_fsync.load()) absl::SleepFor(absl::Milliseconds(1));
  // The fsync is stuck at the gate: appends, accessors and Replay do not wait for it.
  EXPECT_EQ(*log->Append({"a1"}), 2u);
  EXPECT_EQ(log->last_seq(), 0u);
  EXPECT_TRUE(ReplayAll(*log).empty());
  EXPECT_TRUE(sys.in_fsync.load());
  sys.open.Notify();
  syncer.join();
  EXPECT_GE(log->last_seq(), 1u);
  ASSERT_TRUE(log->Sync(2).ok());
  EXPECT_EQ(log->last_seq(), 2u);
}

// A slow disk: every fsync takes 5 ms.
class SlowSyscalls : public LogSyscalls {
 public:
  std::atomic<int> fsyncs{0};
  int Fsync(int fd) override {
    ++fsyncs;
    absl::SleepFor(absl::Milliseconds(5));
    return ::fsync(fd);
  }
};

TEST_F(RolloutLogTest, ConcurrentSyncsShareFsyncsAndLoseNothingAcrossRolls) {
  SlowSyscalls sys;
  RolloutLog::Options o = Opts(200);  // segments roll every few records, under the syncs
  o.syscalls = &sys;
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  constexpr int kThreads = 8, kEach = 20;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto seq = log->AppendAndSync({absl::StrCat("t", t, "-", i, "-padding-padding")});
        ASSERT_TRUE(seq.ok()) << seq.status();
        EXPECT_GE(log->last_seq(), *seq) << "durable when AppendAndSync returns";
        seqs[t].push_back(*seq);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::vector<uint64_t> all;
  for (const auto& v : seqs) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], i + 1) << "numbers are dense";
  EXPECT_GT(SegmentFiles().size(), 5u);
  // 160 syncs; segment rolls add their own fsyncs, but waiting callers share one.
  EXPECT_LT(sys.fsyncs.load(), kThreads * kEach) << "group commit across callers";
  log.reset();
  log = MustOpen(Opts(200));
  ASSERT_NE(log, nullptr);
  const auto replayed = ReplayAll(*log);
  ASSERT_EQ(replayed.size(), all.size());
  std::map<std::string, int> seen;
  for (const auto& [seq, record] : replayed) ++seen[record];
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kEach; ++i) {
      EXPECT_EQ(seen[absl::StrCat("t", t, "-", i, "-padding-padding")], 1);
    }
  }
}

TEST_F(RolloutLogTest, FailedSyncPoisonsTheLogAndNamesTheSegment) {
  FaultySyscalls sys;
  RolloutLog::Options o = Opts();
  o.syscalls = &sys;
  auto log = MustOpen(o);
  ASSERT_NE(log, nullptr);
  ASSERT_EQ(*log->Append({"a0", "a1"}), 2u);
  sys.fsyncs_left = 0;
  const absl::Status failed = log->Sync(2);
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal) << failed;
  EXPECT_TRUE(absl::StrContains(failed.message(), "fsync " + SegmentFiles().at(0))) << failed;
  sys.fsyncs_left = INT_MAX;
  EXPECT_EQ(log->Sync(2).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(log->Append({"a2"}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(log->last_seq(), 0u);
}

}  // namespace
}  // namespace rhythm::learner

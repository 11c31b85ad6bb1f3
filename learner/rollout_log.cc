#include "learner/rollout_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/memory/memory.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/crc32c.h"
#include "common/logging.h"
#include "common/status.h"

namespace rhythm::learner {
namespace {

constexpr int64_t kHeaderBytes = 8;
// Encoded records are gathered up to this size before a write(2); larger records are written
// straight from the caller's string.
constexpr size_t kWriteChunkBytes = 1 << 20;
constexpr size_t kReadBufferBytes = 256 << 10;
constexpr absl::string_view kPrefix = "rollouts-";
constexpr absl::string_view kSuffix = ".log";

// GNU and XSI strerror_r differ in return type; both overloads below turn either into text.
[[maybe_unused]] const char* StrErrorResult(int rc, const char* buf) {
  return rc == 0 ? buf : "unknown error";
}
[[maybe_unused]] const char* StrErrorResult(const char* text, const char*) { return text; }

// "<op> <path>: <strerror> (errno N)", INTERNAL: the disk, not the caller, is at fault.
absl::Status IoError(absl::string_view op, absl::string_view path, int err) {
  char buf[256];
  return absl::InternalError(absl::StrCat(op, " ", path, ": ",
                                          StrErrorResult(strerror_r(err, buf, sizeof(buf)), buf),
                                          " (errno ", err, ")"));
}

absl::Status DataLoss(absl::string_view path, int64_t offset, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": byte offset ", offset, ": ", what));
}

std::string SegmentName(uint64_t first_seq) {
  return absl::StrFormat("%s%016d%s", kPrefix, first_seq, kSuffix);
}

// Parses "rollouts-<digits>.log"; false for any other name.
bool ParseSegmentName(absl::string_view name, uint64_t* first_seq) {
  if (!absl::ConsumePrefix(&name, kPrefix) || !absl::ConsumeSuffix(&name, kSuffix)) return false;
  if (name.size() < 16) return false;
  for (char c : name) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(name, first_seq);
}

void EncodeLe32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint32_t DecodeLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// mkdir -p.
absl::Status MakeDirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    const std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return IoError("mkdir", prefix, errno);
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return IoError("stat", dir, errno);
  if (!S_ISDIR(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(dir, " is not a directory"));
  return absl::OkStatus();
}

// Reads one segment's records in order, with buffering. Classifies what stops it: the clean
// end, a torn tail (the bad record reaches the end of the file, as an interrupted append
// leaves), or corruption (a bad record followed by more bytes).
class SegmentReader {
 public:
  enum class Next { kRecord, kEnd, kTorn, kCorrupt };

  SegmentReader(int fd, absl::string_view path, int64_t size) : fd_(fd), path_(path), size_(size) {}

  // On kRecord, *payload holds the record. On kTorn/kCorrupt, *why says what is wrong and
  // record_offset() is where the bad record starts. Returns an error status only for I/O errors.
  absl::StatusOr<Next> Read(std::string* payload, std::string* why) {
    record_offset_ = offset_;
    const int64_t left = size_ - offset_;
    if (left == 0) return Next::kEnd;
    if (left < kHeaderBytes) {
      *why = absl::StrCat("incomplete record header (", left, " of 8 bytes)");
      return Next::kTorn;
    }
    char header[kHeaderBytes];
    RHYTHM_RETURN_IF_ERROR(ReadExact(header, kHeaderBytes));
    const uint32_t length = DecodeLe32(header);
    const uint32_t crc = DecodeLe32(header + 4);
    if (length > left - kHeaderBytes) {
      *why = absl::StrCat("record length ", length, " exceeds the ", left - kHeaderBytes,
                          " bytes left in the file");
      return Next::kTorn;
    }
    payload->resize(length);
    RHYTHM_RETURN_IF_ERROR(ReadExact(payload->data(), length));
    const uint32_t actual = common::Crc32c(*payload);
    if (actual != crc) {
      *why = absl::StrFormat("checksum mismatch (stored 0x%08x, computed 0x%08x, length %u)", crc,
                             actual, length);
      return offset_ == size_ ? Next::kTorn : Next::kCorrupt;
    }
    return Next::kRecord;
  }

  int64_t record_offset() const { return record_offset_; }
  int64_t offset() const { return offset_; }  // end of the last record read

 private:
  absl::Status ReadExact(char* dst, size_t n) {
    while (n > 0) {
      if (buffer_pos_ == buffer_.size()) {
        if (n >= kReadBufferBytes) {  // large payloads skip the buffer
          RHYTHM_RETURN_IF_ERROR(ReadFile(dst, n));
          offset_ += static_cast<int64_t>(n);
          return absl::OkStatus();
        }
        const size_t want =
            static_cast<size_t>(std::min<int64_t>(kReadBufferBytes, size_ - offset_));
        if (want == 0) return DataLoss(path_, offset_, "unexpected end of file");
        buffer_.resize(want);
        RHYTHM_RETURN_IF_ERROR(ReadFile(buffer_.data(), want));
        buffer_pos_ = 0;
      }
      const size_t take = std::min(n, buffer_.size() - buffer_pos_);
      std::memcpy(dst, buffer_.data() + buffer_pos_, take);
      buffer_pos_ += take;
      dst += take;
      n -= take;
      offset_ += static_cast<int64_t>(take);
    }
    return absl::OkStatus();
  }

  // Reads exactly n bytes at the file position (the caller never asks past size_).
  absl::Status ReadFile(char* dst, size_t n) {
    while (n > 0) {
      const ssize_t got = ::read(fd_, dst, n);
      if (got < 0) {
        if (errno == EINTR) continue;
        return IoError("read", path_, errno);
      }
      if (got == 0) {
        return DataLoss(path_, offset_, "file shrank while being read");
      }
      dst += got;
      n -= static_cast<size_t>(got);
    }
    return absl::OkStatus();
  }

  const int fd_;
  const std::string path_;
  const int64_t size_;
  int64_t offset_ = 0;  // file offset of the next byte handed out
  int64_t record_offset_ = 0;
  std::string buffer_;
  size_t buffer_pos_ = 0;
};

absl::StatusOr<int64_t> FileSize(int fd, absl::string_view path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return IoError("fstat", path, errno);
  return static_cast<int64_t>(st.st_size);
}

void CloseFd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

ssize_t LogSyscalls::Write(int fd, const void* buf, size_t count) {
  return ::write(fd, buf, count);
}

int LogSyscalls::Fsync(int fd) { return ::fsync(fd); }

LogSyscalls& LogSyscalls::Posix() {
  static LogSyscalls* const posix = new LogSyscalls();
  return *posix;
}

absl::StatusOr<std::unique_ptr<RolloutLog>> RolloutLog::Open(const Options& options) {
  if (options.dir.empty()) return absl::InvalidArgumentError("RolloutLog: options.dir is empty");
  if (options.segment_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("RolloutLog: options.segment_bytes must be > 0, got ", options.segment_bytes));
  }
  LogSyscalls& sys = options.syscalls != nullptr ? *options.syscalls : LogSyscalls::Posix();
  Options normalized = options;
  while (normalized.dir.size() > 1 && normalized.dir.back() == '/') normalized.dir.pop_back();
  const std::string& dir = normalized.dir;
  RHYTHM_RETURN_IF_ERROR(MakeDirs(dir));

  int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return IoError("open", dir, errno);
  int active_fd = -1;
  absl::Cleanup close_on_error = [&] {
    CloseFd(active_fd);
    CloseFd(dir_fd);
  };
  if (::flock(dir_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " is already open by another RolloutLog (flock held)"));
    }
    return IoError("flock", dir, errno);
  }

  // List the segments.
  std::vector<Segment> segments;
  {
    const int list_fd = ::dup(dir_fd);
    if (list_fd < 0) return IoError("dup", dir, errno);
    DIR* d = ::fdopendir(list_fd);
    if (d == nullptr) {
      const int err = errno;
      ::close(list_fd);
      return IoError("opendir", dir, err);
    }
    absl::Cleanup close_dir = [d] { ::closedir(d); };
    errno = 0;
    while (const dirent* entry = ::readdir(d)) {
      uint64_t first_seq;
      if (ParseSegmentName(entry->d_name, &first_seq)) {
        segments.push_back({first_seq, absl::StrCat(dir, "/", entry->d_name), 0});
      }
      errno = 0;
    }
    if (errno != 0) return IoError("readdir", dir, errno);
  }
  std::sort(segments.begin(), segments.end(),
            [](const Segment& a, const Segment& b) { return a.first_seq < b.first_seq; });

  // Verify every record; find the next sequence number and any torn tail.
  Recovery recovery;
  uint64_t next_seq = segments.empty() ? 1 : segments.front().first_seq;
  int64_t torn_at = -1;  // valid length of the last segment, if its tail is torn
  std::string payload, why;
  for (size_t i = 0; i < segments.size(); ++i) {
    Segment& segment = segments[i];
    const bool last = i + 1 == segments.size();
    if (segment.first_seq == 0) return DataLoss(segment.path, 0, "sequence numbers start at 1");
    if (segment.first_seq != next_seq) {
      return DataLoss(segment.path, 0,
                      absl::StrCat("sequence gap: segment starts at ", segment.first_seq,
                                   " but the previous one ends at ", next_seq - 1));
    }
    const int fd = ::open(segment.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return IoError("open", segment.path, errno);
    absl::Cleanup close_fd = [fd] { ::close(fd); };
    RHYTHM_ASSIGN_OR_RETURN(segment.bytes, FileSize(fd, segment.path));
    SegmentReader reader(fd, segment.path, segment.bytes);
    while (true) {
      RHYTHM_ASSIGN_OR_RETURN(SegmentReader::Next next, reader.Read(&payload, &why));
      if (next == SegmentReader::Next::kRecord) {
        ++next_seq;
        ++recovery.records;
        continue;
      }
      if (next == SegmentReader::Next::kEnd) break;
      if (next == SegmentReader::Next::kTorn && last) {
        torn_at = reader.record_offset();
        RHYTHM_LOG(Warning) << "rollout log: truncating torn tail of " << segment.path
                            << " at byte offset " << torn_at << " (" << segment.bytes - torn_at
                            << " bytes): " << why;
        break;
      }
      return DataLoss(segment.path, reader.record_offset(), why);
    }
  }

  if (segments.empty()) {
    Segment first{1, absl::StrCat(dir, "/", SegmentName(1)), 0};
    active_fd =
        ::open(first.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
    if (active_fd < 0) return IoError("create", first.path, errno);
    if (sys.Fsync(dir_fd) != 0) return IoError("fsync", dir, errno);
    segments.push_back(std::move(first));
  } else {
    Segment& active = segments.back();
    active_fd = ::open(active.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (active_fd < 0) return IoError("open", active.path, errno);
    if (torn_at >= 0) {
      if (::ftruncate(active_fd, torn_at) != 0) return IoError("ftruncate", active.path, errno);
      if (sys.Fsync(active_fd) != 0) return IoError("fsync", active.path, errno);
      recovery.truncated_bytes = active.bytes - torn_at;
      active.bytes = torn_at;
    }
  }

  std::move(close_on_error).Cancel();
  return absl::WrapUnique(new RolloutLog(normalized, sys, dir_fd, active_fd, std::move(segments),
                                         next_seq - 1, recovery));
}

RolloutLog::RolloutLog(const Options& options, LogSyscalls& syscalls, int dir_fd, int active_fd,
                       std::vector<Segment> segments, uint64_t last_seq, Recovery recovery)
    : options_(options),
      sys_(syscalls),
      dir_fd_(dir_fd),
      recovery_(recovery),
      active_fd_(active_fd),
      active_path_(segments.back().path),
      active_bytes_(segments.back().bytes),
      active_records_(last_seq + 1 - segments.back().first_seq),
      written_seq_(last_seq),
      segments_(std::move(segments)),
      last_seq_(last_seq) {}

RolloutLog::~RolloutLog() {
  absl::MutexLock lock(&write_mu_);
  CloseFd(active_fd_);
  CloseFd(dir_fd_);  // releases the flock
}

absl::Status RolloutLog::Poison(absl::Status status) {
  if (poisoned_.ok()) poisoned_ = status;
  return status;
}

absl::Status RolloutLog::WriteActive(absl::string_view data) {
  absl::Status status;
  while (!data.empty()) {
    const ssize_t n = sys_.Write(active_fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      status = Poison(IoError("write", active_path_, errno));
      break;
    }
    data.remove_prefix(static_cast<size_t>(n));
    active_bytes_ += n;
  }
  absl::MutexLock lock(&mu_);
  segments_.back().bytes = active_bytes_;
  return status;
}

absl::Status RolloutLog::FlushBuffer() {
  absl::Status status = WriteActive(buffer_);
  buffer_.clear();
  return status;
}

absl::Status RolloutLog::Roll(uint64_t first_seq) {
  RHYTHM_RETURN_IF_ERROR(FlushBuffer());
  if (sys_.Fsync(active_fd_) != 0) return Poison(IoError("fsync", active_path_, errno));
  CloseFd(active_fd_);
  active_fd_ = -1;

  const std::string path = absl::StrCat(options_.dir, "/", SegmentName(first_seq));
  active_fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (active_fd_ < 0) return Poison(IoError("create", path, errno));
  active_path_ = path;
  active_bytes_ = 0;
  active_records_ = 0;
  {
    absl::MutexLock lock(&mu_);
    segments_.push_back({first_seq, path, 0});
  }
  // The new name must be durable before records in it are acked.
  if (sys_.Fsync(dir_fd_) != 0) return Poison(IoError("fsync", options_.dir, errno));
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RolloutLog::Append(const std::vector<std::string>& records) {
  for (size_t i = 0; i < records.size(); ++i) {
    if (records[i].size() > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("RolloutLog: record ", i, " of the batch is ",
                                                     records[i].size(),
                                                     " bytes; the limit is 4 GiB - 1"));
    }
  }
  absl::MutexLock write_lock(&write_mu_);
  if (!poisoned_.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "RolloutLog refuses appends after an earlier I/O error: ", poisoned_.message()));
  }
  uint64_t seq = written_seq_;
  if (records.empty()) return seq;

  for (const std::string& record : records) {
    const int64_t encoded = kHeaderBytes + static_cast<int64_t>(record.size());
    const int64_t pending = active_bytes_ + static_cast<int64_t>(buffer_.size());
    if (active_records_ > 0 && pending + encoded > options_.segment_bytes) {
      RHYTHM_RETURN_IF_ERROR(Roll(seq + 1));
    }
    char header[kHeaderBytes];
    EncodeLe32(static_cast<uint32_t>(record.size()), header);
    EncodeLe32(common::Crc32c(record), header + 4);
    buffer_.append(header, kHeaderBytes);
    if (record.size() >= kWriteChunkBytes) {
      RHYTHM_RETURN_IF_ERROR(FlushBuffer());
      RHYTHM_RETURN_IF_ERROR(WriteActive(record));
    } else {
      buffer_.append(record);
      if (buffer_.size() >= kWriteChunkBytes) RHYTHM_RETURN_IF_ERROR(FlushBuffer());
    }
    ++active_records_;
    ++seq;
  }
  RHYTHM_RETURN_IF_ERROR(FlushBuffer());
  written_seq_ = seq;
  return seq;
}

absl::Status RolloutLog::Sync(uint64_t seq) {
  {
    // Already durable: do not queue behind a sync that is running.
    absl::ReaderMutexLock lock(&mu_);
    if (seq <= last_seq_) return absl::OkStatus();
  }
  // One fsync at a time. A caller that waited here usually finds its records made durable by
  // the fsync it waited for (group commit across callers).
  absl::MutexLock sync_lock(&sync_mu_);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (seq <= last_seq_) return absl::OkStatus();
  }
  uint64_t target;
  int fd;
  std::string path;
  {
    absl::MutexLock write_lock(&write_mu_);
    if (!poisoned_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "RolloutLog cannot sync after an earlier I/O error: ", poisoned_.message()));
    }
    if (seq > written_seq_) {
      return absl::InvalidArgumentError(absl::StrCat("RolloutLog::Sync(", seq, "): only ",
                                                     written_seq_, " records were appended"));
    }
    target = written_seq_;
    path = active_path_;
    // A descriptor of our own: an Append may roll the segment (and close active_fd_) while
    // this fsync runs. Roll fsyncs the segment it finishes, so records in it are durable too.
    fd = ::fcntl(active_fd_, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return Poison(IoError("dup", path, errno));
  }
  const int rc = sys_.Fsync(fd);
  const int err = errno;
  CloseFd(fd);
  if (rc != 0) {
    absl::MutexLock write_lock(&write_mu_);
    return Poison(IoError("fsync", path, err));
  }
  absl::MutexLock lock(&mu_);
  last_seq_ = std::max(last_seq_, target);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> RolloutLog::AppendAndSync(const std::vector<std::string>& records) {
  RHYTHM_ASSIGN_OR_RETURN(const uint64_t seq, Append(records));
  RHYTHM_RETURN_IF_ERROR(Sync(seq));
  return seq;
}

absl::Status RolloutLog::Replay(
    uint64_t after_seq, const std::function<absl::Status(uint64_t, absl::string_view)>& fn) const {
  struct Open {
    Segment segment;
    uint64_t last_seq;
    int fd;
  };
  std::vector<Open> open;
  absl::Cleanup close_all = [&open] {
    for (const Open& o : open) ::close(o.fd);
  };
  {
    // Open the files under the lock so a concurrent Trim cannot delete them first (an unlinked
    // file stays readable through its descriptor).
    absl::ReaderMutexLock lock(&mu_);
    for (size_t i = 0; i < segments_.size(); ++i) {
      const Segment& s = segments_[i];
      const uint64_t last = std::min(
          last_seq_, i + 1 < segments_.size() ? segments_[i + 1].first_seq - 1 : last_seq_);
      if (last < s.first_seq || last <= after_seq) continue;
      const int fd = ::open(s.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return IoError("open", s.path, errno);
      open.push_back({s, last, fd});
    }
  }
  std::string payload, why;
  for (const Open& o : open) {
    // The size now covers every record up to o.last_seq (they were written before the lock).
    RHYTHM_ASSIGN_OR_RETURN(const int64_t size, FileSize(o.fd, o.segment.path));
    SegmentReader reader(o.fd, o.segment.path, size);
    for (uint64_t seq = o.segment.first_seq; seq <= o.last_seq; ++seq) {
      RHYTHM_ASSIGN_OR_RETURN(SegmentReader::Next next, reader.Read(&payload, &why));
      if (next == SegmentReader::Next::kEnd) {
        return DataLoss(o.segment.path, reader.record_offset(),
                        absl::StrCat("file ends before record ", seq));
      }
      if (next != SegmentReader::Next::kRecord) {
        return DataLoss(o.segment.path, reader.record_offset(), why);
      }
      if (seq > after_seq) RHYTHM_RETURN_IF_ERROR(fn(seq, payload));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RolloutLog::Trim(uint64_t up_to_seq) {
  int removed = 0;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t covered = std::min(up_to_seq, last_seq_);
    // segments_[1].first_seq - 1 is the last record of segments_[0].
    while (segments_.size() > 1 && segments_[1].first_seq - 1 <= covered) {
      const std::string& path = segments_.front().path;
      if (::unlink(path.c_str()) != 0) return IoError("unlink", path, errno);
      segments_.erase(segments_.begin());
      ++removed;
    }
  }
  // Make the removals durable. If this fails, the segments may come back after a crash, which
  // is harmless (Open accepts them; the next Trim removes them again), so it is only logged.
  if (removed > 0 && sys_.Fsync(dir_fd_) != 0) {
    RHYTHM_LOG(Warning) << "rollout log: " << IoError("fsync", options_.dir, errno).message();
  }
  return removed;
}

uint64_t RolloutLog::last_seq() const {
  absl::ReaderMutexLock lock(&mu_);
  return last_seq_;
}

uint64_t RolloutLog::first_seq() const {
  absl::ReaderMutexLock lock(&mu_);
  return std::min(segments_.front().first_seq, last_seq_ + 1);
}

int64_t RolloutLog::bytes_on_disk() const {
  absl::ReaderMutexLock lock(&mu_);
  int64_t total = 0;
  for (const Segment& s : segments_) total += s.bytes;
  return total;
}

}  // namespace rhythm::learner

// RolloutLog: the learner's durable, append-only record log. The learner acks a rollout to its
// actor only after its record is durable: Append has returned its sequence number and a Sync
// through that number has returned (or AppendAndSync, which does both), so an acked rollout
// survives a crash. Records are opaque bytes: the learner's journal records
// (learner/journal.h); the log does not look inside.
//
// On disk, a directory of segments named by the sequence number of their first record:
//
//   <dir>/rollouts-0000000000000001.log   records 1..k
//   <dir>/rollouts-<k+1, 16 digits>.log    records k+1.. (the active segment, written last)
//
// Each segment is a run of records, nothing else (no file header):
//
//   [u32 LE payload length][u32 LE CRC-32C of the payload (common/crc32c.h)][payload]
//
// Sequence numbers are 1-based and consecutive across segments and restarts. A record never
// spans segments. Other files in the directory are ignored.
//
// Crash recovery (Open): every retained segment is read and every checksum verified. The only
// damage a crash mid-append can leave is at the very end of the active segment, so an incomplete
// or corrupt LAST record of the LAST segment is a torn tail: Open truncates it away (fsync'd),
// logs a warning and reports it in recovery(). A torn record was never acked (it was never
// fsync'd), so nothing acked is lost. Damage anywhere else, or a gap in the sequence between
// segments, is DATA_LOSS naming the segment file and the byte offset; Open then changes nothing.
//
// Durability caveat: an all-zero header is a valid empty record (CRC-32C of "" is 0), so a
// file system that can leave a zero-filled tail after a crash (extended size, data never
// written) would make those zeros read back as empty records. ext4 (data=ordered) and XFS
// update the size only after the data, so this does not arise there.
//
// Failure: after any write or fsync error the log is poisoned: that call returns the error and
// every later AppendAndSync returns FAILED_PRECONDITION, because after a failed fsync the kernel
// may already have dropped the dirty pages and a retry could "succeed" without the data. Restart
// (re-Open) to recover. Records of the batch that failed may or may not be present after the
// restart (they were never acked); consumers dedupe by rollout id anyway.
//
// Thread-safety: every method may be called from any thread. Appends are serialised (one writer
// at a time, holding the write lock across its writes, which go to the page cache); Syncs are
// serialised among themselves and hold no other lock across their fsync, so appends continue
// while a sync runs, and the next sync makes all of them durable at once (group commit across
// callers). Accessors, Replay and Trim take a separate state lock that is held only briefly,
// never across an fsync, so they do not wait for a slow disk. One RolloutLog per directory per
// host: Open takes an exclusive flock on the directory and fails while another RolloutLog (in
// any process) holds it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace rhythm::learner {

// The two system calls through which RolloutLog makes data durable, behind a seam so tests can
// make them fail (a full disk, an fsync EIO) or return short writes. The default implementations
// are the POSIX calls; a test subclass overrides them. Implementations must be thread-safe.
class LogSyscalls {
 public:
  virtual ~LogSyscalls() = default;
  // As write(2): the number of bytes written (possibly fewer than `count`), or -1 with errno set.
  virtual ssize_t Write(int fd, const void* buf, size_t count);
  // As fsync(2): 0, or -1 with errno set. Used for segment files and for the directory.
  virtual int Fsync(int fd);
  // The process-wide POSIX instance.
  static LogSyscalls& Posix();
};

// Append-only, segmented, checksummed record log with group commit. See the file comment.
class RolloutLog {
 public:
  struct Options {
    // Directory holding the segments; created, with its parents, if missing.
    std::string dir;
    // Target segment size. Before appending a record that would take a non-empty segment past
    // this, the log closes it and starts a new one; a record larger than this gets a segment of
    // its own. Must be > 0. Default 64 MiB.
    int64_t segment_bytes = int64_t{64} << 20;
    // Where writes and fsyncs go. Not owned; must outlive the log. nullptr means POSIX.
    LogSyscalls* syscalls = nullptr;
  };

  // What Open found in the directory.
  struct Recovery {
    uint64_t records = 0;         // intact records scanned (after trims: the retained ones)
    int64_t truncated_bytes = 0;  // bytes of torn tail cut from the last segment (0 if clean)
  };

  // Opens the log in options.dir, or creates an empty one (with its first segment). Scans and
  // verifies every segment (see the file comment), so start-up reads all retained data.
  // Errors: INVALID_ARGUMENT for bad options; FAILED_PRECONDITION if another RolloutLog holds
  // the directory; DATA_LOSS "<segment path>: byte offset N: <what>" for corruption or a sequence
  // gap; INTERNAL "<op> <path>: <errno text>" for I/O errors.
  static absl::StatusOr<std::unique_ptr<RolloutLog>> Open(const Options& options);

  ~RolloutLog();
  RolloutLog(const RolloutLog&) = delete;
  RolloutLog& operator=(const RolloutLog&) = delete;

  // Writes `records` in order (to the page cache: not yet durable, not yet visible to Replay or
  // last_seq()) and returns the sequence number of the last one; the batch holds
  // last-n+1..last. When the batch crosses segments, the finished segment and the directory
  // are fsync'd. An empty batch writes nothing and returns the last appended number.
  // Errors: INVALID_ARGUMENT if a record is 4 GiB or larger (nothing is written, the log stays
  // usable); INTERNAL "<write|open> <path>: <errno text>" on an I/O error, after which the log
  // is poisoned; FAILED_PRECONDITION (quoting the first error) on every call after that.
  absl::StatusOr<uint64_t> Append(const std::vector<std::string>& records);

  // Returns once every record up to `seq` is durable (fsync'd): at once if it already is,
  // otherwise after one fsync that covers everything appended so far. Errors: INVALID_ARGUMENT
  // for a `seq` never appended; INTERNAL "fsync <path>: <errno text>", after which the log is
  // poisoned; FAILED_PRECONDITION once poisoned.
  absl::Status Sync(uint64_t seq);

  // Append, then Sync through the batch's last record. Errors as theirs.
  absl::StatusOr<uint64_t> AppendAndSync(const std::vector<std::string>& records);

  // Calls fn(seq, record) for each durable record with seq > after_seq, in sequence order, up to
  // last_seq() as of the call; records appended meanwhile are not visited. Records below
  // first_seq() have been trimmed and are skipped silently. `record` is valid only during the
  // call. fn may call this log's methods. Stops at and returns fn's first error. Checksums are
  // verified again: DATA_LOSS "<path>: byte offset N: <what>" if a segment changed on disk since
  // Open; INTERNAL for I/O errors.
  absl::Status Replay(uint64_t after_seq,
                      const std::function<absl::Status(uint64_t, absl::string_view)>& fn) const;

  // Deletes, oldest first, the whole segments all of whose records have seq <= up_to_seq (a
  // checkpoint covers them) and were acked. Never deletes the active (last) segment, so at least
  // the newest records stay. Returns the number of segments removed.
  // Errors: INTERNAL "unlink <path>: <errno text>"; segments before it are already gone.
  absl::StatusOr<int> Trim(uint64_t up_to_seq);

  uint64_t last_seq() const;      // last durable record; 0 when the log has never held one
  uint64_t first_seq() const;     // first retained record (after trims); last_seq()+1 when empty
  int64_t bytes_on_disk() const;  // total size of the retained segments
  // What Open found. Fixed after Open.
  const Recovery& recovery() const { return recovery_; }

 private:
  struct Segment {
    uint64_t first_seq;  // sequence number of its first record (also in its file name)
    std::string path;
    int64_t bytes;
  };

  RolloutLog(const Options& options, LogSyscalls& syscalls, int dir_fd, int active_fd,
             std::vector<Segment> segments, uint64_t last_seq, Recovery recovery);

  // Writes all of `data` to the active segment (retrying short writes); poisons on error.
  absl::Status WriteActive(absl::string_view data) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Writes buffer_ out and clears it.
  absl::Status FlushBuffer() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Finishes the active segment (flush, fsync, close) and starts one whose first record will be
  // `first_seq` (create, fsync the directory).
  absl::Status Roll(uint64_t first_seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Records `status` as the reason all later appends fail, and returns it.
  absl::Status Poison(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  const Options options_;
  LogSyscalls& sys_;
  const int dir_fd_;  // open for the log's lifetime: holds the flock, target of directory fsyncs
  const Recovery recovery_;

  // Lock order: sync_mu_, then write_mu_, then mu_. sync_mu_ is held across fsync; the others
  // are not (but Roll, rare, fsyncs under write_mu_).
  absl::Mutex sync_mu_ ABSL_ACQUIRED_BEFORE(write_mu_);
  absl::Mutex write_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  int active_fd_ ABSL_GUARDED_BY(write_mu_);  // the last segment, O_APPEND
  std::string active_path_ ABSL_GUARDED_BY(write_mu_);
  int64_t active_bytes_ ABSL_GUARDED_BY(write_mu_);     // bytes written to the active segment
  uint64_t active_records_ ABSL_GUARDED_BY(write_mu_);  // records written to it (incl. pending)
  uint64_t written_seq_ ABSL_GUARDED_BY(write_mu_);     // last appended record (maybe not durable)
  absl::Status poisoned_ ABSL_GUARDED_BY(write_mu_);    // first I/O error; OK while healthy
  std::string buffer_ ABSL_GUARDED_BY(write_mu_);       // encoded records not yet written

  mutable absl::Mutex mu_;
  // Retained segments in sequence order; never empty; back() is the active one.
  std::vector<Segment> segments_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_);  // last durable (written and fsync'd) record
};

}  // namespace rhythm::learner

// VersionStore: the learner's published policy versions, newest K kept, each ready to serve as
// gRPC chunks (per-chunk CRC32C computed once at publish) or to broadcast in buckets. A reader
// holds a shared_ptr, so a slow download keeps its version alive even after it is evicted and
// never sees a half-written one; and an evicted version stays available to Get while anyone
// still holds it (WeightService pins the first and last versions announced on each open
// watch, so an actor further away than keep_versions steps can still fetch what it was told
// about; docs/architecture.md §4.8). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rhythm/v1/weights.pb.h"

namespace rhythm::common::weights {

struct PublishedVersion {
  // version, total_bytes, num_chunks, chunk_bytes, bucket_bytes, wire_dtype, tensors, crc32c.
  v1::WeightVersion announcement;
  std::string bytes;
  std::vector<uint32_t> chunk_crc;

  // Byte range [begin, end) of chunk `index`.
  uint64_t ChunkBegin(uint32_t index) const;
  uint64_t ChunkEnd(uint32_t index) const;
};

class VersionStore {
 public:
  VersionStore(int keep_versions, uint32_t chunk_bytes, uint64_t bucket_bytes);

  // Publishes `bytes` (a flat buffer, common/model/flat_weights.h) as `version`, which must be
  // newer than every version published before; evicts all but the newest keep_versions.
  std::shared_ptr<const PublishedVersion> Publish(int64_t version,
                                                  std::vector<v1::TensorSpec> tensors,
                                                  std::string bytes, v1::WireDType dtype);
  // The version, or null when it is neither kept nor still held by a reader.
  std::shared_ptr<const PublishedVersion> Get(int64_t version) const;
  // The newest version, or null before the first Publish.
  std::shared_ptr<const PublishedVersion> Latest() const;
  // Blocks until a version newer than `after` exists or `timeout` passes; returns the newest
  // (possibly not newer, possibly null).
  std::shared_ptr<const PublishedVersion> WaitNewer(int64_t after, absl::Duration timeout) const;
  // Wakes every WaitNewer (used at shutdown).
  void Close();

 private:
  const int keep_;
  const uint32_t chunk_bytes_;
  const uint64_t bucket_bytes_;
  mutable absl::Mutex mu_;
  std::map<int64_t, std::shared_ptr<const PublishedVersion>> versions_ ABSL_GUARDED_BY(mu_);
  // Evicted versions, available while a reader holds them; expired entries are pruned at
  // Publish, so this holds at most the versions readers hold plus those evicted since.
  mutable std::map<int64_t, std::weak_ptr<const PublishedVersion>> evicted_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace rhythm::common::weights

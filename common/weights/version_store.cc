#include "common/weights/version_store.h"

#include <algorithm>
#include <utility>

#include "common/crc32c.h"

namespace rhythm::common::weights {

uint64_t PublishedVersion::ChunkBegin(uint32_t index) const {
  return static_cast<uint64_t>(index) * announcement.chunk_bytes();
}

uint64_t PublishedVersion::ChunkEnd(uint32_t index) const {
  return std::min<uint64_t>(ChunkBegin(index) + announcement.chunk_bytes(), bytes.size());
}

VersionStore::VersionStore(int keep_versions, uint32_t chunk_bytes, uint64_t bucket_bytes)
    : keep_(std::max(1, keep_versions)),
      chunk_bytes_(std::max<uint32_t>(1, chunk_bytes)),
      bucket_bytes_(std::max<uint64_t>(1, bucket_bytes)) {}

std::shared_ptr<const PublishedVersion> VersionStore::Publish(int64_t version,
                                                              std::vector<v1::TensorSpec> tensors,
                                                              std::string bytes,
                                                              v1::WireDType dtype) {
  auto pub = std::make_shared<PublishedVersion>();
  v1::WeightVersion& a = pub->announcement;
  a.set_version(version);
  a.set_total_bytes(bytes.size());
  a.set_wire_dtype(dtype);
  a.set_chunk_bytes(chunk_bytes_);
  a.set_bucket_bytes(bucket_bytes_);
  for (v1::TensorSpec& t : tensors) *a.add_tensors() = std::move(t);
  a.mutable_source()->set_transport(v1::TRANSPORT_KIND_GRPC);
  a.mutable_source()->set_rank(-1);
  a.set_crc32c(Crc32c(bytes));
  for (uint64_t off = 0; off < bytes.size(); off += chunk_bytes_) {
    const uint64_t len = std::min<uint64_t>(chunk_bytes_, bytes.size() - off);
    pub->chunk_crc.push_back(Crc32c(bytes.data() + off, len));
  }
  a.set_num_chunks(static_cast<uint32_t>(pub->chunk_crc.size()));
  pub->bytes = std::move(bytes);
  absl::MutexLock lock(&mu_);
  versions_[version] = pub;
  for (auto it = evicted_.begin(); it != evicted_.end();) {
    it = it->second.expired() ? evicted_.erase(it) : std::next(it);
  }
  while (static_cast<int>(versions_.size()) > keep_) {
    evicted_[versions_.begin()->first] = versions_.begin()->second;
    versions_.erase(versions_.begin());
  }
  return pub;
}

std::shared_ptr<const PublishedVersion> VersionStore::Get(int64_t version) const {
  absl::MutexLock lock(&mu_);
  if (auto it = versions_.find(version); it != versions_.end()) return it->second;
  auto it = evicted_.find(version);
  return it == evicted_.end() ? nullptr : it->second.lock();
}

std::shared_ptr<const PublishedVersion> VersionStore::Latest() const {
  absl::MutexLock lock(&mu_);
  return versions_.empty() ? nullptr : versions_.rbegin()->second;
}

std::shared_ptr<const PublishedVersion> VersionStore::WaitNewer(int64_t after,
                                                                absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto newer = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || (!versions_.empty() && versions_.rbegin()->first > after);
  };
  mu_.AwaitWithTimeout(absl::Condition(&newer), timeout);
  return versions_.empty() ? nullptr : versions_.rbegin()->second;
}

void VersionStore::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

}  // namespace rhythm::common::weights

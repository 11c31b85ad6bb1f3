// BoundedQueue<T>: a multi-producer multi-consumer FIFO of fixed capacity with Close().
//
// Push blocks while the queue is full, so a slow consumer slows its producers instead of growing
// memory. Close() wakes every waiter: blocked producers return false (their item is not queued),
// consumers drain what is left and then get std::nullopt. Thread-safe.
#pragma once

#include <cstddef>
#include <deque>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace rhythm::common {

template <typename T>
class BoundedQueue {
 public:
  // `capacity` must be at least 1.
  explicit BoundedQueue(size_t capacity) : capacity_(capacity < 1 ? 1 : capacity) {}
  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  // Blocks until there is room or the queue is closed. Returns false (dropping nothing that was
  // queued before) when closed.
  bool Push(T item) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &BoundedQueue::HasRoomOrClosed));
    if (closed_) return false;
    items_.push_back(std::move(item));
    return true;
  }

  // Like Push, but gives up after `timeout`. Returns false on timeout or when closed; the
  // caller keeps ownership semantics simple by passing a copy or moved value it no longer needs.
  bool PushWithTimeout(T item, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(this, &BoundedQueue::HasRoomOrClosed), timeout) ||
        closed_) {
      return false;
    }
    items_.push_back(std::move(item));
    return true;
  }

  // Never blocks: false when full or closed.
  bool TryPush(T item) {
    absl::MutexLock lock(&mu_);
    if (closed_ || items_.size() >= capacity_) return false;
    items_.push_back(std::move(item));
    return true;
  }

  // Blocks until an item is available or the queue is closed and empty (then nullopt).
  std::optional<T> Pop() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &BoundedQueue::HasItemOrClosed));
    return TakeFrontLocked();
  }

  // Like Pop, but returns nullopt after `timeout` with nothing available.
  std::optional<T> PopWithTimeout(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &BoundedQueue::HasItemOrClosed), timeout);
    return TakeFrontLocked();
  }

  // Refuses further pushes and wakes every blocked producer and consumer. Idempotent.
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  bool closed() const {
    absl::MutexLock lock(&mu_);
    return closed_;
  }
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return items_.size();
  }
  size_t capacity() const { return capacity_; }

 private:
  bool HasRoomOrClosed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || items_.size() < capacity_;
  }
  bool HasItemOrClosed() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || !items_.empty();
  }
  std::optional<T> TakeFrontLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (items_.empty()) return std::nullopt;
    std::optional<T> out(std::move(items_.front()));
    items_.pop_front();
    return out;
  }

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace rhythm::common

// Bytes that LibTorch's CPU allocator holds for tensors allocated while a meter is installed:
// now and at the peak. For tests and benchmarks that ask what a computation keeps (e.g. what a
// forward leaves for backward), without the noise of the process's RSS.
//
// How: the CPU allocator reports every allocation and free to the thread's
// PROFILER_STATE debug info when that info says memory profiling is on; the meter is such an
// info. Only threads that carry it report (the installing thread, and the autograd engine and
// at::parallel workers it starts, which inherit it); blocks allocated before it was installed
// are not counted when they are freed.
//
//   auto meter = std::make_shared<CpuMemoryMeter>();
//   { c10::DebugInfoGuard g(c10::DebugInfoKind::PROFILER_STATE, meter); ...work... }
//   meter->current(), meter->peak()
//
// Thread-safety: the counters are atomic; reports may come from any thread.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "c10/core/Allocator.h"
#include "c10/util/ThreadLocalDebugInfo.h"

namespace rhythm::common::model {

class CpuMemoryMeter : public c10::MemoryReportingInfoBase {
 public:
  void reportMemoryUsage(void* /*ptr*/, int64_t alloc_size, int64_t /*total_allocated*/,
                         int64_t /*total_reserved*/, c10::Device device) override {
    if (!device.is_cpu()) return;
    const int64_t now = current_.fetch_add(alloc_size) + alloc_size;
    int64_t peak = peak_.load();
    while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
    }
  }
  bool memoryProfilingEnabled() const override { return true; }

  // Bytes allocated and not yet freed since the meter was installed.
  int64_t current() const { return current_.load(); }
  // The largest current() since installation or the last ResetPeak().
  int64_t peak() const { return peak_.load(); }
  void ResetPeak() { peak_.store(current_.load()); }

 private:
  std::atomic<int64_t> current_{0}, peak_{0};
};

}  // namespace rhythm::common::model

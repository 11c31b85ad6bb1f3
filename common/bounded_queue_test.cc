#include "common/bounded_queue.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace rhythm::common {
namespace {

TEST(BoundedQueue, FifoOrder) {
  BoundedQueue<int> q(4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(q.Push(i));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(q.Pop().value(), i);
  EXPECT_EQ(q.size(), 0u);
}

TEST(BoundedQueue, CapacityBlocksProducerUntilConsumerTakesOne) {
  BoundedQueue<int> q(2);
  ASSERT_TRUE(q.Push(1));
  ASSERT_TRUE(q.Push(2));
  EXPECT_FALSE(q.TryPush(3));
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    EXPECT_TRUE(q.Push(3));
    pushed = true;
  });
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(pushed.load()) << "Push must block while the queue is full";
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.Pop().value(), 1);
  producer.join();
  EXPECT_TRUE(pushed.load());
  EXPECT_EQ(q.Pop().value(), 2);
  EXPECT_EQ(q.Pop().value(), 3);
}

TEST(BoundedQueue, PushWithTimeoutGivesUpWhenFull) {
  BoundedQueue<int> q(1);
  ASSERT_TRUE(q.Push(1));
  const absl::Time start = absl::Now();
  EXPECT_FALSE(q.PushWithTimeout(2, absl::Milliseconds(50)));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(45));
  EXPECT_EQ(q.size(), 1u);
}

TEST(BoundedQueue, CloseWakesEveryBlockedProducerAndConsumer) {
  BoundedQueue<int> full(1);
  ASSERT_TRUE(full.Push(0));
  BoundedQueue<int> empty(1);
  std::atomic<int> producers_refused{0};
  std::atomic<int> consumers_woken{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      if (!full.Push(1)) ++producers_refused;
    });
    threads.emplace_back([&] {
      if (!empty.Pop().has_value()) ++consumers_woken;
    });
  }
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(producers_refused.load(), 0);
  EXPECT_EQ(consumers_woken.load(), 0);
  full.Close();
  empty.Close();
  for (auto& t : threads) t.join();
  EXPECT_EQ(producers_refused.load(), 3);
  EXPECT_EQ(consumers_woken.load(), 3);
}

TEST(BoundedQueue, ClosedQueueDrainsThenReturnsNullopt) {
  BoundedQueue<int> q(3);
  ASSERT_TRUE(q.Push(7));
  ASSERT_TRUE(q.Push(8));
  q.Close();
  EXPECT_FALSE(q.Push(9));
  EXPECT_FALSE(q.TryPush(9));
  EXPECT_EQ(q.Pop().value(), 7);
  EXPECT_EQ(q.Pop().value(), 8);
  EXPECT_FALSE(q.Pop().has_value());
  EXPECT_FALSE(q.PopWithTimeout(absl::Milliseconds(1)).has_value());
}

TEST(BoundedQueue, ManyProducersManyConsumersLoseNothing) {
  BoundedQueue<int> q(8);
  constexpr int kPerProducer = 2000;
  std::atomic<long> sum{0};
  std::atomic<int> count{0};
  std::vector<std::thread> consumers;
  for (int c = 0; c < 3; ++c) {
    consumers.emplace_back([&] {
      while (auto v = q.Pop()) {
        sum += *v;
        ++count;
      }
    });
  }
  std::vector<std::thread> producers;
  for (int p = 0; p < 3; ++p) {
    producers.emplace_back([&] {
      for (int i = 1; i <= kPerProducer; ++i) ASSERT_TRUE(q.Push(i));
    });
  }
  for (auto& t : producers) t.join();
  q.Close();
  for (auto& t : consumers) t.join();
  EXPECT_EQ(count.load(), 3 * kPerProducer);
  EXPECT_EQ(sum.load(), 3L * kPerProducer * (kPerProducer + 1) / 2);
}

}  // namespace
}  // namespace rhythm::common

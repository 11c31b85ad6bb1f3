// Exact rational numbers for the countdown evaluator and solver: a reduced fraction of 128-bit
// integers with checked arithmetic. Every operation returns nullopt instead of overflowing (or
// dividing by zero), so callers decide what an unrepresentable value means.
//
// Range: a value built with + - * / from k integers of magnitude at most M has a reduced
// numerator and denominator of at most 2^(k-1) * M^k, and so do the cross products formed on the
// way; for the countdown bounds (k <= 6, M <= 1000) that is 3.2e19, far below 2^127 = 1.7e38.
// Overflow is therefore only reachable with inputs outside those bounds, and is reported.
//
// Thread-safety: a value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace rhythm::common::tasks {

class Rational {
 public:
  using Int = __int128;

  Rational() = default;  // 0
  explicit Rational(int64_t value) : num_(value), den_(1) {}

  // num/den reduced to lowest terms with a positive denominator; nullopt if den == 0 or the
  // reduced value does not fit (only for num or den == INT128 min).
  static std::optional<Rational> Make(Int num, Int den);

  Int num() const { return num_; }
  Int den() const { return den_; }
  bool is_integer() const { return den_ == 1; }

  // nullopt on overflow; Divide also on division by zero.
  static std::optional<Rational> Add(const Rational& a, const Rational& b);
  static std::optional<Rational> Subtract(const Rational& a, const Rational& b);
  static std::optional<Rational> Multiply(const Rational& a, const Rational& b);
  static std::optional<Rational> Divide(const Rational& a, const Rational& b);

  // "27", "-5/2".
  std::string ToString() const;

  friend bool operator==(const Rational& a, const Rational& b) {
    return a.num_ == b.num_ && a.den_ == b.den_;
  }
  friend bool operator!=(const Rational& a, const Rational& b) { return !(a == b); }

  template <typename H>
  friend H AbslHashValue(H h, const Rational& r) {
    const auto u = [](Int x) { return static_cast<unsigned __int128>(x); };
    return H::combine(std::move(h), static_cast<uint64_t>(u(r.num_)),
                      static_cast<uint64_t>(u(r.num_) >> 64), static_cast<uint64_t>(u(r.den_)),
                      static_cast<uint64_t>(u(r.den_) >> 64));
  }

 private:
  Rational(Int num, Int den) : num_(num), den_(den) {}

  Int num_ = 0;
  Int den_ = 1;  // always > 0, gcd(num_, den_) == 1
};

// Decimal text of a 128-bit integer.
std::string Int128ToString(__int128 value);

}  // namespace rhythm::common::tasks

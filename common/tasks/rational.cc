#include "common/tasks/rational.h"

#include <algorithm>
#include <limits>

namespace rhythm::common::tasks {
namespace {

using Int = Rational::Int;
using UInt = unsigned __int128;

constexpr Int kMin = static_cast<Int>(static_cast<UInt>(1) << 127);

UInt Abs(Int x) {
  return x < 0 ? static_cast<UInt>(0) - static_cast<UInt>(x) : static_cast<UInt>(x);
}

UInt Gcd(UInt a, UInt b) {
  while (b != 0) {
    // 64-bit division is much cheaper; most values in practice are small.
    if ((a >> 64) == 0 && (b >> 64) == 0) {
      uint64_t x = static_cast<uint64_t>(a), y = static_cast<uint64_t>(b);
      while (y != 0) {
        const uint64_t t = x % y;
        x = y;
        y = t;
      }
      return x;
    }
    const UInt t = a % b;
    a = b;
    b = t;
  }
  return a;
}

std::optional<Int> Mul(Int a, Int b) {
  Int r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::optional<Int> AddInt(Int a, Int b) {
  Int r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

}  // namespace

std::optional<Rational> Rational::Make(Int num, Int den) {
  if (den == 0 || num == kMin || den == kMin) return std::nullopt;
  if (den < 0) {
    num = -num;
    den = -den;
  }
  const UInt g = Gcd(Abs(num), static_cast<UInt>(den));
  if (g > 1) {
    num /= static_cast<Int>(g);
    den /= static_cast<Int>(g);
  }
  return Rational(num, den);
}

std::optional<Rational> Rational::Add(const Rational& a, const Rational& b) {
  if (a.den_ == 1 && b.den_ == 1) {
    const std::optional<Int> sum = AddInt(a.num_, b.num_);
    if (!sum.has_value() || *sum == kMin) return std::nullopt;
    return Rational(*sum, 1);
  }
  const std::optional<Int> x = Mul(a.num_, b.den_);
  const std::optional<Int> y = Mul(b.num_, a.den_);
  const std::optional<Int> d = Mul(a.den_, b.den_);
  if (!x || !y || !d) return std::nullopt;
  const std::optional<Int> n = AddInt(*x, *y);
  if (!n) return std::nullopt;
  return Make(*n, *d);
}

std::optional<Rational> Rational::Subtract(const Rational& a, const Rational& b) {
  // b.num_ is never INT128 min (Make rejects it), so negation is safe.
  return Add(a, Rational(-b.num_, b.den_));
}

std::optional<Rational> Rational::Multiply(const Rational& a, const Rational& b) {
  if (a.den_ == 1 && b.den_ == 1) {
    const std::optional<Int> p = Mul(a.num_, b.num_);
    if (!p || *p == kMin) return std::nullopt;
    return Rational(*p, 1);
  }
  const std::optional<Int> n = Mul(a.num_, b.num_);
  const std::optional<Int> d = Mul(a.den_, b.den_);
  if (!n || !d) return std::nullopt;
  return Make(*n, *d);
}

std::optional<Rational> Rational::Divide(const Rational& a, const Rational& b) {
  if (b.num_ == 0) return std::nullopt;
  const std::optional<Int> n = Mul(a.num_, b.den_);
  const std::optional<Int> d = Mul(a.den_, b.num_);
  if (!n || !d) return std::nullopt;
  return Make(*n, *d);
}

std::string Int128ToString(__int128 value) {
  UInt magnitude = Abs(value);
  std::string digits;
  do {
    digits.push_back(static_cast<char>('0' + static_cast<int>(magnitude % 10)));
    magnitude /= 10;
  } while (magnitude != 0);
  if (value < 0) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

std::string Rational::ToString() const {
  if (den_ == 1) return Int128ToString(num_);
  return Int128ToString(num_) + "/" + Int128ToString(den_);
}

}  // namespace rhythm::common::tasks

#include "common/tasks/countdown.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "common/tasks/countdown_steps.h"
#include "common/tasks/task_util.h"

namespace rhythm::common::tasks {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Parses a canonical non-negative decimal integer (no sign, no leading zero) of at most
// `max_digits` digits. nullopt otherwise.
std::optional<int64_t> ParseCanonical(absl::string_view text, size_t max_digits) {
  if (text.empty() || text.size() > max_digits) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;
  int64_t value = 0;
  for (char c : text) {
    if (!IsDigit(c)) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Shunting-yard evaluation.

int Precedence(char op) { return (op == '*' || op == '/') ? 2 : (op == '+' || op == '-') ? 1 : 0; }

struct Evaluator {
  std::vector<char> ops;                        // '(' or an operator
  std::vector<std::optional<Rational>> values;  // nullopt: poisoned by an earlier error
  std::string error;                            // first evaluation error

  // Pops two values and pushes `a op b`. The caller guarantees two values are present (the
  // expect-operand state machine ensures it).
  void Apply(char op) {
    const std::optional<Rational> b = values.back();
    values.pop_back();
    const std::optional<Rational> a = values.back();
    values.pop_back();
    if (!a.has_value() || !b.has_value()) {
      values.push_back(std::nullopt);
      return;
    }
    std::optional<Rational> r;
    switch (op) {
      case '+':
        r = Rational::Add(*a, *b);
        break;
      case '-':
        r = Rational::Subtract(*a, *b);
        break;
      case '*':
        r = Rational::Multiply(*a, *b);
        break;
      default:
        r = Rational::Divide(*a, *b);
        break;
    }
    if (!r.has_value() && error.empty()) {
      error = (op == '/' && b->num() == 0) ? "division by zero" : "overflow";
    }
    values.push_back(r);
  }
};

absl::Status SyntaxError(absl::string_view what, size_t position) {
  return absl::InvalidArgumentError(absl::StrCat(what, " at position ", position));
}

// ---------------------------------------------------------------------------------------------
// Solver: dynamic programming over subsets of the numbers. For each subset and each value it
// reaches, the shortest expression of each "class" (atom, additive at the top, multiplicative
// at the top) is kept, because which one is shortest inside a larger expression depends on the
// parentheses the class needs there; a node that another class beats in every context is
// dropped.

enum Cls : uint8_t { kAtom = 0, kAdditive = 1, kMultiplicative = 2 };

struct Node {
  Rational value;
  double approx = 0;  // value as a double, for the final subset's prefilter
  int32_t len = 0;
  Cls cls = kAtom;
  char op = 0;       // 0 for an atom
  bool live = true;  // false once a node that is never worse replaced it
  uint32_t left_mask = 0, right_mask = 0;
  int32_t left = 0, right = 0;  // node indices in those masks; for an atom, left = number index
};

struct MaskTable {
  std::vector<Node> nodes;
  absl::flat_hash_map<Rational, std::array<int32_t, 3>> best;  // -1: none of that class
};

// Parentheses a child of class `cls` needs as the left/right operand of `op`. Exact rationals
// make + and * associative, so a+(b-c) is written a+b-c and a*(b/c) is written a*b/c. This is
// the textbook rule (parenthesise a lower-precedence child, and an equal-precedence right child
// of - and /), so the written length of a tree is its shortest spelling.
int ParenCost(char op, bool right, Cls cls) {
  switch (op) {
    case '+':
      return 0;
    case '-':
      return right && cls == kAdditive ? 2 : 0;
    case '*':
      return cls == kAdditive ? 2 : 0;
    default:
      return (cls == kAdditive || (right && cls == kMultiplicative)) ? 2 : 0;
  }
}

// Whether a node (len_a, a) is at most as long as (len_b, b) in every context, including the
// top level (no parentheses).
bool Dominates(int32_t len_a, Cls a, int32_t len_b, Cls b) {
  if (len_a > len_b) return false;
  for (char op : {'+', '-', '*', '/'}) {
    for (bool right : {false, true}) {
      if (len_a + ParenCost(op, right, a) > len_b + ParenCost(op, right, b)) return false;
    }
  }
  return true;
}

void Insert(MaskTable& table, const Node& node) {
  auto [it, inserted] = table.best.try_emplace(node.value, std::array<int32_t, 3>{-1, -1, -1});
  std::array<int32_t, 3>& slots = it->second;
  for (int c = 0; c < 3; ++c) {
    if (slots[c] < 0) continue;
    const Node& old = table.nodes[slots[c]];
    if (Dominates(old.len, old.cls, node.len, node.cls)) return;  // ties keep the first found
  }
  for (int c = 0; c < 3; ++c) {
    if (slots[c] < 0) continue;
    Node& old = table.nodes[slots[c]];
    if (Dominates(node.len, node.cls, old.len, old.cls)) {
      old.live = false;
      slots[c] = -1;
    }
  }
  slots[node.cls] = static_cast<int32_t>(table.nodes.size());
  table.nodes.push_back(node);
}

void Render(const std::vector<MaskTable>& tables, const std::vector<int64_t>& numbers,
            uint32_t mask, int32_t index, std::string& out) {
  const Node& node = tables[mask].nodes[index];
  if (node.op == 0) {
    absl::StrAppend(&out, numbers[node.left]);
    return;
  }
  const Node& left = tables[node.left_mask].nodes[node.left];
  const Node& right = tables[node.right_mask].nodes[node.right];
  const bool left_parens = ParenCost(node.op, false, left.cls) > 0;
  const bool right_parens = ParenCost(node.op, true, right.cls) > 0;
  if (left_parens) out.push_back('(');
  Render(tables, numbers, node.left_mask, node.left, out);
  if (left_parens) out.push_back(')');
  out.push_back(node.op);
  if (right_parens) out.push_back('(');
  Render(tables, numbers, node.right_mask, node.right, out);
  if (right_parens) out.push_back(')');
}

double Approx(const Rational& r) {
  return static_cast<double>(r.num()) / static_cast<double>(r.den());
}

// For the full set only integers in [lo, hi] matter (nothing is built on top of it). `approx`
// (computed in doubles from operands of magnitude up to `scale`) rules out a result cheaply
// when it is clearly not such an integer; the tolerance is far above double rounding error, so
// an exact hit is never ruled out.
bool MaybeIntegerIn(double approx, double scale, int64_t lo, int64_t hi) {
  const double tol = 1e-6 + scale * 1e-12;
  if (approx < static_cast<double>(lo) - tol || approx > static_cast<double>(hi) + tol) {
    return false;
  }
  return std::fabs(approx - std::nearbyint(approx)) <= tol;
}

// Adds every combination of a node of `a` with a node of `b` to `out`. With `final_range`,
// only integer results in [lo, hi] are kept.
void Combine(MaskTable& out, uint32_t mask_a, const MaskTable& a, uint32_t mask_b,
             const MaskTable& b, bool final_range, int64_t lo, int64_t hi) {
  for (int32_t i = 0; i < static_cast<int32_t>(a.nodes.size()); ++i) {
    const Node& x = a.nodes[i];
    if (!x.live) continue;
    for (int32_t j = 0; j < static_cast<int32_t>(b.nodes.size()); ++j) {
      const Node& y = b.nodes[j];
      if (!y.live) continue;
      // + and * are commutative and their written length does not depend on the order, so
      // one order each; - and / both orders.
      const auto emit = [&](char op, bool x_left) {
        const Node& l = x_left ? x : y;
        const Node& r = x_left ? y : x;
        if (final_range) {
          double approx;
          switch (op) {
            case '+':
              approx = l.approx + r.approx;
              break;
            case '-':
              approx = l.approx - r.approx;
              break;
            case '*':
              approx = l.approx * r.approx;
              break;
            default:
              if (r.value.num() == 0) return;
              approx = l.approx / r.approx;
              break;
          }
          const double scale = std::fabs(l.approx) + std::fabs(r.approx) + std::fabs(approx);
          if (!MaybeIntegerIn(approx, scale, lo, hi)) return;
        }
        std::optional<Rational> value;
        switch (op) {
          case '+':
            value = Rational::Add(l.value, r.value);
            break;
          case '-':
            value = Rational::Subtract(l.value, r.value);
            break;
          case '*':
            value = Rational::Multiply(l.value, r.value);
            break;
          default:
            value = Rational::Divide(l.value, r.value);
            break;
        }
        if (!value.has_value()) return;  // division by zero or overflow
        if (final_range && (!value->is_integer() || value->num() < lo || value->num() > hi)) {
          return;
        }
        Node node;
        node.value = *value;
        node.approx = Approx(*value);
        node.op = op;
        node.cls = (op == '+' || op == '-') ? kAdditive : kMultiplicative;
        node.len = l.len + ParenCost(op, false, l.cls) + 1 + r.len + ParenCost(op, true, r.cls);
        node.left_mask = x_left ? mask_a : mask_b;
        node.left = x_left ? i : j;
        node.right_mask = x_left ? mask_b : mask_a;
        node.right = x_left ? j : i;
        Insert(out, node);
      };
      emit('+', true);
      emit('*', true);
      emit('-', true);
      emit('-', false);
      emit('/', true);
      emit('/', false);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The task.

class CountdownTask final : public internal::GeneratedTask {
 public:
  CountdownTask(const v1::CountdownConfig& config, uint64_t seed, uint64_t fingerprint)
      : GeneratedTask(seed, fingerprint), config_(config) {}

  absl::string_view name() const override { return "countdown"; }

  v1::VerifierResult Verify(absl::string_view answer, absl::string_view completion) const override {
    return steps() ? VerifyCountdownSteps(answer, completion) : VerifyCountdown(answer, completion);
  }

  absl::Status Initialize(uint64_t heldout_size) { return Init(heldout_size, 0); }

 protected:
  std::optional<internal::Generated> Generate(internal::Rng& rng) const override {
    if (steps()) {
      std::optional<CountdownStepsProblem> problem = DrawCountdownStepsProblem(
          config_.num_numbers(), config_.max_number(), config_.max_target(), rng);
      if (!problem.has_value()) return std::nullopt;
      const int dead_ends = static_cast<int>(rng.Between(0, config_.max_dead_ends()));
      return MakeGenerated(problem->spec, WriteCountdownStepsTrace(*problem, dead_ends, rng));
    }
    CountdownSpec spec;
    for (int k = 0; k < config_.num_numbers(); ++k) {
      spec.numbers.push_back(rng.Between(1, config_.max_number()));
    }
    std::vector<CountdownSolution> solutions =
        SolveCountdown(spec.numbers, 1, config_.max_target());
    solutions.erase(std::remove_if(solutions.begin(), solutions.end(),
                                   [&](const CountdownSolution& s) {
                                     return std::find(spec.numbers.begin(), spec.numbers.end(),
                                                      s.target) != spec.numbers.end();
                                   }),
                    solutions.end());
    if (solutions.empty()) return std::nullopt;
    const CountdownSolution& pick = solutions[rng.Below(solutions.size())];
    spec.target = pick.target;
    return MakeGenerated(spec, pick.expression);
  }

 private:
  bool steps() const { return config_.format() == v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS; }

  // Prompt, answer and split key are the same in both formats.
  static internal::Generated MakeGenerated(const CountdownSpec& spec, std::string reference) {
    std::vector<int64_t> sorted = spec.numbers;
    std::sort(sorted.begin(), sorted.end());
    internal::Generated g;
    g.prompt = absl::StrCat(absl::StrJoin(spec.numbers, " "), " -> ", spec.target, "\n");
    g.answer = FormatCountdownAnswer(spec);
    g.reference_solution = std::move(reference);
    g.key = absl::StrCat(absl::StrJoin(sorted, ","), "|", spec.target);
    return g;
  }

  v1::CountdownConfig config_;
};

}  // namespace

absl::StatusOr<CountdownSpec> ParseCountdownAnswer(absl::string_view answer) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed countdown answer \"", internal::SanitizeUtf8(answer, 60), "\": ", why));
  };
  const size_t bar = answer.find('|');
  if (bar == absl::string_view::npos) return bad("no '|'");
  CountdownSpec spec;
  absl::string_view list = answer.substr(0, bar);
  while (true) {
    const size_t comma = list.find(',');
    const absl::string_view item = list.substr(0, comma);
    const std::optional<int64_t> n = ParseCanonical(item, 10);
    if (!n.has_value() || *n > kMaxCountdownNumber) return bad("bad number");
    if (static_cast<int>(spec.numbers.size()) == kMaxCountdownNumbers) {
      return bad("too many numbers");
    }
    spec.numbers.push_back(*n);
    if (comma == absl::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  absl::string_view target = answer.substr(bar + 1);
  const bool negative = !target.empty() && target[0] == '-';
  if (negative) target.remove_prefix(1);
  const std::optional<int64_t> t = ParseCanonical(target, 19);
  if (!t.has_value() || *t > 1000000000000000000LL || (negative && *t == 0)) {
    return bad("bad target");
  }
  spec.target = negative ? -*t : *t;
  return spec;
}

std::string FormatCountdownAnswer(const CountdownSpec& spec) {
  return absl::StrCat(absl::StrJoin(spec.numbers, ","), "|", spec.target);
}

absl::StatusOr<CountdownExpression> ParseCountdownExpression(absl::string_view expression) {
  CountdownExpression result;
  Evaluator ev;
  bool expect_operand = true;
  size_t i = 0;
  while (i < expression.size()) {
    const char c = expression[i];
    if (c == ' ' || c == '\t' || c == '\r') {
      ++i;
      continue;
    }
    if (expect_operand) {
      if (IsDigit(c)) {
        size_t end = i;
        while (end < expression.size() && IsDigit(expression[end])) ++end;
        const absl::string_view digits = expression.substr(i, end - i);
        if (digits.size() > 1 && digits[0] == '0') return SyntaxError("leading zero", i);
        if (digits.size() > 18) return SyntaxError("number too long", i);
        const int64_t value = *ParseCanonical(digits, 18);
        result.numbers.push_back(value);
        ev.values.push_back(Rational(value));
        expect_operand = false;
        i = end;
      } else if (c == '(') {
        ev.ops.push_back('(');
        ++i;
      } else if (c == '-' || c == '+') {
        return SyntaxError("unary sign (not allowed)", i);
      } else {
        return SyntaxError(absl::StrCat("expected a number or '(', got ",
                                        internal::SanitizeUtf8(expression.substr(i, 1))),
                           i);
      }
    } else {
      if (Precedence(c) > 0) {
        while (!ev.ops.empty() && Precedence(ev.ops.back()) >= Precedence(c)) {
          ev.Apply(ev.ops.back());
          ev.ops.pop_back();
        }
        ev.ops.push_back(c);
        expect_operand = true;
      } else if (c == ')') {
        while (!ev.ops.empty() && ev.ops.back() != '(') {
          ev.Apply(ev.ops.back());
          ev.ops.pop_back();
        }
        if (ev.ops.empty()) return SyntaxError("unmatched ')'", i);
        ev.ops.pop_back();
      } else {
        return SyntaxError(absl::StrCat("expected an operator or ')', got ",
                                        internal::SanitizeUtf8(expression.substr(i, 1))),
                           i);
      }
      ++i;
    }
  }
  if (expect_operand) {
    return SyntaxError(
        result.numbers.empty() && ev.ops.empty() ? "empty expression" : "expression ends early",
        expression.size());
  }
  while (!ev.ops.empty()) {
    if (ev.ops.back() == '(') return SyntaxError("unclosed '('", expression.size());
    ev.Apply(ev.ops.back());
    ev.ops.pop_back();
  }
  result.value = ev.values.back();
  if (!result.value.has_value()) result.error = ev.error;
  return result;
}

v1::VerifierResult VerifyCountdown(absl::string_view answer, absl::string_view completion) {
  absl::StatusOr<CountdownSpec> spec = ParseCountdownAnswer(answer);
  if (!spec.ok()) return internal::MakeResult(0.0, false, false, "", spec.status().message());
  const absl::string_view text = internal::TrimAsciiWhitespace(internal::FirstLine(completion));
  absl::StatusOr<CountdownExpression> expr = ParseCountdownExpression(text);
  if (!expr.ok()) return internal::MakeResult(0.0, false, false, text, expr.status().message());

  // Multiset check: each use consumes one offered copy.
  std::map<int64_t, int> available;
  for (int64_t n : spec->numbers) ++available[n];
  for (int64_t n : expr->numbers) {
    auto it = available.find(n);
    if (it == available.end()) {
      return internal::MakeResult(0.0, false, true, text,
                                  absl::StrCat("uses ", n, ", which is not offered"));
    }
    if (it->second == 0) {
      const int64_t offered = std::count(spec->numbers.begin(), spec->numbers.end(), n);
      return internal::MakeResult(
          0.0, false, true, text,
          absl::StrCat("uses ", n, " more than the ", offered, " time(s) it is offered"));
    }
    --it->second;
  }
  if (!expr->value.has_value()) return internal::MakeResult(0.0, false, true, text, expr->error);
  if (*expr->value == Rational(spec->target)) {
    return internal::MakeResult(1.0, true, true, text, "");
  }
  return internal::MakeResult(
      kCountdownFormatReward, false, true, text,
      absl::StrCat("evaluates to ", expr->value->ToString(), ", target ", spec->target));
}

std::vector<CountdownSolution> SolveCountdown(const std::vector<int64_t>& numbers, int64_t lo,
                                              int64_t hi) {
  const int n = static_cast<int>(numbers.size());
  if (n < 1 || n > 6) return {};
  for (int64_t x : numbers) {
    if (x < 0 || x > 1000000) return {};
  }
  const uint32_t full = (1u << n) - 1;
  std::vector<MaskTable> tables(full + 1);
  for (int k = 0; k < n; ++k) {
    Node atom;
    atom.value = Rational(numbers[k]);
    atom.approx = static_cast<double>(numbers[k]);
    atom.len = static_cast<int32_t>(absl::StrCat(numbers[k]).size());
    atom.left = k;
    Insert(tables[1u << k], atom);
  }
  // Masks in increasing order: every proper submask is smaller, hence already complete.
  for (uint32_t mask = 1; mask <= full; ++mask) {
    if ((mask & (mask - 1)) == 0) continue;  // single numbers done above
    for (uint32_t a = (mask - 1) & mask; a > 0; a = (a - 1) & mask) {
      const uint32_t b = mask ^ a;
      if (a > b) continue;  // each unordered split once
      Combine(tables[mask], a, tables[a], b, tables[b], mask == full, lo, hi);
    }
  }
  // Shortest per integer target over all subsets; ties keep the earliest mask.
  std::map<int64_t, std::pair<uint32_t, int32_t>> best;
  for (uint32_t mask = 1; mask <= full; ++mask) {
    const std::vector<Node>& nodes = tables[mask].nodes;
    for (int32_t i = 0; i < static_cast<int32_t>(nodes.size()); ++i) {
      const Node& node = nodes[i];
      if (!node.live || !node.value.is_integer()) continue;
      if (node.value.num() < lo || node.value.num() > hi) continue;
      const int64_t v = static_cast<int64_t>(node.value.num());
      auto [it, inserted] = best.try_emplace(v, mask, i);
      if (!inserted && tables[it->second.first].nodes[it->second.second].len > node.len) {
        it->second = {mask, i};
      }
    }
  }
  std::vector<CountdownSolution> out;
  out.reserve(best.size());
  for (const auto& [target, where] : best) {
    CountdownSolution s;
    s.target = target;
    Render(tables, numbers, where.first, where.second, s.expression);
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Task>> CreateCountdownTask(const v1::CountdownConfig& config,
                                                          uint64_t heldout_size, uint64_t seed) {
  if (config.num_numbers() < 2 || config.num_numbers() > 6) {
    return absl::InvalidArgumentError(
        absl::StrCat("countdown.num_numbers must be in [2, 6], got ", config.num_numbers()));
  }
  if (config.max_number() < 2 || config.max_number() > 1000) {
    return absl::InvalidArgumentError(
        absl::StrCat("countdown.max_number must be in [2, 1000], got ", config.max_number()));
  }
  if (config.max_target() < 1 || config.max_target() > 1000000) {
    return absl::InvalidArgumentError(
        absl::StrCat("countdown.max_target must be in [1, 1000000], got ", config.max_target()));
  }
  if (config.format() != v1::CountdownConfig::COUNTDOWN_FORMAT_EXPRESSION &&
      config.format() != v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS) {
    return absl::InvalidArgumentError(absl::StrCat(
        "countdown.format must be expression or steps, got ",
        v1::CountdownConfig::CountdownFormat_Name(config.format()), " (", config.format(), ")"));
  }
  if (config.max_dead_ends() < 0 || config.max_dead_ends() > 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("countdown.max_dead_ends must be in [0, 8], got ", config.max_dead_ends()));
  }
  uint64_t fingerprint = internal::HashBytes("countdown");
  fingerprint = internal::HashCombine(fingerprint, config.num_numbers());
  fingerprint = internal::HashCombine(fingerprint, config.max_number());
  fingerprint = internal::HashCombine(fingerprint, config.max_target());
  // The expression format's ids predate the format field and stay as they were.
  if (config.format() == v1::CountdownConfig::COUNTDOWN_FORMAT_STEPS) {
    fingerprint = internal::HashCombine(fingerprint, internal::HashBytes("steps"));
    fingerprint = internal::HashCombine(fingerprint, config.max_dead_ends());
  }
  fingerprint = internal::HashCombine(fingerprint, seed);
  auto task = std::make_unique<CountdownTask>(config, seed, fingerprint);
  RHYTHM_RETURN_IF_ERROR(task->Initialize(heldout_size));
  return task;
}

}  // namespace rhythm::common::tasks

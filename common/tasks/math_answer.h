// The maths verifier of the jsonl task: find the final answer in a completion and compare it
// with the reference answer by value.
//
// Extraction (ExtractFinalAnswer):
//   1. The contents of the last \boxed{...} whose braces balance ("\{" and "\}" are literal
//      braces, not grouping). "\boxed 5" (without braces) is not recognised.
//   2. Otherwise the text after the last occurrence of the answer marker (case-sensitive,
//      default "Answer:") up to the end of that line. An empty marker disables this step.
//   3. Otherwise nothing: the completion is unparsed.
//
// Comparison (MathAnswersEqual), applied to both sides alike after NormalizeMathAnswer:
//   - whitespace is removed; surrounding $...$, $$...$$, \(...\), \[...\] and a whole-answer
//     \boxed{...} are unwrapped; \left \right \! \, \; \: "\ " \$ are dropped; \dfrac and \tfrac
//     become \frac; "{,}" becomes ","; ^\circ, ^{\circ}, \% and % are dropped; U+2212 becomes
//     '-'; one trailing '.' is dropped; a leading "x=" (one letter) is dropped;
//   - \text{...}, \textbf{...}, \textrm{...}, \mathrm{...}, \mbox{...}: if removing these leaves a
//     number, they were units ("5\text{ cm}" is 5); otherwise only the command is removed and
//     the contents kept ("\text{(A)}" is "(A)").
//   - If both sides then read as numbers, they are compared exactly by value. Numbers are: an
//     optional sign; an integer ("42", with thousands separators "1,000,000" only in groups of
//     three), a decimal ("3.25", ".5"), a fraction of such numbers "a/b", or \frac{a}{b} (also
//     \frac12 for single digits; a sign may precede a or the \frac). Zero denominators and
//     numbers over 200 characters are not numbers. So "0.5" == "1/2" == "\frac{1}{2}" ==
//     "$\dfrac{1}{2}$", "-0" == "0", "1,000" == "1000"; but "0.33" != "1/3".
//   - Otherwise the normalised strings must be equal.
//
// Rewards (VerifyMath): 1.0 correct, 0.0 otherwise. parsed == step 1 or 2 found a non-empty
// answer; extracted_answer == that answer, trimmed.
//
// Cost: linear in the completion's length (the brace matching is one pass with a stack).
// Thread-safety: stateless.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::tasks {

// The final answer in `completion` (trimmed, possibly empty), or nullopt if neither a balanced
// \boxed{} nor the marker occurs.
std::optional<std::string> ExtractFinalAnswer(absl::string_view completion,
                                              absl::string_view marker);

// The normalised form described above (without the \text units rule's number test, which
// MathAnswersEqual applies).
std::string NormalizeMathAnswer(absl::string_view answer);

// An exact rational with decimal digit strings, for answers that are numbers.
struct MathNumber {
  bool negative = false;  // false for zero
  std::string num;        // decimal digits, no leading zeros ("0" for zero)
  std::string den;        // decimal digits, no leading zeros, never "0"
};

// The value of a normalised answer, if it is one of the number forms above.
std::optional<MathNumber> ParseMathNumber(absl::string_view normalized);

// Whether `got` and `expected` are the same answer under the rules above.
bool MathAnswersEqual(absl::string_view expected, absl::string_view got);

// The maths verifier: ExtractFinalAnswer, then MathAnswersEqual against `answer`.
v1::VerifierResult VerifyMath(absl::string_view answer, absl::string_view completion,
                              absl::string_view marker);

}  // namespace rhythm::common::tasks

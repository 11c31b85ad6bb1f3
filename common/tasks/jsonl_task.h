// The jsonl task: a user's dataset of prompts and reference answers, scored with the maths
// verifier (math_answer.h).
//
// File format: one JSON object per line, {"prompt": "...", "answer": "..."}; "answer" may also
// be a JSON number (its JSON text is the answer); other keys are ignored. Lines with only
// whitespace are skipped silently. A line is reported in warnings() as "<path>:<line>: <problem>"
// and skipped when it is not valid JSON (including invalid UTF-8), not an object, lacks a
// non-empty string "prompt", lacks a non-empty single-line "answer", or when its reference
// solution would not verify as correct (e.g. an answer containing an unbalanced brace with an
// empty marker). At most 100 such messages are kept, then one line counts the rest.
//
// Splits: the last min(heldout_size, valid lines - 1) valid lines are held out (so at least one
// line trains). The remaining lines train, except those whose prompt equals a held-out prompt
// (reported and dropped, so a held-out prompt is never trained on). TrainProblem(i) is training
// line i % n, in file order; the seed is not used (shuffling is the caller's business). Ids hash
// the file's contents and the line number (a training index and the index n later share one).
//
// Problem: prompt and answer verbatim from the file; reference_solution is
// "<answer_marker> <answer>" ("Answer: 42"), or "\boxed{<answer>}" if the marker is empty.
//
// Thread-safety: immutable after creation (see task.h).
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/tasks/task.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::tasks {

// Reads config.dataset_path(). NOT_FOUND if the file does not exist, FAILED_PRECONDITION if it
// cannot be read, INVALID_ARGUMENT (naming the path, the line count and the first problem) if
// no valid line remains or every training line duplicates a held-out prompt.
absl::StatusOr<std::unique_ptr<Task>> CreateJsonlTask(const v1::TaskConfig& config);

}  // namespace rhythm::common::tasks

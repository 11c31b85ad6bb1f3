// Loading rhythm's typed configuration (proto/rhythm/v1/config.proto) from YAML, with
// command-line overrides.
//
// YAML keys are proto field names; enums are written as their lower-case short names
// (`strategy: coupled` for CREDIT_STRATEGY_COUPLED; the full upper-case name is accepted too);
// lists replace the default list; `key: ~` resets a key to its default. Overrides are
// `dotted.key=value`, the value parsed as YAML (`--set generation.stop_strings=[".", "\n"]`).
//
// Every error is InvalidArgument with a one-line message that names the key and the value and
// where it came from, e.g.
//   config: unknown key 'trainer.lrr' (bad.yaml:3; did you mean 'trainer.lr'?)
//   config: trainer.lr: expected a number, got 'fast' (bad.yaml:3)
//   config: trainer.lr = -1 is out of range (0, 1] (--set)
// The functions work on any proto2 message, so tests can use small schemas too. Stateless and
// thread-safe.
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rhythm/v1/config.pb.h"

namespace google::protobuf {
class EnumDescriptor;
class Message;
}  // namespace google::protobuf

namespace rhythm::common {

// Defaults, then the YAML file at `path` (skipped when empty), then each override in order;
// finally every field (set or defaulted) is checked against its (bounds).
absl::StatusOr<v1::RhythmConfig> LoadConfig(const std::string& path,
                                            const std::vector<std::string>& overrides);

// Merges YAML text into `msg`. `source` names the text in error messages (a file name).
absl::Status MergeYaml(absl::string_view yaml, absl::string_view source,
                       google::protobuf::Message& msg);

// Applies one "dotted.key=value" override to `msg`.
absl::Status ApplyOverride(absl::string_view assignment, google::protobuf::Message& msg);

// Checks every numeric field's effective value (defaults included) against its (bounds).
absl::Status ValidateBounds(const google::protobuf::Message& msg);

// The complete effective configuration as YAML, defaults included: what is logged at start and
// written to a run directory. Loading it back gives an equal configuration.
std::string ConfigToYaml(const google::protobuf::Message& msg);

// The name users write for an enum value: CREDIT_STRATEGY_LOCAL_CHUNK -> "local_chunk".
// Returns the number as text when the type has no such value.
std::string EnumShortName(const google::protobuf::EnumDescriptor* type, int number);

}  // namespace rhythm::common

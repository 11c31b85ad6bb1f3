// The learner's journal records on the rollout log (learner/rollout_log.h, which stores opaque
// bytes): encoding and decoding only; what a record means is LearnerState::Apply's business.
//
// A record is one type byte and a serialized proto:
//   'J' + rhythm.v1.JournalRecord (proto/rhythm/v1/journal.proto), written by this version;
//   'R' + Rollout, 'G' + OutstandingLease (a grant), 'E' + OutstandingLease (an expiry of
//   lease.lease_id): logs written before the journal existed, still read.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "rhythm/v1/journal.pb.h"

namespace rhythm::learner {

std::string EncodeRecord(const v1::JournalRecord& record);

// DATA_LOSS "journal record <seq> ..." for an empty, unknown or unparsable record.
absl::StatusOr<v1::JournalRecord> DecodeRecord(uint64_t seq, absl::string_view bytes);

}  // namespace rhythm::learner

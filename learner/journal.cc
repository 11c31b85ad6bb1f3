#include "learner/journal.h"

#include "absl/strings/str_cat.h"

namespace rhythm::learner {
namespace {

template <typename M>
bool Parse(absl::string_view payload, M* m) {
  return m->ParseFromArray(payload.data(), static_cast<int>(payload.size()));
}

}  // namespace

std::string EncodeRecord(const v1::JournalRecord& record) {
  std::string out(1, 'J');
  record.AppendToString(&out);
  return out;
}

absl::StatusOr<v1::JournalRecord> DecodeRecord(uint64_t seq, absl::string_view bytes) {
  if (bytes.empty()) return absl::DataLossError(absl::StrCat("journal record ", seq, " is empty"));
  const absl::string_view payload = bytes.substr(1);
  v1::JournalRecord r;
  bool ok = false;
  switch (bytes[0]) {
    case 'J':
      ok = Parse(payload, &r) && r.kind_case() != v1::JournalRecord::KIND_NOT_SET;
      break;
    case 'R':
      ok = Parse(payload, r.mutable_rollout());
      break;
    case 'G':
      ok = Parse(payload, r.mutable_grant());
      break;
    case 'E': {
      v1::OutstandingLease o;
      ok = Parse(payload, &o);
      r.mutable_expiry()->set_lease_id(o.lease().lease_id());
      break;
    }
    default:
      return absl::DataLossError(absl::StrCat("journal record ", seq, " has unknown type byte ",
                                              static_cast<int>(static_cast<uint8_t>(bytes[0]))));
  }
  if (!ok) return absl::DataLossError(absl::StrCat("journal record ", seq, " is unreadable"));
  return r;
}

}  // namespace rhythm::learner

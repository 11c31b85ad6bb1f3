#include "tests/fault_audit.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/rollout/rollout_jsonl.h"
#include "learner/journal.h"
#include "learner/rollout_log.h"

namespace rhythm::testing {
namespace {

// What one incarnation's log says about it.
struct LogFacts {
  std::string resumed;  // checkpoint directory name it restored; "" = the initial weights
  int64_t resumed_version = -1;
  int64_t serving_version = -1;
  std::vector<int64_t> step_versions;  // "step S version N", in order
};

int64_t NumberAfter(const std::string& line, const std::string& marker) {
  const size_t at = line.find(marker);
  if (at == std::string::npos) return -1;
  return std::strtoll(line.c_str() + at + marker.size(), nullptr, 10);
}

LogFacts ReadLog(const std::string& path) {
  LogFacts f;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (size_t at = line.find("learner: resumed "); at != std::string::npos) {
      const size_t start = at + std::string("learner: resumed ").size();
      const size_t end = line.find(" (version ", start);
      f.resumed = std::filesystem::path(line.substr(start, end - start)).filename().string();
      f.resumed_version = NumberAfter(line, " (version ");
    } else if (line.find("learner: serving on port ") != std::string::npos) {
      f.serving_version = NumberAfter(line, ", version ");
    } else if (line.find("learner: step ") != std::string::npos) {
      f.step_versions.push_back(NumberAfter(line, " version "));
    }
  }
  return f;
}

// A dumped step: the rollouts of its batch as "group/actor_id/rollout_id" (the dump has no
// run id; a lease belongs to one actor run, so the group makes the key unique).
struct DumpedStep {
  std::vector<std::string> rollouts;
  bool torn = false;  // a line did not parse (the process died writing it)
};

std::map<int64_t, DumpedStep> ReadDumps(const std::string& dir) {
  std::map<int64_t, DumpedStep> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) != 0 || e.path().extension() != ".jsonl") continue;
    DumpedStep& step = out[std::strtoll(name.c_str() + 5, nullptr, 10)];
    std::ifstream in(e.path());
    int64_t number = 0;
    for (std::string line; std::getline(in, line);) {
      absl::StatusOr<common::rollout::RolloutLine> r =
          common::rollout::ParseRolloutLine(line, ++number);
      if (!r.ok() || r->rollout_id == 0 || r->actor_id.empty()) {
        step.torn = true;
        continue;
      }
      step.rollouts.push_back(absl::StrCat(r->group, "/", r->actor_id, "/", r->rollout_id));
    }
  }
  return out;
}

std::string Triple(const v1::Rollout& r) {
  return absl::StrCat(r.group_id(), "/", r.actor_id(), "/", r.rollout_id());
}

std::string Key(const v1::Rollout& r) {  // as learner_server.cc RolloutKey
  return absl::StrCat(r.actor_id(), "/", r.run_id(), "/", r.rollout_id());
}

// The journal replayed by the README's rules (not by LearnerState).
struct Oracle {
  enum class Fate { kComplete, kPartial, kDropped };
  struct Lease {
    std::string actor;
    uint64_t prompt = 0;
    std::map<uint32_t, std::string> samples;  // sample_index -> key
  };
  std::map<uint64_t, Lease> outstanding;
  // Groups whose lease ended with acked samples, waiting for a lease that continues them.
  std::map<uint64_t, Lease> waiting;
  std::map<std::string, std::string> sessions;
  std::map<std::string, Fate> fate;           // key -> fate
  std::map<std::string, std::string> triple;  // key -> triple
  std::map<std::string, uint64_t> group_of;   // key -> lease id
  std::map<uint64_t, uint64_t> last_grant;    // prompt -> its latest lease id
  std::set<uint64_t> completed;               // leases whose group completed
  std::vector<int64_t> publications;

  // A lease ends (expired, released, its actor restarted): a group with acked samples waits
  // for the next lease of its prompt, which continues it.
  void End(uint64_t lease) {
    auto it = outstanding.find(lease);
    if (it == outstanding.end()) return;
    if (!it->second.samples.empty()) waiting[lease] = std::move(it->second);
    outstanding.erase(it);
  }
};

}  // namespace

absl::StatusOr<std::vector<v1::JournalRecord>> ReadJournal(const std::string& run_dir) {
  learner::RolloutLog::Options o;
  o.dir = run_dir + "/rollout_log";
  absl::StatusOr<std::unique_ptr<learner::RolloutLog>> log = learner::RolloutLog::Open(o);
  if (!log.ok()) return log.status();
  if ((*log)->first_seq() != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        o.dir, " was trimmed (first record ", (*log)->first_seq(), "): the audit needs it all"));
  }
  std::vector<v1::JournalRecord> out;
  absl::Status s = (*log)->Replay(0, [&](uint64_t seq, absl::string_view bytes) {
    absl::StatusOr<v1::JournalRecord> r = learner::DecodeRecord(seq, bytes);
    if (!r.ok()) return r.status();
    out.push_back(*std::move(r));
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::LearnerCheckpoint> ReadLatestCheckpoint(const std::string& run_dir) {
  std::ifstream latest(run_dir + "/checkpoints/LATEST");
  std::string name;
  if (!std::getline(latest, name)) {
    return absl::NotFoundError(run_dir + "/checkpoints/LATEST: missing or empty");
  }
  const std::string path = run_dir + "/checkpoints/" + name + "/state.pb";
  std::ifstream state(path, std::ios::binary);
  std::stringstream bytes;
  bytes << state.rdbuf();
  v1::LearnerCheckpoint ck;
  if (!ck.ParseFromString(bytes.str())) return absl::DataLossError(path + ": unreadable");
  return ck;
}

std::string FaultAuditReport::Summary() const {
  return absl::StrCat("acked ", acked, " trained ", trained, " queued ", queued, " lost ", lost,
                      " duplicated ", duplicated, " | grants ", grants, " continuations ", continuations, " expiries ", expiries, " actor restarts ",
                      restarts, " publications ", publications, " | steps: lineage ", lineage_steps,
                      " discarded ", discarded_steps, " | problems ", problems.size());
}

FaultAuditReport AuditRun(const std::string& run_dir, const std::vector<Incarnation>& incarnations,
                          int group_size) {
  FaultAuditReport rep;
  auto problem = [&](std::string s) {
    if (rep.problems.size() < 40) rep.problems.push_back(std::move(s));
  };
  absl::StatusOr<std::vector<v1::JournalRecord>> journal = ReadJournal(run_dir);
  absl::StatusOr<v1::LearnerCheckpoint> ck = ReadLatestCheckpoint(run_dir);
  if (!journal.ok() || !ck.ok() || incarnations.empty()) {
    problem(absl::StrCat("unreadable run: journal ", journal.status().ToString(), ", checkpoint ",
                         ck.status().ToString()));
    return rep;
  }

  // ---- (1) The journal, replayed by the rules. ------------------------------------------
  Oracle o;
  for (size_t i = 0; i < journal->size(); ++i) {
    const v1::JournalRecord& r = (*journal)[i];
    const uint64_t seq = i + 1;
    if (r.has_rollout()) {
      const v1::Rollout& x = r.rollout();
      const std::string key = Key(x);
      if (o.fate.count(key)) {
        problem(absl::StrCat("journal record ", seq, ": rollout ", key, " journaled twice"));
        continue;
      }
      ++rep.acked;
      o.triple[key] = Triple(x);
      o.group_of[key] = x.group_id();
      auto lease = o.outstanding.find(x.group_id());
      if (lease == o.outstanding.end() || lease->second.samples.count(x.sample_index())) {
        o.fate[key] = Oracle::Fate::kDropped;  // journaled although its lease had ended
        continue;
      }
      o.fate[key] = Oracle::Fate::kPartial;
      lease->second.samples[x.sample_index()] = key;
      if (static_cast<int>(lease->second.samples.size()) == group_size) {
        for (const auto& [index, k] : lease->second.samples) o.fate[k] = Oracle::Fate::kComplete;
        o.completed.insert(x.group_id());
        o.outstanding.erase(lease);
      }
    } else if (r.has_grant()) {
      ++rep.grants;
      const uint64_t id = r.grant().lease().lease_id();
      o.outstanding[id] = {r.grant().actor_id(), r.grant().prompt_index(), {}};
      if (const uint64_t from = r.grant().continues_group(); from != 0) {
        ++rep.continuations;
        auto w = o.waiting.find(from);
        if (w == o.waiting.end()) {
          problem(absl::StrCat("journal record ", seq, ": lease ", id, " continues group ", from,
                               ", which is not waiting"));
        } else {
          // The held samples now belong to the new lease's group, and train under its id.
          for (const auto& [index, key] : w->second.samples) {
            o.group_of[key] = id;
            std::string& t = o.triple[key];
            t = absl::StrCat(id, t.substr(t.find('/')));
          }
          o.outstanding[id].samples = std::move(w->second.samples);
          o.waiting.erase(w);
        }
      }
      o.last_grant[r.grant().prompt_index()] = id;
    } else if (r.has_expiry()) {
      rep.expiries += o.outstanding.count(r.expiry().lease_id()) ? 1 : 0;
      o.End(r.expiry().lease_id());
    } else if (r.has_session()) {
      const v1::ActorSession& s = r.session();
      auto it = o.sessions.find(s.actor_id());
      if (it != o.sessions.end() && it->second != s.run_id()) {
        ++rep.restarts;  // the actor restarted: its old run's leases are released
        std::vector<uint64_t> old;
        for (const auto& [id, l] : o.outstanding) {
          if (l.actor == s.actor_id()) old.push_back(id);
        }
        for (uint64_t id : old) o.End(id);
      }
      o.sessions[s.actor_id()] = s.run_id();
    } else if (r.has_publication()) {
      const int64_t v = r.publication().version();
      if (!o.publications.empty() && v <= o.publications.back()) {
        problem(absl::StrCat("journal record ", seq, ": version ", v, " published after ",
                             o.publications.back(), ": versions went back"));
      }
      o.publications.push_back(v);
    }
  }
  rep.publications = static_cast<int64_t>(o.publications.size());

  // ---- (2) The surviving lineage of dumped steps. ----------------------------------------
  // Incarnation k dumps step-N before the step that produces version N; its steps number
  // W_k+1, W_k+2, ... from the version W_k it started serving. The final checkpoint (the last
  // incarnation's SIGTERM) holds all of the last incarnation's steps on top of the weights it
  // restored. An incarnation that restored checkpoint X (its log: "resumed X (version V") holds
  // only the steps of X's writer up to version V: the writer's later steps were thrown away by
  // the crash, and the journal replayed their rollouts into the queue to be trained again. X's
  // writer is the incarnation just before the first one that restored X: LATEST named X from
  // its writing until the next incarnation started (an incarnation that wrote no checkpoint of
  // its own leaves X as LATEST for the one after it, so several may restore X; the first
  // restorer follows the writer, whether or not the writer lived to log "checkpoint X").
  // Incarnations between X's writer and its restorers contribute nothing. One that found no
  // checkpoint ("resumed" absent) started from the initial weights: the lineage's root.
  std::vector<LogFacts> facts;
  std::vector<std::map<int64_t, DumpedStep>> dumps;
  for (const Incarnation& inc : incarnations) {
    facts.push_back(ReadLog(inc.log));
    dumps.push_back(ReadDumps(inc.dump_dir));
    rep.steps_logged.push_back(static_cast<int64_t>(facts.back().step_versions.size()));
    rep.serving_version.push_back(facts.back().serving_version);
  }
  std::map<std::string, int> lineage_count;  // triple -> times trained in the lineage
  std::set<std::pair<int, int64_t>> in_lineage;
  int64_t upto = std::numeric_limits<int64_t>::max();
  for (int k = static_cast<int>(incarnations.size()) - 1; k >= 0;) {
    for (const auto& [n, step] : dumps[k]) {
      if (n > upto) continue;
      in_lineage.insert({k, n});
      if (step.torn) problem(absl::StrCat("incarnation ", k, " step-", n, " is torn"));
      for (const std::string& t : step.rollouts) ++lineage_count[t];
    }
    if (facts[k].resumed.empty()) break;
    int first = k;
    for (int i = 0; i < k; ++i) {
      if (facts[i].resumed == facts[k].resumed) {
        first = i;
        break;
      }
    }
    const int writer = first - 1;
    const int64_t v = facts[k].resumed_version;
    if (writer < 0) {
      problem(absl::StrCat("incarnation ", k, " restored ", facts[k].resumed,
                           " but no earlier incarnation can have written it"));
      break;
    }
    if (v > facts[writer].serving_version && !dumps[writer].count(v)) {
      problem(absl::StrCat("incarnation ", k, " restored version ", v, " from incarnation ", writer,
                           ", which never dumped step ", v));
    }
    upto = v;
    k = writer;
  }
  for (size_t k = 0; k < dumps.size(); ++k) {
    for (const auto& [n, step] : dumps[k]) {
      (in_lineage.count({static_cast<int>(k), n}) ? rep.lineage_steps : rep.discarded_steps)++;
    }
  }
  if (ck->steps() != rep.lineage_steps) {
    problem(absl::StrCat("the final checkpoint has taken ", ck->steps(),
                         " steps but the lineage of dumped steps has ", rep.lineage_steps));
  }
  const auto& last = dumps.back();
  const int64_t last_version = last.empty() ? facts.back().serving_version : last.rbegin()->first;
  if (ck->version() != last_version) {
    problem(absl::StrCat("the final checkpoint holds version ", ck->version(),
                         " but the last incarnation's last step produced ", last_version));
  }

  // ---- (3) Every acked rollout's fate against the lineage and the final checkpoint. -------
  const v1::DurableState& d = ck->durable();
  if (d.log_seq() != journal->size()) {
    problem(absl::StrCat("the final checkpoint covers journal record ", d.log_seq(), " of ",
                         journal->size()));
  }
  std::set<std::string> queued;
  for (const v1::Rollout& r : d.queued()) {
    queued.insert(Key(r));
    if (!o.fate.count(Key(r))) problem("queued rollout " + Key(r) + " is not in the journal");
  }
  std::set<uint64_t> ck_outstanding;
  for (const v1::OutstandingLease& l : d.outstanding()) ck_outstanding.insert(l.lease().lease_id());
  std::set<uint64_t> ck_waiting, waiting_prompts;
  for (const v1::GroupContinuation& c : d.continuations()) {
    ck_waiting.insert(c.group_id());
    waiting_prompts.insert(c.prompt_index());
  }
  std::set<uint64_t> oracle_waiting;
  for (const auto& [id, l] : o.waiting) oracle_waiting.insert(id);
  if (ck_waiting != oracle_waiting) {
    problem(absl::StrCat("the final checkpoint has ", ck_waiting.size(),
                         " groups waiting for a continuation, the journal ", oracle_waiting.size(),
                         " (or different ones)"));
  }
  std::set<uint64_t> oracle_outstanding;
  for (const auto& [id, l] : o.outstanding) oracle_outstanding.insert(id);
  if (ck_outstanding != oracle_outstanding) {
    problem(absl::StrCat("the final checkpoint has ", ck_outstanding.size(),
                         " outstanding leases, the journal ", oracle_outstanding.size(),
                         " (or different ones)"));
  }
  std::set<std::string> journaled_triples;
  for (const auto& [key, fate] : o.fate) {
    const std::string& t = o.triple[key];
    journaled_triples.insert(t);
    const int trained = lineage_count.count(t) ? lineage_count[t] : 0;
    const bool in_queue = queued.count(key) > 0;
    switch (fate) {
      case Oracle::Fate::kComplete:
        if (trained == 1 && !in_queue) {
          ++rep.trained;
        } else if (trained == 0 && in_queue) {
          ++rep.queued;
        } else if (trained == 0) {
          ++rep.lost;
          problem("acked rollout " + key + " (group complete) was never trained nor queued");
        } else {
          ++rep.duplicated;
          problem(absl::StrCat("acked rollout ", key, " trained ", trained, " times",
                               in_queue ? " and still queued" : ""));
        }
        break;
      case Oracle::Fate::kPartial:
        if (trained > 0) {
          ++rep.duplicated;
          problem("rollout " + key + " of an incomplete group was trained");
        } else if (in_queue && (ck_outstanding.count(o.group_of[key]) ||
                                ck_waiting.count(o.group_of[key]))) {
          ++rep.queued;
        } else {
          ++rep.lost;
          problem("rollout " + key + " of an incomplete group is not queued under a lease or "
                  "a continuation");
        }
        break;
      case Oracle::Fate::kDropped:
        // The learner rejects a rollout whose lease ended before it became durable, so one in
        // the journal was acked for a group that can never train it.
        if (trained > 0) {
          ++rep.duplicated;
          problem("rollout " + key + " was trained although its lease had ended first");
        } else {
          ++rep.lost;
          problem("rollout " + key + " was journaled (acked) after its lease ended");
        }
        break;
    }
  }
  for (const auto& [t, n] : lineage_count) {
    if (!journaled_triples.count(t)) problem("trained rollout " + t + " was never journaled");
  }
  // No prompt is lost: its latest lease completed, is still out, or it waits to be re-issued.
  std::set<uint64_t> reissue(d.reissue_prompts().begin(), d.reissue_prompts().end());
  for (const auto& [prompt, lease] : o.last_grant) {
    if (!o.completed.count(lease) && !ck_outstanding.count(lease) && !reissue.count(prompt) &&
        !waiting_prompts.count(prompt)) {
      problem(absl::StrCat("prompt ", prompt, " (last lease ", lease,
                           ") ended unfinished and is not waiting to be issued again"));
    }
  }

  // ---- (4) Versions never go back; each incarnation serves above what came before. -------
  const std::set<int64_t> published(o.publications.begin(), o.publications.end());
  int64_t before = -1;  // highest version any earlier incarnation logged
  for (size_t k = 0; k < facts.size(); ++k) {
    const LogFacts& f = facts[k];
    if (k > 0 && f.serving_version < before) {
      problem(absl::StrCat("incarnation ", k, " serves version ", f.serving_version, " below ",
                           before, " published before it"));
    }
    if (k > 0 && f.serving_version == before && f.resumed_version != f.serving_version) {
      problem(
          absl::StrCat("incarnation ", k, " reuses version number ", before, " for other weights"));
    }
    int64_t prev = f.serving_version;
    for (int64_t v : f.step_versions) {
      if (v <= prev || v <= before) {
        problem(absl::StrCat("incarnation ", k, " published version ", v, " after ",
                             std::max(prev, before)));
      }
      if (!published.count(v)) {
        problem(absl::StrCat("version ", v, " was trained but never journaled"));
      }
      prev = v;
    }
    if (!f.step_versions.empty()) before = std::max(before, f.step_versions.back());
    before = std::max(before, f.serving_version);
  }
  return rep;
}

}  // namespace rhythm::testing

#include "learner/learner_server.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/crc32c.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/model/flat_weights.h"
#include "common/rollout/engine.h"
#include "common/runtime.h"
#include "common/security/credentials.h"
#include "common/status.h"
#include "common/weights/weight_client.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/resource_quota.h"
#include "learner/checkpoint.h"
#include "learner/journal.h"
#include "learner/rollout_stream.h"
#include "learner/rollout_validation.h"
#include "learner/train_loop.h"
#include "rhythm/v1/checkpoint.pb.h"

namespace rhythm::learner {
namespace {

using common::ToGrpc;

// Internal outcome for a rollout that did not become durable: its ack is never sent, so the
// actor keeps it and resends.
v1::RolloutAck NotDurable(uint64_t rollout_id) {
  v1::RolloutAck ack;
  ack.set_rollout_id(rollout_id);
  ack.set_code(static_cast<int>(absl::StatusCode::kUnavailable));
  return ack;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

std::string LearnerServer::RolloutKey(const v1::Rollout& r) {
  return absl::StrCat(r.actor_id(), "/", r.run_id(), "/", r.rollout_id());
}

LearnerServer::LearnerServer(LearnerServerOptions options)
    : options_(std::move(options)),
      clock_(options_.clock ? *options_.clock : common::RealClock::Get()),
      ingest_queue_(static_cast<size_t>(options_.config.learner().queue_capacity())),
      session_(absl::StrCat(absl::Hex(absl::Uniform<uint64_t>(absl::BitGen()), absl::kZeroPad16))) {
}

LearnerServer::~LearnerServer() { Shutdown().IgnoreError(); }

absl::StatusOr<std::unique_ptr<LearnerServer>> LearnerServer::Create(LearnerServerOptions options) {
  if (!options.registry) options.registry = std::make_shared<prometheus::Registry>();
  std::unique_ptr<LearnerServer> s(new LearnerServer(std::move(options)));
  RHYTHM_RETURN_IF_ERROR(s->Init());
  return s;
}

absl::Status LearnerServer::Init() {
  const v1::RhythmConfig& c = options_.config;
  metrics_ = std::make_unique<LearnerMetrics>(*options_.registry);
  RHYTHM_RETURN_IF_ERROR(InitWeightTransport());
  const std::string run_dir = c.learner().run_dir();
  std::error_code ec;
  std::filesystem::create_directories(run_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(run_dir, ": ", ec.message()));
  RolloutLog::Options log_options;
  log_options.dir = run_dir + "/rollout_log";
  RHYTHM_ASSIGN_OR_RETURN(log_, RolloutLog::Open(log_options));
  LearnerState::Options state_options;
  state_options.group_size = static_cast<uint32_t>(c.trainer().group_size());
  state_options.lease_timeout_s = c.learner().lease_timeout_s();
  state_options.lease_max_lifetime_s = c.learner().lease_max_lifetime_s();
  state_options.ledger_window = static_cast<uint64_t>(c.learner().ledger_window());
  state_options.on_skip = [this](uint64_t index, const PromptSpec& spec) {
    prometheus::Counter& c = metrics_->prompts_skipped.Add({{"reason", spec.skip_reason}});
    c.Increment();
    const auto n = static_cast<int64_t>(c.Value());
    if (n <= 10 || n % 1000 == 0) {  // the counter has the rest
      RHYTHM_LOG(Warning) << "learner: skipping prompt " << index << " (id " << spec.prompt_id
                          << "): " << spec.skip_reason << ": " << spec.skip_detail << " ("
                          << n << " skipped for this reason so far)";
    }
  };
  RHYTHM_RETURN_IF_ERROR(ValidateBatchAssembly(c));
  assembler_ = std::make_unique<BatchAssembler>(BatchAssemblerOptions(c));
  absl::ReleasableMutexLock lock(&state_mu_);
  state_ = std::make_unique<LearnerState>(options_.prompts, state_options, *assembler_);

  if (!options_.resume && log_->last_seq() > 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(run_dir, " already holds a run (its rollout log is not empty): pass --resume ",
                     run_dir, " to continue it, or use a new learner.run_dir"));
  }
  int64_t restored_version = 0, restored_steps = 0, optimizer_steps = 0;
  common::model::TensorMap optimizer;
  if (options_.resume) {
    // In the run's dtype and on its device, as the fresh model was built.
    absl::StatusOr<LoadedCheckpoint> ck =
        options_.model ? LoadLatestCheckpoint(run_dir, options_.model->dtype(),
                                              options_.model->device())
                       : LoadLatestCheckpoint(run_dir);
    if (ck.ok()) {
      const v1::LearnerCheckpoint& st = ck->contents.state;
      model_ = std::move(ck->model);
      optimizer = std::move(ck->contents.optimizer);
      restored_version = st.version();
      restored_steps = st.has_durable() ? st.steps() : st.version();
      optimizer_steps = st.optimizer_steps();
      RHYTHM_RETURN_IF_ERROR(
          state_->Restore(st.has_durable() ? st.durable() : LearnerState::FromLegacy(st)));
      RHYTHM_LOG(Info) << "learner: resumed " << ck->dir << " (version " << restored_version
                       << ", " << assembler_->queued() << " queued rollouts)";
    } else if (ck.status().code() != absl::StatusCode::kNotFound) {
      return ck.status();
    }
  }
  if (!model_) model_ = std::move(options_.model);
  if (!model_) return absl::InvalidArgumentError("learner: no model");
  // Replay what the journal holds beyond the checkpoint (everything, without one), through the
  // same Apply as the live path.
  int64_t replayed = 0;
  if (log_->first_seq() > state_->log_seq() + 1 && log_->last_seq() >= log_->first_seq()) {
    return absl::DataLossError(absl::StrCat("the rollout log starts at record ",
                                            log_->first_seq(), " but the checkpoint covers only ",
                                            state_->log_seq(), ": records in between are gone"));
  }
  // (The lambda runs inside Replay, on this thread, under the lock held here.)
  auto apply = [&](uint64_t seq, absl::string_view b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_) {
    RHYTHM_ASSIGN_OR_RETURN(v1::JournalRecord r, DecodeRecord(seq, b));
    replayed += r.has_rollout() ? 1 : 0;
    state_->Apply(r);
    state_->set_log_seq(seq);
    return absl::OkStatus();
  };
  RHYTHM_RETURN_IF_ERROR(log_->Replay(state_->log_seq(), apply));
  if (replayed > 0) RHYTHM_LOG(Info) << "learner: replayed " << replayed << " logged rollouts";
  // Versions only go forward: weights older than the last published version get a new number.
  const int64_t max_published = state_->max_published_version();
  const int64_t version = max_published > restored_version ? max_published + 1 : restored_version;
  if (version != restored_version) {
    assembler_->SetResumePoint(restored_version, version);
    RHYTHM_LOG(Info) << "learner: version " << max_published
                     << " was published before the restart; the restored weights of version "
                     << restored_version << " are version " << version;
  }
  RHYTHM_ASSIGN_OR_RETURN(
      trainer_, Trainer::Create(*model_, c.trainer(), c.credit(), c.runtime().seed(), version,
                                c.generation().temperature(),
                                common::rollout::GenerationOptionsFromConfig(c.generation()).tap,
                                ActorSettings::FromConfig(c.generation()), options_.ranks));
  if (!optimizer.empty()) {
    RHYTHM_RETURN_IF_ERROR(trainer_->RestoreOptimizerState(optimizer, optimizer_steps, version));
  }
  version_ = version;
  TrainLoop::Hooks hooks;
  hooks.publish = [this](int64_t v) { return PublishWeights(v); };
  hooks.checkpoint = [this] { return WriteCheckpointNow(); };
  hooks.fail = [this](const absl::Status& s) { Fail(s); };
  hooks.finished = [this] { done_ = true; };
  if (c.learner().eval_every() > 0) {
    RHYTHM_RETURN_IF_ERROR(InitEvaluator());
    hooks.evaluate = [this](int64_t v) { OfferEvaluation(v); };
  }
  train_loop_ = std::make_unique<TrainLoop>(
      TrainLoop::Options{c, options_.dump_rollouts_dir, restored_steps}, *assembler_, *trainer_,
      *metrics_, version_, std::move(hooks));
  // Every actor the state knows gets a grace period to reconnect.
  for (const std::string& actor : state_->actors()) last_heard_[actor] = clock_.Now();
  metrics_->policy_version.Set(static_cast<double>(version));
  lock.Release();  // PublishWeights takes it
  return PublishWeights(version);
}

absl::Status LearnerServer::InitEvaluator() {
  const v1::RhythmConfig& c = options_.config;
  if (!options_.task || !options_.tokenizer) {
    return absl::FailedPreconditionError(
        absl::StrCat("config: learner.eval_every = ", c.learner().eval_every(),
                     " needs the task and tokenizer (LearnerServerOptions.task, .tokenizer)"));
  }
  RHYTHM_ASSIGN_OR_RETURN(std::unique_ptr<EvalSet> set, EvalSet::Create(c, *options_.task));
  for (const std::string& w : set->warnings()) RHYTHM_LOG(Warning) << "learner: eval: " << w;
  RHYTHM_LOG(Info) << "learner: evaluating every " << c.learner().eval_every() << " steps on "
                   << set->description() << ", avg@" << c.learner().eval_k()
                   << " at temperature " << c.generation().temperature();
  BackgroundEvaluator::Options o;
  o.config = c;
  o.tokenizer = options_.tokenizer;
  o.problems = std::move(set);
  o.on_report = [this](const BackgroundEvaluator::Report& r) {
    if (!r.result.ok()) {
      metrics_->eval_failures.Increment();
      RHYTHM_LOG(Warning) << "learner: evaluation of version " << r.version
                          << " failed: " << r.result.status();
      return;
    }
    metrics_->eval_pass1.Set(r.result->pass1);
    metrics_->eval_avg_at_k.Set(r.result->sampled);
    metrics_->eval_pass_at_k.Set(r.result->passk);
    metrics_->eval_problems.Set(static_cast<double>(r.result->problems));
    metrics_->eval_seconds.Observe(r.seconds);
    metrics_->eval_version.Set(static_cast<double>(r.version));  // last: the figures are in
    const int64_t k = options_.config.learner().eval_k();
    RHYTHM_LOG(Info) << absl::StrFormat(
        "learner: eval version %d pass@1 %.3f avg@%d %.3f pass@%d %.3f (%d problems, %.2f s)",
        r.version, r.result->pass1, k, r.result->sampled, k, r.result->passk,
        r.result->problems, r.seconds);
  };
  RHYTHM_ASSIGN_OR_RETURN(evaluator_, BackgroundEvaluator::Create(*model_, std::move(o)));
  return absl::OkStatus();
}

void LearnerServer::OfferEvaluation(int64_t version) {
  absl::StatusOr<bool> started = evaluator_->Offer(version, *model_);
  if (!started.ok()) {
    metrics_->eval_failures.Increment();
    RHYTHM_LOG(Warning) << "learner: evaluation of version " << version << ": "
                        << started.status();
  } else if (!*started) {
    RHYTHM_LOG(Info) << "learner: evaluation of version " << version
                     << " skipped: the previous one is still running";
  }
}

absl::Status LearnerServer::InitWeightTransport() {
  const v1::TransportConfig& t = options_.config.transport();
  // A chunk plus its framing must fit the learner's send limit and the actors' receive limit,
  // or every download would fail.
  const int64_t limit = std::min<int64_t>(options_.config.learner().max_message_bytes(),
                                          common::weights::kReceiverMaxMessageBytes);
  if (static_cast<int64_t>(t.chunk_bytes()) + 4096 > limit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: transport.chunk_bytes ", t.chunk_bytes(),
        " does not fit one gRPC message (learner.max_message_bytes ",
        options_.config.learner().max_message_bytes(), ", actors 67108864, less 4096 of framing)"));
  }
  weight_metrics_ = std::make_unique<common::weights::LearnerWeightMetrics>(*options_.registry);
  versions_ = std::make_unique<common::weights::VersionStore>(
      options_.config.learner().keep_versions(), static_cast<uint32_t>(t.chunk_bytes()),
      static_cast<uint64_t>(t.bucket_bytes()));
  if (t.kind() == v1::TRANSPORT_KIND_GLOO || t.kind() == v1::TRANSPORT_KIND_NCCL) {
    common::weights::CollectiveOptions co;
    co.host = t.collective_host();
    co.store_port = t.store_port();
    co.host_rendezvous = true;
    // NCCL broadcasts from the GPU the model is on (ResolveDevice gives CUDA an index).
    if (absl::StatusOr<c10::Device> d = common::ResolveDevice(options_.config.runtime().device());
        d.ok() && d->is_cuda()) {
      co.cuda_device = d->index();
    }
    absl::StatusOr<std::unique_ptr<common::weights::CommunicatorFactory>> factory =
        common::weights::NewCommunicatorFactory(t.kind(), co);
    if (!factory.ok()) {
      // Actors still get every version over gRPC.
      RHYTHM_LOG(Warning) << "learner: no broadcast group, weights go over gRPC only: "
                          << factory.status();
    } else {
      common::weights::WeightGroupHostOptions go;
      go.timeout = absl::Seconds(t.collective_timeout_s());
      go.metrics = weight_metrics_.get();
      group_ = std::make_unique<common::weights::WeightGroupHost>(versions_.get(),
                                                                  std::move(*factory), go);
    }
  }
  common::weights::WeightServiceOptions so;
  so.store = versions_.get();
  so.group = group_.get();
  so.metrics = weight_metrics_.get();
  so.max_downloads = options_.config.learner().max_weight_downloads();
  so.on_download_refused = [this] {
    metrics_->limit_refusals.Add({{"limit", "max_weight_downloads"}}).Increment();
  };
  weight_service_ = std::make_unique<common::weights::WeightService>(std::move(so));
  return absl::OkStatus();
}

absl::Status LearnerServer::Start() {
  const v1::LearnerConfig& lc = options_.config.learner();
  RHYTHM_ASSIGN_OR_RETURN(
      common::security::ServerSecurity security,
      common::security::ServerCredentialsFromConfig(
          options_.config.security(), lc.address(), [this](absl::string_view reason) {
            metrics_->auth_refused.Add({{"reason", std::string(reason)}}).Increment();
          }));
  authenticates_ = security.authenticates;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(lc.address(), security.credentials, &port_);
  // Every RPC in flight holds a thread of the synchronous server: the quota bounds them, and
  // connections that carry no RPC for idle_timeout_s are closed.
  grpc::ResourceQuota quota("rhythm-learner");
  quota.SetMaxThreads(lc.max_concurrent_rpcs());
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, lc.max_concurrent_rpcs());
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             static_cast<int>(std::min(lc.idle_timeout_s() * 1000.0, 2e9)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             static_cast<int>(std::min(lc.keepalive_s() * 1000.0, 2e9)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             static_cast<int>(std::min(lc.keepalive_timeout_s() * 1000.0, 2e9)));
  // gRPC's own limit is set above ours so an oversized rollout reaches validation and gets a
  // named rejection on a stream that stays open; only messages over twice the limit kill the
  // stream (RESOURCE_EXHAUSTED).
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(
      2 * static_cast<int64_t>(lc.max_message_bytes()), std::numeric_limits<int>::max())));
  builder.SetMaxSendMessageSize(lc.max_message_bytes());
  // Actors ping every 5 s (actor/learner_channel.h) to notice a silent partition; gRPC's
  // default answers pings more frequent than every 5 minutes without calls with GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.RegisterService(this);
  builder.RegisterService(weight_service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("learner: cannot listen on '", lc.address(), "'"));
  }
  if (group_) group_->Start();
  // The starting weights' figures, before the training thread touches the model.
  if (evaluator_) OfferEvaluation(version_.load());
  threads_.emplace_back([this] { IngestLoop(); });
  threads_.emplace_back([this] { train_loop_->Run(stopping_); });
  threads_.emplace_back([this] { HousekeepingLoop(); });
  RHYTHM_LOG(Info) << "learner: serving on port " << port_ << ", version " << version_.load()
                   << (security.tls ? ", TLS" : ", plaintext")
                   << (authenticates_ ? ", callers authenticated" : "");
  return absl::OkStatus();
}

void LearnerServer::WaitUntilDone() {
  while (!done_.load() && !stopping_.load()) absl::SleepFor(absl::Milliseconds(50));
}

absl::Status LearnerServer::Shutdown() {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return absl::OkStatus();
    shut_down_ = true;
  }
  stopping_ = true;
  if (weight_service_) weight_service_->Stop();
  if (versions_) versions_->Close();
  if (group_) group_->Stop();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  ingest_queue_.Close();
  if (assembler_) assembler_->Close();
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  evaluator_.reset();  // cancels a running evaluation between two batches of prompts
  // After a failure the in-memory state may be ahead of what is durable: no checkpoint.
  absl::Status s = server_ && !failed_.load() ? WriteCheckpointNow() : absl::OkStatus();
  if (server_) server_->Wait();
  return s;
}

bool LearnerServer::QueueHasRoom() const {
  return assembler_->queued() + static_cast<int64_t>(ingest_queue_.size()) <
         options_.config.learner().queue_capacity();
}

absl::StatusOr<uint64_t> LearnerServer::CommitLocked(
    const std::vector<v1::JournalRecord>& records) {
  if (records.empty()) return state_->log_seq();
  std::vector<std::string> bytes;
  bytes.reserve(records.size());
  for (const v1::JournalRecord& r : records) bytes.push_back(EncodeRecord(r));
  RHYTHM_ASSIGN_OR_RETURN(const uint64_t seq, log_->Append(bytes));
  int64_t expired = 0;
  for (const v1::JournalRecord& r : records) {
    expired += r.has_expiry() && state_->FindLease(r.expiry().lease_id()) ? 1 : 0;
    state_->Apply(r);
  }
  state_->set_log_seq(seq);
  metrics_->leases_expired.Increment(static_cast<double>(expired));
  return seq;
}

absl::Status LearnerServer::AwaitDurable(uint64_t seq) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = log_->Sync(seq);
  metrics_->journal_sync_seconds.Observe(Seconds(start));
  // The state already holds records the disk may not: it cannot be trusted any more.
  if (!s.ok()) Fail(absl::InternalError(absl::StrCat("journal sync failed: ", s.message())));
  return s;
}

std::vector<std::function<void(const v1::RolloutAck&)>> LearnerServer::TakeInFlightLocked(
    const std::string& key) {
  std::vector<std::function<void(const v1::RolloutAck&)>> resends;
  if (auto it = in_flight_.find(key); it != in_flight_.end()) {
    resends = std::move(it->second);
    in_flight_.erase(it);
  }
  return resends;
}

bool LearnerServer::SilentLocked(const std::string& actor_id, absl::Time now) const {
  auto it = last_heard_.find(actor_id);
  return it == last_heard_.end() ||
         now - it->second > absl::Seconds(options_.config.learner().heartbeat_timeout_s());
}

bool LearnerServer::MayActAsLocked(const std::string& actor_id, const std::string& identity) {
  if (!authenticates_ || state_->IdentityOf(actor_id) == identity) return true;
  metrics_->auth_refused.Add({{"reason", "wrong_identity"}}).Increment();
  return false;
}

grpc::Status LearnerServer::CheckLengths(
    std::initializer_list<std::pair<const char*, const std::string*>> fields) {
  const int64_t max = options_.config.learner().max_id_bytes();
  for (const auto& [field, value] : fields) {
    if (static_cast<int64_t>(value->size()) <= max) continue;
    metrics_->limit_refusals.Add({{"limit", "max_id_bytes"}}).Increment();
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat(field, " is ", value->size(),
                                     " bytes, over learner.max_id_bytes = ", max));
  }
  return grpc::Status::OK;
}

void LearnerServer::Submit(v1::Rollout rollout, const std::string& identity,
                           std::function<void(const v1::RolloutAck&)> done) {
  metrics_->rollouts_received.Increment();
  v1::RolloutAck ack;
  ack.set_rollout_id(rollout.rollout_id());
  // Rejects the rollout. A sample its own lease's actor got wrong gives the lease up (its
  // group's acked samples wait for the next lease of the prompt); a rollout that names
  // someone else's lease, or none, leaves every lease alone.
  auto reject = [&](v1::RejectReason reason, const std::string& message) {
    metrics_->Rejected(reason).Increment();
    if (reason != v1::REJECT_REASON_UNKNOWN_LEASE && reason != v1::REJECT_REASON_LEASE_MISMATCH &&
        reason != v1::REJECT_REASON_PERMISSION_DENIED) {
      uint64_t seq = 0;
      {
        absl::MutexLock lock(&state_mu_);
        const v1::OutstandingLease* lease = state_->FindLease(rollout.group_id());
        if (lease && lease->actor_id() == rollout.actor_id()) {
          seq = ReleaseLeaseLocked(rollout.group_id());
        }
      }
      AwaitDurable(seq).IgnoreError();  // a failure stops the learner; the reject stands
    }
    ack.set_code(static_cast<int>(reason == v1::REJECT_REASON_PERMISSION_DENIED
                                      ? absl::StatusCode::kPermissionDenied
                                      : absl::StatusCode::kInvalidArgument));
    ack.set_error_message(message);
    ack.set_reject_reason(reason);
    done(ack);
  };
  if (grpc::Status s =
          CheckLengths({{"actor_id", &rollout.actor_id()}, {"run_id", &rollout.run_id()}});
      !s.ok()) {
    return reject(v1::REJECT_REASON_MALFORMED,
                  absl::StrCat("rollout ", rollout.rollout_id(), ": ", s.error_message()));
  }
  {
    absl::ReleasableMutexLock lock(&state_mu_);
    if (!MayActAsLocked(rollout.actor_id(), identity)) {
      lock.Release();
      return reject(v1::REJECT_REASON_PERMISSION_DENIED,
                    absl::StrCat("rollout ", rollout.rollout_id(), ": actor_id '",
                                 rollout.actor_id(), "' is not registered by this caller"));
    }
  }
  const std::string key = RolloutKey(rollout);
  // A resend of a rollout in flight is answered when the original is durable (in flight is
  // checked first: its record may be applied but not yet durable): its `done` is queued behind
  // the original's. One already durable is acked as a duplicate. (Id 0 is reserved, and the
  // ledger counts it as seen: validation rejects it.)
  enum class Duplicate { kNo, kInFlight, kDurable };
  auto duplicate = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_mu_) {
    if (auto it = in_flight_.find(key); it != in_flight_.end()) {
      it->second.push_back(std::move(done));
      return Duplicate::kInFlight;
    }
    return rollout.rollout_id() != 0 && state_->Seen(rollout) ? Duplicate::kDurable
                                                              : Duplicate::kNo;
  };
  auto answer = [&](Duplicate d) {  // after releasing the lock
    metrics_->rollouts_duplicate.Increment();
    if (d == Duplicate::kDurable) {
      ack.set_duplicate(true);
      done(ack);
    }
  };
  {
    // De-duplicate before validating: a resend of a rollout already durable is acked as a
    // duplicate whatever has changed since (a resume, a lease that completed or expired).
    absl::ReleasableMutexLock lock(&state_mu_);
    if (const Duplicate d = duplicate(); d != Duplicate::kNo) {
      lock.Release();
      return answer(d);
    }
  }
  ValidationResult v = ValidateRollout(
      rollout, ValidationLimits::FromConfig(options_.config.learner(), model_->config().vocab_size,
                                            version_.load()));
  if (!v.ok()) return reject(v.reason, std::string(v.status.message()));
  {
    absl::ReleasableMutexLock lock(&state_mu_);
    // Again: the same rollout may have arrived on another stream meanwhile.
    if (const Duplicate d = duplicate(); d != Duplicate::kNo) {
      lock.Release();
      return answer(d);
    }
    const v1::OutstandingLease* lease = state_->FindLease(rollout.group_id());
    if (!lease) {
      lock.Release();
      return reject(v1::REJECT_REASON_UNKNOWN_LEASE,
                    absl::StrCat("rollout ", rollout.rollout_id(), ": group_id = ",
                                 rollout.group_id(), " is not an outstanding lease"));
    }
    // The rollout must be for its lease: the lease's actor, prompt and prompt tokens.
    std::string mismatch;
    if (lease->actor_id() != rollout.actor_id()) {
      mismatch = absl::StrCat("lease ", rollout.group_id(), " is held by another actor, not '",
                              rollout.actor_id(), "'");
    } else if (lease->lease().prompt_id() != rollout.prompt_id()) {
      mismatch = absl::StrCat("prompt_id = ", rollout.prompt_id(), " but lease ",
                              rollout.group_id(), " is for prompt ", lease->lease().prompt_id());
    } else if (!std::equal(lease->lease().prompt_token_ids().begin(),
                           lease->lease().prompt_token_ids().end(),
                           rollout.prompt_token_ids().begin(), rollout.prompt_token_ids().end())) {
      mismatch = absl::StrCat("prompt_token_ids (", rollout.prompt_token_ids_size(),
                              " tokens) are not lease ", rollout.group_id(), "'s prompt (",
                              lease->lease().prompt_token_ids_size(), " tokens)");
    }
    if (!mismatch.empty()) {
      lock.Release();
      return reject(v1::REJECT_REASON_LEASE_MISMATCH,
                    absl::StrCat("rollout ", rollout.rollout_id(), ": ", mismatch));
    }
    if (lease->lease().group_size() != rollout.group_size()) {
      const uint32_t expected = lease->lease().group_size();
      lock.Release();
      return reject(v1::REJECT_REASON_MALFORMED,
                    absl::StrCat("rollout ", rollout.rollout_id(), ": group_size = ",
                                 rollout.group_size(), " but the lease has ", expected));
    }
    const auto& wanted = lease->lease().sample_indices();
    if (!wanted.empty() &&
        std::find(wanted.begin(), wanted.end(), rollout.sample_index()) == wanted.end()) {
      const std::string asked = absl::StrJoin(wanted, ",");
      lock.Release();
      return reject(v1::REJECT_REASON_MALFORMED,
                    absl::StrCat("rollout ", rollout.rollout_id(), ": sample_index = ",
                                 rollout.sample_index(), " but lease ", rollout.group_id(),
                                 " completes a group and asks only for samples ", asked));
    }
    in_flight_[key];
  }
  const uint64_t id = rollout.rollout_id();
  std::function<void(const v1::RolloutAck&)> done_if_refused = done;
  if (!ingest_queue_.Push(Pending{std::move(rollout), key, std::move(done)})) {
    std::vector<std::function<void(const v1::RolloutAck&)>> resends;
    {
      absl::MutexLock lock(&state_mu_);
      resends = TakeInFlightLocked(key);
    }
    done_if_refused(NotDurable(id));  // shutting down: not acked, the actor will resend
    for (auto& r : resends) r(NotDurable(id));
  }
}

void LearnerServer::IngestLoop() {
  const size_t group = static_cast<size_t>(options_.config.learner().fsync_group());
  while (true) {
    std::optional<Pending> first = ingest_queue_.Pop();
    if (!first) return;
    std::vector<Pending> batch;
    batch.push_back(std::move(*first));
    while (batch.size() < group) {
      std::optional<Pending> more = ingest_queue_.PopWithTimeout(absl::ZeroDuration());
      if (!more) break;
      batch.push_back(std::move(*more));
    }
    // A lease may have ended (expired, released) since Submit checked it: such a rollout is
    // rejected here, under the same lock as the commit, and never journaled, so everything
    // acked lands in a group under a live lease (or a continuation of it).
    std::vector<v1::JournalRecord> records;
    std::vector<Pending> late;
    absl::StatusOr<uint64_t> seq;
    {
      absl::MutexLock lock(&state_mu_);
      std::vector<Pending> live;
      for (Pending& p : batch) {
        if (state_->FindLease(p.rollout.group_id())) {
          *records.emplace_back().mutable_rollout() = std::move(p.rollout);
          live.push_back(std::move(p));
        } else {
          late.push_back(std::move(p));
        }
      }
      batch = std::move(live);
      seq = CommitLocked(records);
      metrics_->ledger_ids.Set(static_cast<double>(state_->ledger().ids_held()));
    }
    for (Pending& p : late) {
      v1::RolloutAck ack;
      ack.set_rollout_id(p.rollout.rollout_id());
      ack.set_code(static_cast<int>(absl::StatusCode::kInvalidArgument));
      ack.set_reject_reason(v1::REJECT_REASON_UNKNOWN_LEASE);
      ack.set_error_message(absl::StrCat("rollout ", p.rollout.rollout_id(), ": group_id = ",
                                         p.rollout.group_id(),
                                         " ended while the rollout was queued for durability"));
      metrics_->Rejected(v1::REJECT_REASON_UNKNOWN_LEASE).Increment();
      std::vector<std::function<void(const v1::RolloutAck&)>> resends;
      {
        absl::MutexLock lock(&state_mu_);
        resends = TakeInFlightLocked(p.key);
      }
      p.done(ack);
      for (auto& r : resends) r(ack);
    }
    if (batch.empty()) continue;
    // The fsync runs outside state_mu_: leases, heartbeats and other streams go on meanwhile.
    // The rollouts stay in flight until durable, so a resend waits for this ack too.
    const absl::Status status = seq.ok() ? AwaitDurable(*seq) : seq.status();
    std::vector<std::vector<std::function<void(const v1::RolloutAck&)>>> resends(batch.size());
    {
      absl::MutexLock lock(&state_mu_);
      for (size_t i = 0; i < batch.size(); ++i) resends[i] = TakeInFlightLocked(batch[i].key);
    }
    if (!status.ok()) {
      // Not durable, so not acked: the actors keep them and resend to a healthy learner.
      for (size_t i = 0; i < batch.size(); ++i) {
        const uint64_t id = records[i].rollout().rollout_id();
        batch[i].done(NotDurable(id));
        for (auto& r : resends[i]) r(NotDurable(id));
      }
      Fail(absl::InternalError(absl::StrCat("rollout log append failed: ", status.message())));
      continue;
    }
    metrics_->rollouts_accepted.Increment(static_cast<double>(batch.size()));
    for (size_t i = 0; i < batch.size(); ++i) {
      v1::RolloutAck ack;
      ack.set_rollout_id(records[i].rollout().rollout_id());
      batch[i].done(ack);
      ack.set_duplicate(true);
      for (auto& r : resends[i]) r(ack);
    }
  }
}

absl::Status LearnerServer::PublishWeights(int64_t version) {
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&state_mu_);
    if (version > state_->max_published_version()) {
      // Journaled first, so that after a crash the number is never given to other weights.
      v1::JournalRecord r;
      r.mutable_publication()->set_version(version);
      RHYTHM_ASSIGN_OR_RETURN(seq, CommitLocked({r}));
    }
  }
  RHYTHM_RETURN_IF_ERROR(AwaitDurable(seq));
  const auto start = std::chrono::steady_clock::now();
  common::model::FlatWeights flat =
      common::model::FlattenWeights(*model_, options_.config.transport().wire_dtype());
  const uint64_t bytes = flat.bytes.size();
  versions_->Publish(version, std::move(flat.tensors), std::move(flat.bytes), flat.dtype);
  metrics_->weight_publish_bytes.Increment(static_cast<double>(bytes));
  metrics_->weight_publish_seconds.Observe(Seconds(start));
  return absl::OkStatus();
}

absl::Status LearnerServer::WriteCheckpointNow() {
  const auto start = std::chrono::steady_clock::now();
  CheckpointContents contents;
  v1::LearnerCheckpoint& st = contents.state;
  st.set_version(trainer_->version());
  st.set_steps(train_loop_->total_steps());
  st.set_optimizer_steps(trainer_->optimizer_steps());
  {
    // One consistent cut: every journaled record up to log_seq is reflected in it.
    absl::MutexLock lock(&state_mu_);
    *st.mutable_durable() = state_->Snapshot();
  }
  // The cut may hold records not yet fsync'd. They must be durable in the journal before a
  // checkpoint claims them: after a crash the journal would otherwise restart numbering below
  // log_seq, and a later replay from log_seq would skip the new records.
  RHYTHM_RETURN_IF_ERROR(AwaitDurable(st.durable().log_seq()));
  st.set_log_seq(st.durable().log_seq());  // names the checkpoint directory
  st.set_created_unix_ms(absl::ToUnixMillis(clock_.Now()));
  // The full AdamW state whatever learner.world_size (gathered from the ranks' shards).
  RHYTHM_ASSIGN_OR_RETURN(contents.optimizer, trainer_->GatherOptimizerState());
  absl::StatusOr<std::string> dir = WriteCheckpoint(options_.config.learner().run_dir(), *model_,
                                                    contents, options_.write_tokenizer);
  if (!dir.ok()) return dir.status();
  absl::StatusOr<int> trimmed = log_->Trim(st.durable().log_seq());
  if (!trimmed.ok()) RHYTHM_LOG(Warning) << "learner: log trim failed: " << trimmed.status();
  metrics_->checkpoint_seconds.Observe(Seconds(start));
  metrics_->rollout_log_bytes.Set(static_cast<double>(log_->bytes_on_disk()));
  RHYTHM_LOG(Info) << "learner: checkpoint " << *dir << " (log seq " << st.log_seq() << ", "
                   << st.durable().queued_size() << " queued, ledger "
                   << st.durable().ledger().runs_size() << " runs)";
  return absl::OkStatus();
}

void LearnerServer::Fail(const absl::Status& status) {
  RHYTHM_LOG(Error) << "learner: stopping after an unrecoverable error (restart with --resume): "
                    << status;
  failed_ = true;
  stopping_ = true;
  done_ = true;
}

uint64_t LearnerServer::ReleaseLeaseLocked(uint64_t lease_id) {
  std::optional<v1::JournalRecord> r = state_->PlanRelease(lease_id);
  if (!r) return 0;
  absl::StatusOr<uint64_t> seq = CommitLocked({*r});
  if (!seq.ok()) {
    Fail(seq.status());
    return 0;
  }
  return *seq;
}

void LearnerServer::HousekeepingLoop() {
  for (bool first = true; !stopping_.load(); first = false) {
    if (!first) absl::SleepFor(absl::Milliseconds(200));
    int64_t outstanding = 0, connected = 0;
    absl::StatusOr<uint64_t> seq;
    {
      absl::MutexLock lock(&state_mu_);
      const absl::Time now = clock_.Now();
      const std::vector<v1::JournalRecord> expired =
          state_->PlanExpiries(absl::ToDoubleSeconds(now - absl::UnixEpoch()),
                               [&](const std::string& actor) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                                 return SilentLocked(actor, now);
                               });
      seq = CommitLocked(expired);
      if (!seq.ok()) {
        Fail(seq.status());
        return;
      }
      if (!expired.empty()) {
        RHYTHM_LOG(Info) << "learner: " << expired.size() << " leases expired, re-issuing";
      }
      outstanding = state_->outstanding();
      // Actors silent past learner.heartbeat_timeout_s are no longer connected (their leases
      // expired above); forgetting them keeps the table and the gauge to live actors.
      for (auto it = last_heard_.begin(); it != last_heard_.end();) {
        if (SilentLocked(it->first, now)) {
          it = last_heard_.erase(it);
        } else {
          ++it;
        }
      }
      connected = static_cast<int64_t>(last_heard_.size());
    }
    if (!AwaitDurable(*seq).ok()) return;
    CutIdleStreams();
    metrics_->actors_connected.Set(static_cast<double>(connected));
    metrics_->queue_depth.Set(static_cast<double>(assembler_->queued()));
    metrics_->leases_outstanding.Set(static_cast<double>(outstanding));
    const BatchAssembler::Counters c = assembler_->counters();
    metrics_->groups_dropped.Add({{"reason", "stale"}})
        .Increment(c.dropped_stale - metrics_->groups_dropped.Add({{"reason", "stale"}}).Value());
    metrics_->groups_dropped.Add({{"reason", "zero_variance"}})
        .Increment(c.dropped_zero_variance -
                   metrics_->groups_dropped.Add({{"reason", "zero_variance"}}).Value());
    metrics_->groups_dropped.Add({{"reason", "expired"}})
        .Increment(c.dropped_expired -
                   metrics_->groups_dropped.Add({{"reason", "expired"}}).Value());
  }
}

// ---- gRPC handlers ------------------------------------------------------------------------

grpc::Status LearnerServer::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                     v1::RegisterResponse* resp) {
  if (req->actor_id().empty() || req->run_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "actor_id and run_id are required");
  }
  if (grpc::Status s = CheckLengths({{"actor_id", &req->actor_id()},
                                     {"run_id", &req->run_id()},
                                     {"description", &req->description()}});
      !s.ok()) {
    return s;
  }
  const std::string identity = authenticates_ ? common::security::CallerIdentity(*ctx) : "";
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&state_mu_);
    // An actor_id belongs to the identity that first registered it: another identity may
    // not take it over (and with it release its leases).
    const std::string owner = state_->IdentityOf(req->actor_id());
    if (authenticates_ && !owner.empty() && owner != identity) {
      metrics_->auth_refused.Add({{"reason", "actor_id_taken"}}).Increment();
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("actor_id '", req->actor_id(),
                                       "' is registered by another identity"));
    }
    if (!last_heard_.count(req->actor_id()) &&
        static_cast<int64_t>(last_heard_.size()) >= options_.config.learner().max_actors()) {
      metrics_->limit_refusals.Add({{"limit", "max_actors"}}).Increment();
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat(last_heard_.size(),
                                       " actors are connected (learner.max_actors); retry "
                                       "after silent ones expire"));
    }
    // Sessions are durable: an actor that restarted (another run id), even while the learner
    // was down, has its old run's leases released here.
    if (std::optional<v1::JournalRecord> r =
            state_->PlanSession(req->actor_id(), req->run_id(), identity)) {
      absl::StatusOr<uint64_t> committed = CommitLocked({*r});
      if (!committed.ok()) {
        Fail(committed.status());
        return ToGrpc(committed.status());
      }
      seq = *committed;
    }
    last_heard_[req->actor_id()] = clock_.Now();
    metrics_->actors_connected.Set(static_cast<double>(last_heard_.size()));
  }
  if (absl::Status s = AwaitDurable(seq); !s.ok()) return ToGrpc(s);
  *resp->mutable_config() = options_.config;
  *resp->mutable_current() = versions_->Latest()->announcement;
  resp->set_learner_session(session_);
  return grpc::Status::OK;
}

grpc::Status LearnerServer::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) {
  const std::string identity = authenticates_ ? common::security::CallerIdentity(*ctx) : "";
  uint64_t seq = 0;
  {
    absl::MutexLock lock(&state_mu_);
    if (!MayActAsLocked(req->actor_id(), identity)) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("actor_id '", req->actor_id(),
                                       "' is not registered by this caller"));
    }
    const bool known = state_->RunOf(req->actor_id()) == req->run_id();
    resp->set_reregister(!known);
    if (known) {
      const absl::Time now = clock_.Now();
      last_heard_[req->actor_id()] = now;
      // Only the leases the actor names are renewed (a heartbeat alone renews none).
      std::vector<v1::JournalRecord> renewals;
      for (uint64_t id : req->renew_lease_ids()) {
        if (std::optional<v1::JournalRecord> r = state_->PlanRenewal(
                req->actor_id(), id, absl::ToDoubleSeconds(now - absl::UnixEpoch()))) {
          renewals.push_back(*std::move(r));
        }
      }
      absl::StatusOr<uint64_t> committed = CommitLocked(renewals);
      if (!committed.ok()) return ToGrpc(committed.status());
      if (!renewals.empty()) seq = *committed;
    }
  }
  if (absl::Status s = AwaitDurable(seq); !s.ok()) return ToGrpc(s);
  resp->set_latest_version(version_.load());
  return grpc::Status::OK;
}

grpc::Status LearnerServer::LeasePrompts(grpc::ServerContext* ctx, const v1::LeaseRequest* req,
                                         v1::LeaseResponse* resp) {
  if (stopping_.load() || done_.load() || !QueueHasRoom()) {
    resp->set_retry_after_s(0.5);
    return grpc::Status::OK;
  }
  const std::string identity = authenticates_ ? common::security::CallerIdentity(*ctx) : "";
  uint64_t seq;
  {
    absl::MutexLock lock(&state_mu_);
    // Leases go to registered actors only (their session is durable, so a learner restart
    // does not make them register again), and only to the identity that registered them.
    if (req->actor_id().empty() || state_->RunOf(req->actor_id()) != req->run_id()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("actor_id '", req->actor_id().substr(0, 256), "' run_id '",
                                       req->run_id().substr(0, 256),
                                       "' is not registered: call Register first"));
    }
    if (!MayActAsLocked(req->actor_id(), identity)) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("actor_id '", req->actor_id(),
                                       "' is not registered by this caller"));
    }
    const int64_t room = options_.config.learner().max_leases_per_actor() -
                         state_->LeasesHeldBy(req->actor_id());
    if (room <= 0) {
      metrics_->limit_refusals.Add({{"limit", "max_leases_per_actor"}}).Increment();
      resp->set_retry_after_s(1.0);
      return grpc::Status::OK;
    }
    const absl::Time now = clock_.Now();
    last_heard_[req->actor_id()] = now;
    const std::vector<v1::JournalRecord> records = state_->PlanGrants(
        req->actor_id(),
        static_cast<uint32_t>(std::min<int64_t>({req->max_prompts(), 64, room})),
        absl::ToDoubleSeconds(now - absl::UnixEpoch()));
    absl::StatusOr<uint64_t> committed = CommitLocked(records);
    if (!committed.ok()) return ToGrpc(committed.status());
    seq = *committed;
    for (const v1::JournalRecord& r : records) {
      if (r.has_grant()) *resp->add_leases() = r.grant().lease();
    }
  }
  // A lease reaches the actor only once the learner will remember it after a crash.
  if (absl::Status s = AwaitDurable(seq); !s.ok()) {
    resp->clear_leases();
    return ToGrpc(s);
  }
  return grpc::Status::OK;
}

grpc::Status LearnerServer::StreamRollouts(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::RolloutStreamResponse, v1::RolloutStreamRequest>* stream) {
  const std::string identity = authenticates_ ? common::security::CallerIdentity(*ctx) : "";
  const auto now_ns = [] { return absl::GetCurrentTimeNanos(); };
  OpenStream open{ctx, {now_ns()}};
  {
    absl::MutexLock lock(&streams_mu_);
    streams_.insert(&open);
  }
  RolloutStreamOptions o;
  o.initial_credits = options_.config.learner().credits_per_actor();
  o.queue_has_room = [this] { return QueueHasRoom(); };
  o.stop = [this] { return stopping_.load(); };
  o.cancelled = [ctx] { return ctx->IsCancelled(); };
  o.submit = [this, &identity](v1::Rollout r, AckFn done) {
    Submit(std::move(r), identity, std::move(done));
  };
  o.hello = [this, &identity](const v1::StreamHello& hello) {
    if (grpc::Status s = CheckLengths(
            {{"hello.actor_id", &hello.actor_id()}, {"hello.run_id", &hello.run_id()}});
        !s.ok()) {
      return s;
    }
    absl::MutexLock lock(&state_mu_);
    if (!MayActAsLocked(hello.actor_id(), identity)) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("actor_id '", hello.actor_id(),
                                       "' is not registered by this caller"));
    }
    return grpc::Status::OK;
  };
  o.touched = [&open, now_ns] { open.last_message_ns = now_ns(); };
  o.ended = [this, &open](const char* how) {
    metrics_->streams_ended.Add({{"how", open.cut.load() ? "idle" : how}}).Increment();
  };
  grpc::Status status = ServeRolloutStream(*stream, o);
  {
    absl::MutexLock lock(&streams_mu_);
    streams_.erase(&open);
  }
  return status;  // (a stream cut for idleness was cancelled: its client sees CANCELLED)
}

void LearnerServer::CutIdleStreams() {
  const int64_t limit_ns =
      static_cast<int64_t>(options_.config.learner().idle_timeout_s() * 1e9);
  const int64_t now = absl::GetCurrentTimeNanos();
  absl::MutexLock lock(&streams_mu_);
  for (OpenStream* s : streams_) {
    if (!s->cut.load() && now - s->last_message_ns.load() > limit_ns) {
      s->cut = true;
      metrics_->limit_refusals.Add({{"limit", "idle_timeout"}}).Increment();
      s->context->TryCancel();
    }
  }
}

}  // namespace rhythm::learner

#include "common/weights/weight_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/logging.h"

namespace rhythm::common::weights {
namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Fetches chunks [first, end) of `v` into `buffer`.
absl::Status FetchRange(v1::Weights::StubInterface& stub, const v1::WeightVersion& v,
                        uint32_t first, uint32_t end, const FetchOptions& o, char* buffer) {
  uint32_t next = first;
  bool broken = false;
  for (int attempt = 0; next < end; ++attempt) {
    if (attempt >= o.max_attempts) {
      return absl::UnavailableError(
          absl::StrCat("weights: chunks ", next, "..", end - 1, " of version ", v.version(),
                       " did not arrive after ", o.max_attempts, " attempts"));
    }
    if (broken && o.metrics) o.metrics->resumes.Increment();
    broken = true;
    v1::FetchWeightsRequest req;
    req.set_version(v.version());
    req.set_first_chunk(next);  // resume where the last attempt stopped
    req.set_max_chunks(end - next);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::ToInt64Milliseconds(o.attempt_timeout)));
    auto reader = stub.FetchWeights(&ctx, req);
    v1::WeightChunk chunk;
    while (next < end && reader->Read(&chunk)) {
      const uint64_t want_off = static_cast<uint64_t>(next) * v.chunk_bytes();
      if (chunk.index() != next || chunk.offset() != want_off ||
          chunk.offset() + chunk.data().size() > v.total_bytes() ||
          Crc32c(chunk.data()) != chunk.crc32c()) {
        RHYTHM_LOG(Warning) << "weights: chunk " << chunk.index() << " of version " << v.version()
                            << " is corrupt or out of order; fetching it again";
        if (o.metrics) o.metrics->chunk_refetches.Increment();
        broken = false;  // a refetch, not a resume
        ctx.TryCancel();
        break;
      }
      std::memcpy(buffer + chunk.offset(), chunk.data().data(), chunk.data().size());
      ++next;
    }
    const grpc::Status s = reader->Finish();
    switch (s.error_code()) {
      case grpc::StatusCode::NOT_FOUND:
        return absl::NotFoundError(s.error_message());
      case grpc::StatusCode::RESOURCE_EXHAUSTED:  // a chunk over a message-size limit
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::OUT_OF_RANGE:
        return absl::FailedPreconditionError(absl::StrCat(
            "weights: version ", v.version(), " cannot be fetched: ", s.error_message()));
      default:
        break;  // broken or cancelled: resume
    }
    if (next >= end) break;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> FetchOverGrpc(v1::Weights::StubInterface& stub,
                                          const v1::WeightVersion& v, const FetchOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  if (v.num_chunks() > 0 && v.chunk_bytes() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights: version ", v.version(), " announces chunk_bytes 0"));
  }
  std::string buffer(v.total_bytes(), '\0');
  const uint32_t n = v.num_chunks();
  const uint32_t streams = std::max<uint32_t>(1, std::min<uint32_t>(o.streams, n));
  std::vector<absl::Status> results(streams);
  std::vector<std::thread> threads;
  for (uint32_t i = 0; i < streams; ++i) {
    const uint32_t first = static_cast<uint32_t>(uint64_t{n} * i / streams);
    const uint32_t end = static_cast<uint32_t>(uint64_t{n} * (i + 1) / streams);
    auto run = [&, i, first, end] {
      results[i] = FetchRange(stub, v, first, end, o, buffer.data());
    };
    if (i + 1 == streams) {
      run();
    } else {
      threads.emplace_back(run);
    }
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  if (Crc32c(buffer) != v.crc32c()) {
    return absl::DataLossError(
        absl::StrCat("weights: version ", v.version(), " failed its whole-buffer checksum"));
  }
  if (o.metrics) o.metrics->sync.Record(v1::TRANSPORT_KIND_GRPC, buffer.size(), Since(start));
  return buffer;
}

GroupMember::GroupMember(v1::Weights::StubInterface* stub, std::string actor_id,
                         std::unique_ptr<CommunicatorFactory> factory, ActorWeightMetrics* metrics)
    : stub_(stub),
      actor_id_(std::move(actor_id)),
      factory_(std::move(factory)),
      metrics_(metrics) {}

void GroupMember::Recycle(std::string buffer) {
  absl::MutexLock lock(&mu_);
  if (buffer.capacity() > spare_.capacity()) spare_ = std::move(buffer);
}

void GroupMember::Stop() {
  stop_ = true;
  absl::MutexLock lock(&mu_);
  if (ctx_ != nullptr) ctx_->TryCancel();
}

absl::Status GroupMember::Run(const std::function<void(ReceivedVersion)>& deliver) {
  grpc::ClientContext ctx;
  {
    absl::MutexLock lock(&mu_);
    if (stop_.load()) return absl::CancelledError("stopped");
    ctx_ = &ctx;
  }
  auto stream = stub_->WeightGroup(&ctx);
  v1::WeightGroupRequest join;
  join.mutable_join()->set_actor_id(actor_id_);
  join.mutable_join()->set_transport(factory_->kind());
  stream->Write(join);
  std::unique_ptr<Communicator> comm;
  v1::WeightGroupEvent::Form form;
  v1::WeightGroupEvent e;
  absl::Status result = absl::OkStatus();
  bool open = true;
  while (!stop_.load() && (open = stream->Read(&e))) {
    if (e.has_form()) {
      comm.reset();
      connected_ = false;
      form = e.form();
      v1::WeightGroupRequest ready;
      ready.mutable_ready()->set_group_id(form.group_id());
      if (!stream->Write(ready)) break;
    } else if (e.has_connect()) {
      if (e.connect().group_id() != form.group_id()) continue;
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<std::unique_ptr<Communicator>> c =
          factory_->Connect(form.source().rendezvous(), form.source().rank(),
                            form.source().world_size(), absl::Seconds(form.timeout_s()));
      if (!c.ok()) {
        if (Since(start) < form.timeout_s() / 2) {
          // Failed at once: a local problem (no such address, store unreachable) that would
          // fail every re-form for all members. Leave; the learner re-forms without us.
          result = absl::UnavailableError(absl::StrCat(
              "weights: cannot connect to group ", form.group_id(), ": ", c.status().message()));
          break;
        }
        // Timed out waiting for the others: the learner re-forms; meanwhile connected() is
        // false and the actor fetches over gRPC.
        RHYTHM_LOG(Warning) << "weights: " << c.status();
        continue;
      }
      comm = std::move(*c);
      connected_ = true;
    } else if (e.has_broadcast()) {
      const auto start = std::chrono::steady_clock::now();
      const v1::WeightVersion& v = e.broadcast();
      if (!comm) continue;  // the learner's broadcast fails without us and it re-forms
      ReceivedVersion r;
      r.announcement = v;
      {
        absl::MutexLock lock(&mu_);
        r.bytes = std::move(spare_);
        spare_.clear();
      }
      r.bytes.resize(v.total_bytes());  // every byte is overwritten by the broadcast
      const uint64_t bucket =
          std::min<uint64_t>(uint64_t{1} << 30, std::max<uint64_t>(1, v.bucket_bytes()));
      absl::Status s;
      for (uint64_t off = 0; off < r.bytes.size() && s.ok(); off += bucket) {
        const uint64_t len = std::min<uint64_t>(bucket, r.bytes.size() - off);
        s = comm->Broadcast(r.bytes.data() + off, len);
        if (s.ok() && bucket_hook_) bucket_hook_(v.version(), off + len);
      }
      if (!s.ok()) {
        RHYTHM_LOG(Warning) << "weights: " << s;  // the learner re-forms the group
        comm.reset();
        connected_ = false;
        continue;
      }
      if (Crc32c(r.bytes) != v.crc32c()) {
        result = absl::DataLossError(absl::StrCat("weights: version ", v.version(),
                                                  " arrived with a bad checksum over ",
                                                  TransportName(factory_->kind())));
        break;
      }
      r.seconds = Since(start);
      if (metrics_) metrics_->sync.Record(factory_->kind(), r.bytes.size(), r.seconds);
      deliver(std::move(r));
    }
  }
  connected_ = false;
  comm.reset();
  if (open) ctx.TryCancel();  // we are leaving; otherwise the server's status is the reason
  const grpc::Status s = stream->Finish();
  {
    absl::MutexLock lock(&mu_);
    ctx_ = nullptr;
  }
  if (!result.ok()) return result;
  if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
    return absl::FailedPreconditionError(s.error_message());
  }
  if (stop_.load()) return absl::CancelledError("stopped");
  return absl::UnavailableError(absl::StrCat(
      "weights: left the group: ", s.error_message().empty() ? "stream ended" : s.error_message()));
}

}  // namespace rhythm::common::weights

#include "common/weights/weight_service.h"

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace rhythm::common::weights {

grpc::Status WeightService::WatchVersions(grpc::ServerContext* ctx, const v1::WatchVersionsRequest*,
                                          grpc::ServerWriter<v1::WeightVersion>* writer) {
  int64_t sent = -1;
  // The first and the last version announced stay fetchable while this watch is open, even
  // once evicted: a client that reads the first announcement and keeps the watch open while it
  // downloads cannot be outrun by newer versions, however far away or slow it is.
  std::shared_ptr<const PublishedVersion> first, last;
  while (!ctx->IsCancelled() && !stopping_.load()) {
    auto latest = options_.store->WaitNewer(sent, absl::Milliseconds(200));
    if (!latest || latest->announcement.version() <= sent) continue;
    if (!writer->Write(latest->announcement)) break;
    sent = latest->announcement.version();
    if (!first) first = latest;
    last = std::move(latest);
  }
  return grpc::Status::OK;
}

grpc::Status WeightService::FetchWeights(grpc::ServerContext* ctx,
                                         const v1::FetchWeightsRequest* req,
                                         grpc::ServerWriter<v1::WeightChunk>* writer) {
  const int running = downloads_.fetch_add(1) + 1;
  struct Done {
    std::atomic<int>& n;
    ~Done() { n.fetch_sub(1); }
  } done{downloads_};
  if (options_.max_downloads > 0 && running > options_.max_downloads) {
    if (options_.on_download_refused) options_.on_download_refused();
    // UNAVAILABLE, not RESOURCE_EXHAUSTED: the client treats the latter as a message-size
    // limit that no retry can pass, and this one passes with the next attempt.
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat("weights: ", options_.max_downloads,
                                     " downloads are running (learner.max_weight_downloads); "
                                     "retry later"));
  }
  const auto start = std::chrono::steady_clock::now();
  std::shared_ptr<const PublishedVersion> w = options_.store->Get(req->version());
  if (!w) {
    auto latest = options_.store->Latest();
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("weights: version ", req->version(), " is not kept; newest is ",
                     latest ? latest->announcement.version() : -1));
  }
  const uint32_t n = w->announcement.num_chunks();
  if (req->first_chunk() > n) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE,
                        absl::StrCat("weights: first_chunk ", req->first_chunk(), " > num_chunks ",
                                     n, " of version ", req->version()));
  }
  const uint32_t end = req->max_chunks() == 0
                           ? n
                           : static_cast<uint32_t>(std::min<uint64_t>(
                                 n, uint64_t{req->first_chunk()} + req->max_chunks()));
  uint64_t sent = 0;
  v1::WeightChunk chunk;
  for (uint32_t i = req->first_chunk(); i < end; ++i) {
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
    chunk.set_version(w->announcement.version());
    chunk.set_index(i);
    chunk.set_offset(w->ChunkBegin(i));
    chunk.mutable_data()->assign(w->bytes.data() + w->ChunkBegin(i),
                                 w->ChunkEnd(i) - w->ChunkBegin(i));
    chunk.set_crc32c(w->chunk_crc[i]);
    if (options_.chunk_hook && !options_.chunk_hook(chunk)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "weights: connection dropped (test)");
    }
    if (!writer->Write(chunk)) return grpc::Status::CANCELLED;
    sent += chunk.data().size();
  }
  if (options_.metrics) {
    options_.metrics->sync.Record(
        v1::TRANSPORT_KIND_GRPC, sent,
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return grpc::Status::OK;
}

grpc::Status WeightService::WeightGroup(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::WeightGroupEvent, v1::WeightGroupRequest>* stream) {
  if (options_.group == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "weights: this learner has no collective transport (transport.kind is "
                        "grpc); fetch weights with FetchWeights");
  }
  v1::WeightGroupRequest req;
  if (!stream->Read(&req) || !req.has_join() || req.join().actor_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "weights: the first WeightGroupRequest must be a join with an actor_id");
  }
  if (req.join().transport() != options_.group->kind()) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("weights: the learner's group uses ", TransportName(options_.group->kind()),
                     ", the actor asked for ", TransportName(req.join().transport())));
  }
  WeightGroupHost& host = *options_.group;
  std::shared_ptr<WeightGroupHost::Member> m = host.Join(req.join().actor_id());
  // Reader: ready answers; EOF or an error means the member is gone.
  std::atomic<bool> reader_done{false};
  std::thread reader([&] {
    v1::WeightGroupRequest r;
    while (stream->Read(&r)) {
      if (r.has_ready()) host.Ready(*m, r.ready().group_id());
    }
    reader_done = true;
  });
  grpc::Status result = grpc::Status::OK;
  while (!reader_done.load() && !ctx->IsCancelled() && !stopping_.load()) {
    v1::WeightGroupEvent e;
    bool have = false;
    absl::Status s = host.NextEvent(*m, absl::Milliseconds(200), &e, &have);
    if (!s.ok()) {
      result = grpc::Status(grpc::StatusCode::UNAVAILABLE, std::string(s.message()));
      break;
    }
    if (have && !stream->Write(e)) break;
  }
  host.Leave(*m);
  ctx->TryCancel();  // unblocks the reader's Read
  reader.join();
  return result;
}

}  // namespace rhythm::common::weights

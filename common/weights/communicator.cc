#include "common/weights/communicator.h"

#include "absl/strings/str_cat.h"
#include "common/weights/gloo_communicator.h"
#if defined(RHYTHM_WITH_NCCL)
#include "common/weights/nccl_communicator.h"
#endif

namespace rhythm::common::weights {

absl::StatusOr<std::unique_ptr<CommunicatorFactory>> NewCommunicatorFactory(
    v1::TransportKind kind, const CollectiveOptions& options) {
  switch (kind) {
    case v1::TRANSPORT_KIND_GLOO:
      return NewGlooFactory(options);
    case v1::TRANSPORT_KIND_NCCL:
#if defined(RHYTHM_WITH_NCCL)
      return NewNcclFactory(options);
#else
      return absl::UnimplementedError(
          "transport.kind nccl: this build has no NCCL (configure with -DRHYTHM_WITH_NCCL=ON on "
          "a machine with CUDA and NCCL); use gloo or grpc");
#endif
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("no collective transport for transport.kind ", kind));
  }
}

}  // namespace rhythm::common::weights

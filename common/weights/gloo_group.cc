#include "common/weights/gloo_group.h"

#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "torch/csrc/distributed/c10d/PrefixStore.hpp"

namespace rhythm::common::weights {

std::chrono::milliseconds GlooMillis(absl::Duration d) {
  return std::chrono::milliseconds(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

std::string FirstLine(const std::exception& e) {
  const std::string what = e.what();
  return what.substr(0, what.find('\n'));
}

std::string LocalHostName() {
  char name[256] = {0};
  if (gethostname(name, sizeof(name) - 1) != 0) return "127.0.0.1";
  return name;
}

absl::StatusOr<c10::intrusive_ptr<c10d::TCPStore>> HostStore(const std::string& host, int port) {
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = true;
    o.waitWorkers = false;
    o.timeout = std::chrono::seconds(30);
    return c10::make_intrusive<c10d::TCPStore>(host, o);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("gloo: cannot start the rendezvous store on port ", port, ": ", FirstLine(e)));
  }
}

absl::StatusOr<c10::intrusive_ptr<c10d::Store>> ConnectStore(const std::string& host, int port,
                                                             absl::Duration timeout) {
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = false;
    o.timeout = GlooMillis(timeout);
    return c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::TCPStore>(host, o));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo: cannot reach the rendezvous store ", host,
                                               ":", port, ": ", FirstLine(e)));
  }
}

absl::StatusOr<c10::intrusive_ptr<c10d::ProcessGroupGloo>> JoinGlooGroup(
    c10::intrusive_ptr<c10d::Store> store, const std::string& prefix, int rank, int world_size,
    absl::Duration timeout, const std::string& host, int connections) {
  try {
    store->setTimeout(GlooMillis(timeout));
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(prefix, store);
    auto opts = c10d::ProcessGroupGloo::Options::create(GlooMillis(timeout));
    for (int i = 0; i < connections; ++i) {
      opts->devices.push_back(host.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                           : c10d::ProcessGroupGloo::createDeviceForHostname(host));
    }
    opts->threads = connections;
    return c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world_size, opts);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo: rank ", rank, " of ", world_size,
                                               " could not join '", prefix, "': ", FirstLine(e)));
  }
}

}  // namespace rhythm::common::weights

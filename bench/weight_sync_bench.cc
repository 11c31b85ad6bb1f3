// bench_weight_sync: one weight sync of a model of --params fp32 parameters (default 100M =
// 400 MB) from a learner-side host in this process to 1, 2 and 4 receiver processes
// (rhythm-weight-peer) on localhost, over gRPC chunks and over the Gloo broadcast group, next
// to this machine's memcpy bandwidth measured in the same run. Reports, per case, the seconds
// from publish until the last receiver verified the version, GB/s per receiver (bytes / that
// time) and the ratio to memcpy. Version 1 warms up (page faults, connections); version 2 is
// measured. Usage: bench_weight_sync [--params N] [--actors 1,2,4] [--transports grpc,gloo]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/crc32c.h"
#include "common/flags.h"
#include "common/subprocess.h"
#include "common/weights/test_host.h"

namespace rw = rhythm::common::weights;

namespace {

std::string BinDir(const char* argv0) {
  std::string s = argv0;
  const size_t slash = s.rfind('/');
  return slash == std::string::npos ? "." : s.substr(0, slash);
}

// Best of 5 copies of `bytes` bytes (single thread, like one receiver's copy).
double MemcpyGbps(size_t bytes) {
  std::string a(bytes, 'a'), b(bytes, 'b');
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const absl::Time t = absl::Now();
    std::memcpy(b.data(), a.data(), bytes);
    const double s = absl::ToDoubleSeconds(absl::Now() - t);
    best = std::max(best, bytes / s / 1e9);
    a[i] = b[bytes - 1 - i];  // keep the copies observable
  }
  return best;
}

// One TCP connection over 127.0.0.1, `bytes` sent from one thread and received by another:
// the ceiling for any TCP transport on this machine (best of 3).
double TcpLoopbackGbps(size_t bytes) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listener, 1) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return 0;
  }
  std::string out(bytes, 'x'), in(bytes, '\0');
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return 0;
    const int server = accept(listener, nullptr, nullptr);
    const absl::Time t = absl::Now();
    std::thread sender([&] {
      for (size_t off = 0; off < bytes;) {
        const ssize_t n = send(client, out.data() + off, bytes - off, 0);
        if (n <= 0) return;
        off += static_cast<size_t>(n);
      }
    });
    for (size_t off = 0; off < bytes;) {
      const ssize_t n = recv(server, in.data() + off, bytes - off, 0);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    sender.join();
    best = std::max(best, bytes / absl::ToDoubleSeconds(absl::Now() - t) / 1e9);
    close(client);
    close(server);
  }
  close(listener);
  return best;
}

// Waits until every peer printed `version`; returns false on timeout or a wrong checksum.
// `slowest` gets the longest receive time a peer reported (announcement to verified buffer).
bool AwaitAll(std::vector<std::unique_ptr<rhythm::common::ChildProcess>>& peers, int64_t version,
              uint32_t crc, double timeout_s, double* slowest = nullptr) {
  for (auto& p : peers) {
    while (true) {
      const std::string line = p->ReadLine(timeout_s);
      if (line.empty()) return false;
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() == 12 && f[0] == "peer" && std::stoll(f[3]) == version) {
        if (static_cast<uint32_t>(std::stoul(f[7])) != crc) return false;
        if (slowest) *slowest = std::max(*slowest, std::stod(f[9]));
        break;
      }
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string params_flag = "100000000", actors_flag = "1,2,4", transports_flag = "grpc,gloo";
  std::string chunk_flag = "2097152", streams_flag = "1";
  rhythm::common::FlagParser p("bench_weight_sync [flags]",
                               "Weight sync bandwidth over gRPC and Gloo vs. memcpy.");
  p.AddString("params", "N", "fp32 parameters in the model", &params_flag);
  p.AddString("actors", "LIST", "receiver process counts", &actors_flag);
  p.AddString("transports", "LIST", "grpc and/or gloo", &transports_flag);
  p.AddString("chunk-bytes", "N", "gRPC chunk size", &chunk_flag);
  p.AddString("streams", "N", "parallel gRPC streams per receiver", &streams_flag);
  std::vector<std::string> rest;
  int64_t params = 0, chunk = 0;
  if (!p.Parse(argc, argv, 1, &rest).ok() || !absl::SimpleAtoi(params_flag, &params) ||
      !absl::SimpleAtoi(chunk_flag, &chunk)) {
    std::cerr << p.Usage();
    return 2;
  }
  const size_t bytes = static_cast<size_t>(params) * 4;
  const std::string peer = BinDir(argv[0]) + "/rhythm-weight-peer";
  const double memcpy_gbps = MemcpyGbps(bytes);
  const double tcp_gbps = TcpLoopbackGbps(bytes);
  std::cout << absl::StrFormat(
      "model: %d fp32 parameters = %.1f MB; memcpy %.2f GB/s; one TCP loopback connection "
      "%.2f GB/s (%.0f%% of memcpy)\n",
      params, bytes / 1e6, memcpy_gbps, tcp_gbps, 100 * tcp_gbps / memcpy_gbps);
  // seconds: the slowest receiver's own time from the announcement (gRPC) or the broadcast
  // event (Gloo) to a verified buffer; publish_to_all: wall time from Publish (which flattens
  // nothing here but copies and checksums the buffer) until every receiver reported.
  std::cout << "transport actors  seconds  GB/s/actor  vs_memcpy  vs_tcp  aggregate_GB/s  "
               "publish_to_all\n";
  const std::string v1 = rw::RandomBytes(bytes, 1), v2 = rw::RandomBytes(bytes, 2);
  const uint32_t crc1 = rhythm::common::Crc32c(v1), crc2 = rhythm::common::Crc32c(v2);
  for (const std::string& transport :
       std::vector<std::string>(absl::StrSplit(transports_flag, ','))) {
    for (const std::string& n_str : std::vector<std::string>(absl::StrSplit(actors_flag, ','))) {
      int n = 0;
      if (!absl::SimpleAtoi(n_str, &n) || n < 1) continue;
      rw::TestHostOptions o;
      o.gloo_group = transport == "gloo";
      o.timeout = absl::Seconds(120);
      o.chunk_bytes = static_cast<uint32_t>(chunk);
      o.bucket_bytes = 256 << 20;
      rw::TestHost host(o);
      std::vector<std::unique_ptr<rhythm::common::ChildProcess>> peers;
      for (int i = 0; i < n; ++i) {
        peers.push_back(std::make_unique<rhythm::common::ChildProcess>());
        peers.back()->Start({peer, "--address", host.address(), "--transport", transport, "--id",
                             absl::StrCat("p", i), "--streams", streams_flag},
                            "/dev/null");
      }
      if (o.gloo_group) host.WaitForGroupSize(n, absl::Seconds(60));
      host.Publish(1, v1);
      if (!AwaitAll(peers, 1, crc1, 300)) {
        std::cerr << transport << " x" << n << ": warm-up version did not arrive\n";
        return 1;
      }
      const absl::Time start = absl::Now();
      host.Publish(2, v2);
      double s = 0;
      if (!AwaitAll(peers, 2, crc2, 300, &s)) {
        std::cerr << transport << " x" << n << ": version 2 did not arrive\n";
        return 1;
      }
      const double wall = absl::ToDoubleSeconds(absl::Now() - start);
      const double gbps = bytes / s / 1e9;
      std::cout << absl::StrFormat("%-9s %6d  %7.3f  %10.2f  %8.0f%%  %5.0f%%  %14.2f  %8.3f\n",
                                   transport, n, s, gbps, 100 * gbps / memcpy_gbps,
                                   100 * gbps / tcp_gbps, n * gbps, wall)
                << std::flush;
      for (auto& peer_proc : peers) peer_proc->Stop(SIGKILL, 5);
    }
  }
  return 0;
}

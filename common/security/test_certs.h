// Test certificates made with the openssl command line, for tests of TLS and mutual TLS (never
// for deployments: deploy/tls/make-certs.sh is the documented script). A CA, a server
// certificate for "localhost" and 127.0.0.1, client certificates with chosen common names, and
// a second CA that nobody trusts, each as a PEM file in `dir`.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace rhythm::common::security {

struct TestCerts {
  std::string dir;
  std::string ca, server_cert, server_key;
  // A CA the server does not trust, and a client certificate it signed ("rogue").
  std::string rogue_ca, rogue_cert, rogue_key;
  // client_cert(name) / client_key(name) for each name passed to MakeTestCerts.
  std::string client_cert(const std::string& name) const { return dir + "/" + name + ".crt"; }
  std::string client_key(const std::string& name) const { return dir + "/" + name + ".key"; }
};

// Runs openssl (about 0.1 s per certificate). INTERNAL with the command when one fails.
absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir,
                                        const std::vector<std::string>& client_names);

}  // namespace rhythm::common::security

#include "common/security/test_certs.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace rhythm::common::security {
namespace {

absl::Status Run(const std::string& command) {
  const std::string quiet = absl::StrCat(command, " >/dev/null 2>&1");
  if (std::system(quiet.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("test certificates: failed: ", command));
  }
  return absl::OkStatus();
}

// A key and a certificate for `cn` signed by `ca` (its .crt and .key beside it), with the
// subjectAltNames in `san` (may be empty).
absl::Status Issue(const std::string& dir, const std::string& name, const std::string& cn,
                   const std::string& ca, const std::string& san) {
  const std::string base = dir + "/" + name;
  if (!san.empty()) {
    std::ofstream ext(base + ".ext");
    ext << "subjectAltName=" << san << "\n";
  }
  if (absl::Status s = Run(absl::StrCat("openssl req -newkey rsa:2048 -nodes -keyout ", base,
                                        ".key -subj /CN=", cn, " -out ", base, ".csr"));
      !s.ok()) {
    return s;
  }
  return Run(absl::StrCat("openssl x509 -req -in ", base, ".csr -CA ", dir, "/", ca,
                          ".crt -CAkey ", dir, "/", ca, ".key -CAcreateserial -days 2 -out ",
                          base, ".crt", san.empty() ? "" : absl::StrCat(" -extfile ", base, ".ext")));
}

absl::Status MakeCa(const std::string& dir, const std::string& name) {
  return Run(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout ", dir, "/",
                          name, ".key -subj /CN=", name, " -out ", dir, "/", name, ".crt"));
}

}  // namespace

absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir,
                                        const std::vector<std::string>& client_names) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": ", ec.message()));
  TestCerts c;
  c.dir = dir;
  if (absl::Status s = MakeCa(dir, "ca"); !s.ok()) return s;
  if (absl::Status s = MakeCa(dir, "rogue-ca"); !s.ok()) return s;
  if (absl::Status s = Issue(dir, "server", "localhost", "ca", "DNS:localhost,IP:127.0.0.1");
      !s.ok()) {
    return s;
  }
  for (const std::string& name : client_names) {
    if (absl::Status s = Issue(dir, name, name, "ca", ""); !s.ok()) return s;
  }
  if (absl::Status s = Issue(dir, "rogue", "rogue", "rogue-ca", ""); !s.ok()) return s;
  c.ca = dir + "/ca.crt";
  c.server_cert = dir + "/server.crt";
  c.server_key = dir + "/server.key";
  c.rogue_ca = dir + "/rogue-ca.crt";
  c.rogue_cert = dir + "/rogue.crt";
  c.rogue_key = dir + "/rogue.key";
  return c;
}

}  // namespace rhythm::common::security

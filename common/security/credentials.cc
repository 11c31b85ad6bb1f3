#include "common/security/credentials.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/status.h"
#include "grpcpp/security/auth_context.h"

namespace rhythm::common::security {
namespace {

// The property the token processor sets on an authenticated call.
constexpr char kIdentityProperty[] = "rhythm_identity";
constexpr char kAuthorization[] = "authorization";
constexpr char kBearer[] = "Bearer ";

// The whole of `path`; the error names security.<key> and the path.
absl::StatusOr<std::string> ReadConfigFile(const std::string& path, absl::string_view key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: security.", key, " = '", path, "': cannot be read"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view key) {
  RHYTHM_ASSIGN_OR_RETURN(std::string pem, ReadConfigFile(path, key));
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: security.", key, " = '", path, "': not a PEM file"));
  }
  return pem;
}

// Accepts a call that carries one of the accepted tokens (or, with client certificates
// required, a verified certificate) and records who it is.
class Authenticator final : public grpc::AuthMetadataProcessor {
 public:
  Authenticator(std::map<std::string, std::string> token_to_identity, bool require_certificate,
                std::function<void(absl::string_view)> on_refused)
      : tokens_(std::move(token_to_identity)),
        require_certificate_(require_certificate),
        on_refused_(std::move(on_refused)) {}

  // Cheap and non-blocking: runs on gRPC's own thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata*) override {
    if (require_certificate_ && !context->IsPeerAuthenticated()) {
      return Refuse(kNoClientCertificate, "a client certificate signed by security.tls_ca is required");
    }
    if (tokens_.empty()) return grpc::Status::OK;
    auto it = metadata.find(kAuthorization);
    if (it == metadata.end()) {
      return Refuse(kNoCredentials, "no bearer token (authorization metadata)");
    }
    const absl::string_view value(it->second.data(), it->second.size());
    if (!absl::StartsWith(value, kBearer)) {
      return Refuse(kBadToken, "the authorization metadata is not 'Bearer <token>'");
    }
    auto token = tokens_.find(std::string(value.substr(sizeof(kBearer) - 1)));
    if (token == tokens_.end()) return Refuse(kBadToken, "the bearer token is not accepted");
    consumed->insert({std::string(kAuthorization), std::string(value)});
    context->AddProperty(kIdentityProperty, token->second);
    return grpc::Status::OK;
  }

 private:
  grpc::Status Refuse(absl::string_view reason, absl::string_view message) {
    if (on_refused_) on_refused_(reason);
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(message));
  }

  const std::map<std::string, std::string> tokens_;  // token -> identity
  const bool require_certificate_;
  const std::function<void(absl::string_view)> on_refused_;
};

// Sends the bearer token with every call.
class TokenPlugin final : public grpc::MetadataCredentialsPlugin {
 public:
  explicit TokenPlugin(std::string token) : header_(absl::StrCat(kBearer, token)) {}
  bool IsBlocking() const override { return false; }
  grpc::Status GetMetadata(grpc::string_ref, grpc::string_ref, const grpc::AuthContext&,
                           std::multimap<grpc::string, grpc::string>* metadata) override {
    metadata->insert({kAuthorization, header_});
    return grpc::Status::OK;
  }
  // Never prints the token.
  grpc::string DebugString() override { return "rhythm bearer token"; }

 private:
  const std::string header_;
};

}  // namespace

bool IsLoopback(absl::string_view address) {
  absl::string_view host = address;
  if (absl::StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') == absl::string_view::npos ? host.size()
                                                                    : host.find(']') - 1);
  } else if (size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    host = host.substr(0, colon);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.") ||
         absl::StartsWith(host, "unix:");
}

absl::StatusOr<std::string> ReadSecret(const std::string& path, absl::string_view key) {
  RHYTHM_ASSIGN_OR_RETURN(const std::string text, ReadConfigFile(path, key));
  std::string secret(absl::StripAsciiWhitespace(text));
  if (secret.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: security.", key, " = '", path, "': the file is empty"));
  }
  return secret;
}

absl::StatusOr<std::map<std::string, std::string>> ReadAcceptedTokens(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: security.accepted_tokens_file = '", path, "': cannot be read"));
  }
  std::map<std::string, std::string> identity_of;  // token -> identity
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const absl::string_view l = absl::StripAsciiWhitespace(line);
    if (l.empty() || l[0] == '#') continue;
    std::vector<absl::string_view> parts = absl::StrSplit(l, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: security.accepted_tokens_file = '", path, "': line ", n,
          " is not `identity token` (", parts.size(), " fields)"));
    }
    if (!identity_of.emplace(std::string(parts[1]), std::string(parts[0])).second) {
      return absl::InvalidArgumentError(absl::StrCat("config: security.accepted_tokens_file = '",
                                                     path, "': line ", n,
                                                     " repeats another line's token"));
    }
  }
  if (identity_of.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("config: security.accepted_tokens_file = '",
                                                   path, "': no tokens"));
  }
  return identity_of;
}

absl::StatusOr<std::string> MetricsToken(const v1::SecurityConfig& config) {
  if (config.metrics_token_file().empty()) return std::string();
  return ReadSecret(config.metrics_token_file(), "metrics_token_file");
}

absl::StatusOr<ServerSecurity> ServerCredentialsFromConfig(
    const v1::SecurityConfig& c, absl::string_view address,
    std::function<void(absl::string_view)> on_refused) {
  ServerSecurity out;
  if (c.tls_cert().empty() != c.tls_key().empty()) {
    return absl::InvalidArgumentError(
        "config: security.tls_cert and security.tls_key go together (one is empty)");
  }
  if (c.tls_cert().empty()) {
    if (c.require_client_cert() || !c.accepted_tokens_file().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: security.", c.require_client_cert() ? "require_client_cert" : "accepted_tokens_file",
          " needs TLS: set security.tls_cert and security.tls_key (tokens and certificates over "
          "plaintext would be readable by anyone on the path)"));
    }
    if (!IsLoopback(address)) {
      RHYTHM_LOG(Warning) << "security: listening on " << address
                          << " in plaintext without authentication: anyone who reaches it can "
                             "act as any actor (set security.tls_cert, tls_key and tls_ca)";
    }
    out.credentials = grpc::InsecureServerCredentials();
    return out;
  }
  if (c.require_client_cert() && c.tls_ca().empty()) {
    return absl::InvalidArgumentError(
        "config: security.require_client_cert = true needs security.tls_ca (the CA that signs "
        "the actors' certificates)");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  RHYTHM_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(c.tls_cert(), "tls_cert"));
  RHYTHM_ASSIGN_OR_RETURN(pair.private_key, ReadPem(c.tls_key(), "tls_key"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!c.tls_ca().empty()) {
    RHYTHM_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(c.tls_ca(), "tls_ca"));
  }
  // A certificate that is presented is always verified; a missing one is refused by the
  // authenticator (with a counted reason and a message) rather than by the handshake, which
  // would leave nothing to count.
  options.client_certificate_request =
      c.tls_ca().empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                         : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
  std::map<std::string, std::string> tokens;
  if (!c.accepted_tokens_file().empty()) {
    RHYTHM_ASSIGN_OR_RETURN(tokens, ReadAcceptedTokens(c.accepted_tokens_file()));
  }
  out.credentials = grpc::SslServerCredentials(options);
  out.tls = true;
  out.authenticates = c.require_client_cert() || !tokens.empty();
  if (out.authenticates) {
    out.credentials->SetAuthMetadataProcessor(std::make_shared<Authenticator>(
        std::move(tokens), c.require_client_cert(), std::move(on_refused)));
  }
  return out;
}

std::string CallerIdentity(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (!auth) return "";
  for (const auto& v : auth->FindPropertyValues(kIdentityProperty)) return std::string(v.data(), v.size());
  if (!auth->IsPeerAuthenticated()) return "";
  for (const auto& v : auth->FindPropertyValues(GRPC_X509_CN_PROPERTY_NAME)) {
    return std::string(v.data(), v.size());
  }
  return "";
}

absl::StatusOr<ClientSecurity> ClientCredentialsFromConfig(const v1::SecurityConfig& c,
                                                           absl::string_view target) {
  ClientSecurity out;
  if (c.tls_cert().empty() != c.tls_key().empty()) {
    return absl::InvalidArgumentError(
        "config: security.tls_cert and security.tls_key go together (one is empty)");
  }
  out.tls = !c.tls_ca().empty() || !c.tls_cert().empty();
  std::string token;
  if (!c.token_file().empty()) {
    RHYTHM_ASSIGN_OR_RETURN(token, ReadSecret(c.token_file(), "token_file"));
  } else if (const char* env = std::getenv("RHYTHM_TOKEN"); env && *env) {
    if (out.tls) {
      token = std::string(absl::StripAsciiWhitespace(env));
    } else {
      RHYTHM_LOG(Warning) << "security: RHYTHM_TOKEN is set but the channel to " << target
                          << " is plaintext: the token is not sent";
    }
  }
  if (!token.empty() && !out.tls) {
    return absl::InvalidArgumentError(
        "config: security.token_file needs TLS: set security.tls_ca (the CA that signed the "
        "learner's certificate) so the token is not sent in the clear");
  }
  if (!out.tls) {
    if (!IsLoopback(target)) {
      RHYTHM_LOG(Warning) << "security: connecting to " << target
                          << " in plaintext (set security.tls_ca for TLS)";
    }
    out.credentials = grpc::InsecureChannelCredentials();
    return out;
  }
  grpc::SslCredentialsOptions options;
  if (!c.tls_ca().empty()) {
    RHYTHM_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPem(c.tls_ca(), "tls_ca"));
  }
  if (!c.tls_cert().empty()) {
    RHYTHM_ASSIGN_OR_RETURN(options.pem_cert_chain, ReadPem(c.tls_cert(), "tls_cert"));
    RHYTHM_ASSIGN_OR_RETURN(options.pem_private_key, ReadPem(c.tls_key(), "tls_key"));
  }
  out.credentials = grpc::SslCredentials(options);
  if (!token.empty()) {
    out.credentials = grpc::CompositeChannelCredentials(
        out.credentials,
        grpc::MetadataCredentialsFromPlugin(std::make_unique<TokenPlugin>(std::move(token))));
  }
  out.server_name = c.tls_server_name();
  return out;
}

void AddSecurityArguments(const ClientSecurity& security, grpc::ChannelArguments& args) {
  if (!security.server_name.empty()) args.SetSslTargetNameOverride(security.server_name);
}

}  // namespace rhythm::common::security

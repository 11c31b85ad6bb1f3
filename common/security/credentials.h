// TLS, mutual TLS and bearer tokens for rhythm's gRPC listeners and clients, from the typed
// config's `security` section (proto/rhythm/v1/config.proto, SecurityConfig).
//
//   learner (server)                          actor (client)
//   tls_cert + tls_key ── TLS ────────────── tls_ca verifies the learner (tls_server_name)
//   tls_ca + require_client_cert ─ mTLS ──── tls_cert + tls_key (identity: the subject's CN)
//   accepted_tokens_file ─ bearer token ──── token_file or $RHYTHM_TOKEN (identity: its name)
//
// A caller's identity is the token's name when tokens are in use, otherwise its client
// certificate's common name; "" when the listener authenticates nobody. The learner binds each
// actor_id to the identity that registered it (learner/learner_server.cc); this file only
// authenticates. Tokens travel only over TLS (a token over plaintext is a config error), and
// no token's text is ever logged or put in an error message.
//
// I/O: reads the PEM and token files named by the config; nothing else.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/channel_arguments.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::common::security {

// Why a call was refused before it reached a handler: the `reason` label of
// rhythm_learner_auth_refused_total.
inline constexpr absl::string_view kNoCredentials = "no_credentials";
inline constexpr absl::string_view kBadToken = "bad_token";
inline constexpr absl::string_view kNoClientCertificate = "no_client_certificate";

// Whether `address` ("host:port") listens on or names the loopback interface only.
bool IsLoopback(absl::string_view address);

// The secret in `path` with surrounding whitespace removed. Errors name the file and the
// config key, never the contents; an empty file is an error.
absl::StatusOr<std::string> ReadSecret(const std::string& path, absl::string_view key);

// `identity token` pairs, one per line; blank lines and lines starting with '#' are skipped.
// Errors name the file and the line number. Two identities may not share a token.
absl::StatusOr<std::map<std::string, std::string>> ReadAcceptedTokens(const std::string& path);

// The /metrics bearer token from security.metrics_token_file ("" when unset).
absl::StatusOr<std::string> MetricsToken(const v1::SecurityConfig& config);

// What a listener needs: its credentials and whether it authenticates callers.
struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  bool tls = false;
  // Callers must prove an identity (client certificates are required, or tokens accepted).
  bool authenticates = false;
};

// Credentials for a listener on `address`. Plaintext when tls_cert is empty (with a warning
// logged when the address is not loopback). `on_refused(reason)` is called for every call
// refused with UNAUTHENTICATED (from gRPC's auth threads). INVALID_ARGUMENT naming the key
// for an unreadable file, a key without a certificate, require_client_cert without tls_ca, or
// tokens over plaintext.
absl::StatusOr<ServerSecurity> ServerCredentialsFromConfig(
    const v1::SecurityConfig& config, absl::string_view address,
    std::function<void(absl::string_view reason)> on_refused = nullptr);

// The authenticated identity of the caller of `context` ("" when the listener authenticates
// nobody).
std::string CallerIdentity(const grpc::ServerContext& context);

// What a client needs to reach `target` ("host:port").
struct ClientSecurity {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // The name the server's certificate must carry, when not the target's host
  // (security.tls_server_name).
  std::string server_name;
  bool tls = false;
};

// Plaintext when neither tls_ca nor tls_cert is set and no token is configured; otherwise TLS
// (verifying the server against tls_ca or the system roots), with the client certificate when
// tls_cert is set and the bearer token from token_file or $RHYTHM_TOKEN. A token without TLS
// is INVALID_ARGUMENT.
absl::StatusOr<ClientSecurity> ClientCredentialsFromConfig(const v1::SecurityConfig& config,
                                                           absl::string_view target);

// Sets what `security` needs on a channel's arguments (the expected server name).
void AddSecurityArguments(const ClientSecurity& security, grpc::ChannelArguments& args);

}  // namespace rhythm::common::security

// common/security against real gRPC over loopback, with certificates made by openssl in the
// test: who gets in, with what identity, and the config errors.
#include "common/security/credentials.h"

#include <atomic>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/security/test_certs.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "rhythm/v1/learner_service.grpc.pb.h"

namespace rhythm::common::security {
namespace {

// Answers Register with the caller's identity in learner_session.
class EchoIdentity final : public v1::Learner::Service {
  grpc::Status Register(grpc::ServerContext* ctx, const v1::RegisterRequest*,
                        v1::RegisterResponse* resp) override {
    resp->set_learner_session(absl::StrCat("identity=", CallerIdentity(*ctx)));
    return grpc::Status::OK;
  }
};

std::string Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

class Security : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<TestCerts> c =
        MakeTestCerts(::testing::TempDir() + "/security_certs", {"actor-a", "actor-b"});
    ASSERT_TRUE(c.ok()) << c.status();
    certs_ = new TestCerts(*c);
  }

  // Starts the echo server with `config`; refusals are counted in refused_.
  void Serve(const v1::SecurityConfig& config) {
    absl::StatusOr<ServerSecurity> s = ServerCredentialsFromConfig(
        config, "127.0.0.1:0", [this](absl::string_view reason) {
          if (reason == kNoCredentials) ++no_credentials_;
          if (reason == kBadToken) ++bad_token_;
          if (reason == kNoClientCertificate) ++no_certificate_;
        });
    ASSERT_TRUE(s.ok()) << s.status();
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", s->credentials, &port_);
    b.RegisterService(&service_);
    server_ = b.BuildAndStart();
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  // Calls Register as a client configured by `config`; returns the status and the identity.
  grpc::Status Call(const v1::SecurityConfig& config, std::string* identity = nullptr) {
    const std::string target = absl::StrCat("localhost:", port_);
    absl::StatusOr<ClientSecurity> cs = ClientCredentialsFromConfig(config, target);
    EXPECT_TRUE(cs.ok()) << cs.status();
    if (!cs.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "client config");
    grpc::ChannelArguments args;
    AddSecurityArguments(*cs, args);
    auto stub = v1::Learner::NewStub(grpc::CreateCustomChannel(target, cs->credentials, args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::RegisterRequest req;
    v1::RegisterResponse resp;
    grpc::Status status = stub->Register(&ctx, req, &resp);
    if (identity) *identity = resp.learner_session();
    return status;
  }

  v1::SecurityConfig ServerTls() const {
    v1::SecurityConfig c;
    c.set_tls_cert(certs_->server_cert);
    c.set_tls_key(certs_->server_key);
    return c;
  }
  v1::SecurityConfig ClientTls(const std::string& name = "") const {
    v1::SecurityConfig c;
    c.set_tls_ca(certs_->ca);
    if (!name.empty()) {
      c.set_tls_cert(certs_->client_cert(name));
      c.set_tls_key(certs_->client_key(name));
    }
    return c;
  }

  static TestCerts* certs_;
  EchoIdentity service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<int> no_credentials_{0}, bad_token_{0}, no_certificate_{0};
};
TestCerts* Security::certs_ = nullptr;

TEST_F(Security, PlaintextServesEveryoneWithNoIdentity) {
  Serve(v1::SecurityConfig());
  std::string identity;
  ASSERT_TRUE(Call(v1::SecurityConfig(), &identity).ok());
  EXPECT_EQ(identity, "identity=");
}

TEST_F(Security, TlsWithoutClientCertificatesEncryptsButNamesNobody) {
  Serve(ServerTls());
  std::string identity;
  ASSERT_TRUE(Call(ClientTls(), &identity).ok());
  EXPECT_EQ(identity, "identity=");
  // A plaintext client cannot talk to a TLS listener.
  EXPECT_EQ(Call(v1::SecurityConfig()).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA refuses the server.
  v1::SecurityConfig wrong_ca;
  wrong_ca.set_tls_ca(certs_->rogue_ca);
  EXPECT_EQ(Call(wrong_ca).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Security, MutualTlsNamesTheCallerByItsCertificate) {
  v1::SecurityConfig c = ServerTls();
  c.set_tls_ca(certs_->ca);
  c.set_require_client_cert(true);
  Serve(c);
  std::string identity;
  ASSERT_TRUE(Call(ClientTls("actor-a"), &identity).ok());
  EXPECT_EQ(identity, "identity=actor-a");
  ASSERT_TRUE(Call(ClientTls("actor-b"), &identity).ok());
  EXPECT_EQ(identity, "identity=actor-b");
  // No certificate: refused by the authenticator, with a reason that is counted.
  grpc::Status none = Call(ClientTls());
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
  EXPECT_EQ(no_certificate_.load(), 1);
  // A certificate from a CA the server does not trust fails the handshake.
  v1::SecurityConfig rogue = ClientTls();
  rogue.set_tls_cert(certs_->rogue_cert);
  rogue.set_tls_key(certs_->rogue_key);
  EXPECT_EQ(Call(rogue).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(Security, BearerTokensNameTheCallerAndStayOutOfMessages) {
  const std::string dir = ::testing::TempDir();
  v1::SecurityConfig c = ServerTls();
  c.set_accepted_tokens_file(Write(dir + "/accepted", "# actors\nactors s3cret-one\n\nops  s3cret-two\n"));
  Serve(c);
  v1::SecurityConfig client = ClientTls();
  client.set_token_file(Write(dir + "/token-one", "s3cret-one\n"));
  std::string identity;
  ASSERT_TRUE(Call(client, &identity).ok());
  EXPECT_EQ(identity, "identity=actors");
  client.set_token_file(Write(dir + "/token-two", "  s3cret-two"));
  ASSERT_TRUE(Call(client, &identity).ok());
  EXPECT_EQ(identity, "identity=ops");

  client.set_token_file(Write(dir + "/token-bad", "s3cret-three"));
  grpc::Status bad = Call(client);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(bad.error_message().find("s3cret"), std::string::npos) << bad.error_message();
  EXPECT_EQ(bad_token_.load(), 1);
  grpc::Status none = Call(ClientTls());
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(no_credentials_.load(), 1);
}

TEST_F(Security, ConfigErrorsNameTheKey) {
  const std::string dir = ::testing::TempDir();
  v1::SecurityConfig c;
  c.set_accepted_tokens_file(Write(dir + "/t", "a b\n"));
  absl::StatusOr<ServerSecurity> s = ServerCredentialsFromConfig(c, "0.0.0.0:1");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("accepted_tokens_file needs TLS"), std::string::npos);

  c = ServerTls();
  c.set_require_client_cert(true);
  s = ServerCredentialsFromConfig(c, "0.0.0.0:1");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("tls_ca"), std::string::npos) << s.status();

  c = ServerTls();
  c.set_tls_key(Write(dir + "/not-pem", "hello"));
  s = ServerCredentialsFromConfig(c, "0.0.0.0:1");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("security.tls_key"), std::string::npos) << s.status();
  EXPECT_NE(s.status().message().find("not a PEM file"), std::string::npos) << s.status();

  c.clear_tls_key();
  s = ServerCredentialsFromConfig(c, "0.0.0.0:1");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("go together"), std::string::npos) << s.status();

  v1::SecurityConfig client;
  client.set_token_file(Write(dir + "/tok", "abc"));
  absl::StatusOr<ClientSecurity> cs = ClientCredentialsFromConfig(client, "learner:50051");
  ASSERT_FALSE(cs.ok());
  EXPECT_NE(cs.status().message().find("token_file needs TLS"), std::string::npos);
  client.set_token_file(Write(dir + "/empty", "\n"));
  client.set_tls_ca(certs_->ca);
  cs = ClientCredentialsFromConfig(client, "learner:50051");
  ASSERT_FALSE(cs.ok());
  EXPECT_NE(cs.status().message().find("the file is empty"), std::string::npos);
}

TEST(AcceptedTokens, MalformedLinesAreNamedByNumberNotContent) {
  const std::string dir = ::testing::TempDir();
  absl::StatusOr<std::map<std::string, std::string>> t =
      ReadAcceptedTokens(Write(dir + "/tok1", "a one\nb two extra-secret\n"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 2"), std::string::npos) << t.status();
  EXPECT_EQ(t.status().message().find("extra-secret"), std::string::npos);
  t = ReadAcceptedTokens(Write(dir + "/tok2", "a same\nb same\n"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("repeats"), std::string::npos);
  t = ReadAcceptedTokens(Write(dir + "/tok3", "# nothing\n"));
  EXPECT_FALSE(t.ok());
  t = ReadAcceptedTokens(dir + "/missing");
  EXPECT_FALSE(t.ok());
  t = ReadAcceptedTokens(Write(dir + "/tok4", "a one\n\tb\ttwo\n"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)["one"], "a");
  EXPECT_EQ((*t)["two"], "b");
}

TEST(Loopback, Addresses) {
  EXPECT_TRUE(IsLoopback("localhost:50051"));
  EXPECT_TRUE(IsLoopback("127.0.0.1:0"));
  EXPECT_TRUE(IsLoopback("[::1]:9464"));
  EXPECT_FALSE(IsLoopback("0.0.0.0:50051"));
  EXPECT_FALSE(IsLoopback("[::]:50051"));
  EXPECT_FALSE(IsLoopback("learner:50051"));
  EXPECT_FALSE(IsLoopback("10.0.0.1:50051"));
}

}  // namespace
}  // namespace rhythm::common::security

#pragma once

#include <optional>
#include <string>
#include <string_view>

typedef struct ssl_ctx_st SSL_CTX;

namespace wsgw::daemon {

/// A certificate and its private key, PEM files (config.yml's tls and control_tls).
struct TlsFiles {
    std::string cert;
    std::string key;

    friend bool operator==(const TlsFiles &, const TlsFiles &) = default;
};

/// What a server certificate says about itself, for the start-up log.
struct TlsCertificateInfo {
    std::string subject;  ///< e.g. "CN=localhost"
    std::string notAfter; ///< e.g. "2026-11-29 12:00:00 UTC"
    bool expired = false;
};

/// Loads `files` into `ctx` the way the WebSocket and control servers use them: the certificate
/// chain (PEM), then the private key (PEM, not encrypted: there is no one to ask for a
/// passphrase, so an encrypted key fails instead of prompting), then checks that the key belongs
/// to the certificate. `what` names the config key in messages ("tls", "control_tls").
///
/// Returns what the certificate says, or nullopt with a message that names the file and
/// OpenSSL's reason ("tls.cert: cannot load '/etc/wsgw/tls.crt' as a PEM certificate: no start
/// line"). Thread-safe for distinct contexts.
[[nodiscard]] std::optional<TlsCertificateInfo> loadTlsFiles(SSL_CTX &ctx, const TlsFiles &files,
                                                             std::string_view what, std::string *error);

/// loadTlsFiles() into a throwaway server context: whether a server could use `files`.
/// Thread-safe.
[[nodiscard]] std::optional<TlsCertificateInfo> checkTlsFiles(const TlsFiles &files, std::string_view what,
                                                              std::string *error);

/// Logs the certificate a server is about to use ("tls: certificate CN=localhost, valid until
/// ..."), as a warning if it has expired (clients will refuse it).
void logTlsCertificate(std::string_view what, const TlsFiles &files, const TlsCertificateInfo &info);

} // namespace wsgw::daemon

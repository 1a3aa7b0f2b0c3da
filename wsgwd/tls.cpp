#include "tls.h"

#include <cstdio>
#include <ctime>
#include <memory>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

namespace wsgw::daemon {

namespace {

// The reason of the earliest error on this thread's OpenSSL queue (the root cause; later entries
// only say which call gave up), and the queue cleared.
std::string takeOpensslReason(unsigned long *code = nullptr) {
    unsigned long first = ERR_get_error();
    ERR_clear_error();
    if (code) *code = first;
    if (first == 0) return "unknown error";
    if (const char *reason = ERR_reason_error_string(first)) return reason;
    char buf[256];
    ERR_error_string_n(first, buf, sizeof buf);
    return buf;
}

// Whether a PEM file holds an encrypted private key (for a hint in the message).
bool looksEncrypted(const std::string &path) {
    std::unique_ptr<std::FILE, int (*)(std::FILE *)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) return false;
    char buf[4096];
    std::size_t n = std::fread(buf, 1, sizeof buf, f.get());
    return std::string_view(buf, n).find("ENCRYPTED") != std::string_view::npos;
}

// OpenSSL's default asks on the terminal; a daemon must fail instead.
int noPassphrase(char *, int, int, void *) {
    return 0;
}

std::string subjectOf(X509 *cert) {
    std::unique_ptr<BIO, int (*)(BIO *)> bio(BIO_new(BIO_s_mem()), BIO_free);
    if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0)
        return "?";
    char *data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string("(empty subject)");
}

std::string timeText(const ASN1_TIME *t) {
    std::tm tm{};
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return "?";
    char buf[64];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

} // namespace

std::optional<TlsCertificateInfo> loadTlsFiles(SSL_CTX &ctx, const TlsFiles &files, std::string_view what,
                                               std::string *error) {
    auto fail = [&](std::string message) -> std::optional<TlsCertificateInfo> {
        if (error) *error = std::move(message);
        return std::nullopt;
    };
    const std::string key(what);
    ERR_clear_error();
    SSL_CTX_set_default_passwd_cb(&ctx, noPassphrase);
    if (SSL_CTX_use_certificate_chain_file(&ctx, files.cert.c_str()) != 1)
        return fail(key + ".cert: cannot load '" + files.cert + "' as a PEM certificate: " +
                    takeOpensslReason() + " (expected -----BEGIN CERTIFICATE-----)");
    unsigned long code = 0;
    if (SSL_CTX_use_PrivateKey_file(&ctx, files.key.c_str(), SSL_FILETYPE_PEM) != 1) {
        std::string reason = takeOpensslReason(&code);
        if (ERR_GET_LIB(code) == ERR_LIB_X509 && ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
            return fail(key + ".key: '" + files.key + "' is not the private key of the certificate '" +
                        files.cert + "'");
#ifdef ERR_LIB_OSSL_DECODER
        // OpenSSL 3 says only "unsupported" when nothing in the file decodes as a key.
        if (ERR_GET_LIB(code) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(code) == ERR_R_UNSUPPORTED)
            reason = "no private key that OpenSSL can decode in it";
#endif
        std::string hint =
            looksEncrypted(files.key)
                ? " (the key is encrypted and wsgwd cannot ask for a passphrase: decrypt it with "
                  "'openssl pkey -in KEY -out KEY.plain')"
                : " (expected -----BEGIN PRIVATE KEY----- or similar)";
        return fail(key + ".key: cannot load '" + files.key + "' as a PEM private key: " + reason + hint);
    }
    if (SSL_CTX_check_private_key(&ctx) != 1) {
        ERR_clear_error();
        return fail(key + ".key: '" + files.key + "' is not the private key of the certificate '" +
                    files.cert + "'");
    }
    TlsCertificateInfo info;
    if (X509 *cert = SSL_CTX_get0_certificate(&ctx)) {
        info.subject = subjectOf(cert);
        info.notAfter = timeText(X509_get0_notAfter(cert));
        info.expired = X509_cmp_current_time(X509_get0_notAfter(cert)) < 0;
    }
    ERR_clear_error();
    return info;
}

std::optional<TlsCertificateInfo> checkTlsFiles(const TlsFiles &files, std::string_view what,
                                                std::string *error) {
    std::unique_ptr<SSL_CTX, void (*)(SSL_CTX *)> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    if (!ctx) {
        if (error) *error = std::string(what) + ": cannot create a TLS context: " + takeOpensslReason();
        return std::nullopt;
    }
    return loadTlsFiles(*ctx, files, what, error);
}

void logTlsCertificate(std::string_view what, const TlsFiles &files, const TlsCertificateInfo &info) {
    if (info.expired)
        spdlog::warn("{}: the certificate {} ({}) expired on {}: clients will refuse it", what, files.cert,
                     info.subject, info.notAfter);
    else
        spdlog::info("{}: certificate {} ({}), valid until {}", what, files.cert, info.subject,
                     info.notAfter);
}

} // namespace wsgw::daemon

#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace wsgw::daemon {

/// Bounds on one HTTP/1.1 request, checked while it arrives.
struct FramingLimits {
    std::size_t maxRequestLine = 8 * 1024;  ///< method, target and version; 414 beyond
    std::size_t maxHeaderBytes = 16 * 1024; ///< request line and header fields; 431 beyond
    std::size_t maxBodyBytes = 1024 * 1024; ///< the body (decoded, when chunked); 413 beyond
};

/// What the request line says, once the header section is complete.
struct RequestHead {
    std::string method;
    std::string path; ///< the target up to '?' or '#', as sent (not percent-decoded)
    bool expectContinue = false; ///< "Expect: 100-continue" and a body to come
};

/// Finds where one HTTP/1.1 request ends in the bytes received so far, without copying them:
/// the request line and header fields, then the body framed by Content-Length or by chunked
/// Transfer-Encoding (RFC 9112 section 6). It validates what framing depends on and only that;
/// the complete request goes to an HTTP parser (cpp-httplib) afterwards.
///
/// What it refuses, with the status to answer:
///   400  malformed request line, header line without a colon or with space before it, a line
///        ending in a bare LF, obsolete line folding, a bad or conflicting Content-Length,
///        Content-Length together with Transfer-Encoding (request smuggling), a bad chunk,
///        chunked trailer fields (cpp-httplib cannot read them)
///   413  Content-Length or the decoded chunked body over maxBodyBytes, or chunked framing
///        over twice that plus 64 KiB (tiny chunks with long extensions)
///   414  request line over maxRequestLine
///   415  a Content-Encoding other than identity (cpp-httplib would inflate it past every bound)
///   431  header section over maxHeaderBytes
///   501  a Transfer-Encoding other than chunked
///   505  an HTTP version other than 1.0 and 1.1
/// Empty lines before a request are skipped (RFC 9112 section 2.2).
///
/// Incremental: each scan() continues where the last one stopped, so a request that arrives a
/// byte at a time costs linear time. Thread-compatible; pure (no I/O).
class RequestFramer {
public:
    enum class Status {
        NeedMore, ///< not complete yet, nothing wrong so far
        Complete, ///< length() bytes hold the request
        Invalid,  ///< errorStatus() and error() say why; the connection cannot be reused
    };

    explicit RequestFramer(FramingLimits limits = {}) : limits_(limits) {}

    /// Scans `input`: everything received since the request began, that is, the bytes given to
    /// the previous call (unchanged) and perhaps more. After Complete or Invalid, further calls
    /// return the same answer until reset().
    Status scan(std::string_view input);
    /// Forgets the request, for the next one on the connection (its bytes start at 0 again).
    void reset();

    /// true once any byte of a request line has arrived (empty lines before it do not count).
    bool started() const noexcept { return phase_ != Phase::Skip; }
    /// true once the header section is complete; head() is valid from then on.
    bool headComplete() const noexcept { return phase_ > Phase::Head && phase_ != Phase::Error; }
    const RequestHead &head() const noexcept { return head_; }
    /// Complete: the request's bytes are input[begin(), length()); input[0, begin()) were empty lines.
    std::size_t begin() const noexcept { return start_; }
    std::size_t length() const noexcept { return end_; }
    /// Invalid: the status to answer (400, 413, 414, 415, 431, 501, 505) and why, for a person.
    int errorStatus() const noexcept { return errorStatus_; }
    const std::string &error() const noexcept { return error_; }

private:
    enum class Phase { Skip, Head, Length, ChunkSize, ChunkData, ChunkEnd, Trailer, Done, Error };

    Status fail(int status, std::string why);
    Status parseHead(std::string_view head);
    Status scanHead(std::string_view input);
    Status scanChunks(std::string_view input);

    FramingLimits limits_;
    Phase phase_ = Phase::Skip;
    std::size_t pos_ = 0;   ///< scanned up to here
    std::size_t start_ = 0; ///< the request line begins here
    std::size_t end_ = 0;   ///< Complete: the request ends here
    std::size_t firstLineEnd_ = 0; ///< 0 until the request line's LF has been seen
    std::size_t bodyStart_ = 0;
    std::size_t bodyLeft_ = 0;   ///< Length: bytes of the body still to come; ChunkData: of the chunk
    std::size_t bodyBytes_ = 0;  ///< chunked: decoded bytes so far
    RequestHead head_;
    int errorStatus_ = 0;
    std::string error_;
};

} // namespace wsgw::daemon

#pragma once

// Shared pieces of the load tools (wsgw-bench, raw-fanout, grip-origin): the self-checking
// payload, the WebSocket handshake key, a latency histogram, small socket and /proc helpers.
//
// Everything here is thread-compatible and allocation-free on the per-message paths
// (writePayload, readPayload, Histogram::record).

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsgw::bench {

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the machine, so a timestamp
/// written by a publisher can be compared with the time a client reads it.
std::int64_t monoNs() noexcept;

// ---- The payload ----------------------------------------------------------------------------
//
// Every message the tools send is ASCII (so it travels as text, fits into JSON without escaping
// and survives every server), of a chosen size, and checks itself:
//
//   offset  0  "wb"
//           2  stream   2 hex digits  (publisher connection, or 0)
//           4  group    4 hex digits  (kAllGroup for a broadcast)
//           8  seq      8 hex digits  (per stream and group: the receiver checks the order)
//          16  pid     12 hex digits  (publish index, unique in a run: delivery accounting)
//          28  ts      16 hex digits  (monoNs() when published: latency)
//          44  filler  letters derived from pid
//      size-8  FNV-1a 32 of everything before it, 8 hex digits

constexpr std::uint32_t kAllGroup = 0xffff;
constexpr std::size_t kMinPayload = 52;
constexpr std::size_t kMaxPayload = 65536;

struct PayloadFields {
    std::uint32_t stream = 0;
    std::uint32_t group = kAllGroup;
    std::uint32_t seq = 0;
    std::uint64_t pid = 0;
    std::int64_t ts = 0;
};

/// Writes exactly `size` bytes (kMinPayload <= size <= kMaxPayload) to `out`.
void writePayload(char *out, std::size_t size, const PayloadFields &f) noexcept;

/// Parses and verifies a payload; false if it is malformed or its checksum does not match.
bool readPayload(const char *p, std::size_t n, PayloadFields *out) noexcept;

// ---- WebSocket --------------------------------------------------------------------------------

/// A fresh random Sec-WebSocket-Key (base64 of 16 random bytes).
std::string websocketKey();
/// Sec-WebSocket-Accept for `key`: base64(SHA-1(key + the RFC 6455 GUID)).
std::string websocketAccept(std::string_view key);

/// A decoded frame header (RFC 6455 section 5.2).
struct FrameHeader {
    bool fin = false;
    bool rsv1 = false; ///< permessage-deflate: the message is compressed
    std::uint8_t opcode = 0;
    bool masked = false;
    std::uint8_t mask[4] = {};
    std::uint64_t length = 0;
    std::size_t headerSize = 0;
};

/// Decodes the header at `p` (n bytes available). Returns false if more bytes are needed.
bool parseFrameHeader(const unsigned char *p, std::size_t n, FrameHeader *h) noexcept;

/// Writes a frame header for `length` payload bytes; returns its size (2..14).
std::size_t writeFrameHeader(unsigned char *out, std::uint8_t opcode, std::uint64_t length, bool fin,
                             const unsigned char *mask) noexcept;

/// XORs `n` bytes with the 4-byte mask, starting at mask offset `phase`.
void applyMask(unsigned char *p, std::size_t n, const unsigned char mask[4], std::size_t phase = 0) noexcept;

// ---- HTTP bits --------------------------------------------------------------------------------

/// The value of header `name` (case-insensitive) in an HTTP head, or nullopt.
std::optional<std::string_view> headerValue(std::string_view head, std::string_view name);

/// A parsed "HOST:PORT"; host defaults to 127.0.0.1.
struct HostPort {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
};
std::optional<HostPort> parseHostPort(std::string_view s);

/// A parsed ws:// or http:// URL (no TLS): host, port, path with query.
struct Url {
    std::string scheme;
    HostPort addr;
    std::string path = "/";
};
std::optional<Url> parseUrl(std::string_view s);

/// A blocking GET with "Connection: close", bounded by `timeoutMs` in all. Returns the body of a
/// 2xx answer, or nullopt (and why in *error).
std::optional<std::string> httpGet(const Url &url, int timeoutMs, std::string *error);

/// The number right after the first occurrence of `pattern` in `text` (spaces skipped), or
/// nullopt. For counters in status pages: "total published messages: 12", "x{sink=\"null\"} 12".
/// A pattern that ends inside a Prometheus label set, `x{sink="null"`, matches the first sample
/// whose labels begin with those ("x{sink=\"null\",backend=\"event_log\"} 12" as well).
std::optional<double> numberAfter(std::string_view text, std::string_view pattern);

// ---- Sockets ----------------------------------------------------------------------------------

/// A listening TCP socket (SO_REUSEADDR, non-blocking, backlog `backlog`); -1 on error.
int listenTcp(const HostPort &addr, int backlog, std::string *error);
/// Sets TCP_NODELAY and O_NONBLOCK.
void tuneSocket(int fd) noexcept;
/// Writes all of `data` to a blocking-or-not socket, waiting with poll() for at most
/// `timeoutMs` in all; false on error or timeout.
bool writeAll(int fd, const char *data, std::size_t n, int timeoutMs) noexcept;

// ---- Measurement ------------------------------------------------------------------------------

/// Log-linear histogram of non-negative nanosecond values: 64 sub-buckets per power of two
/// (under 1.6% error), fixed size, no allocation when recording.
class Histogram {
public:
    void record(std::int64_t ns) noexcept;
    void merge(const Histogram &o) noexcept;
    void clear() noexcept { *this = Histogram(); }
    std::uint64_t count() const noexcept { return count_; }
    std::int64_t min() const noexcept { return count_ ? min_ : 0; }
    std::int64_t max() const noexcept { return max_; }
    /// The value at quantile q (0..1): an upper bound of its bucket, clamped to max().
    std::int64_t quantile(double q) const noexcept;

private:
    static constexpr int kSub = 64;
    static constexpr int kBuckets = 64 * 40;
    std::array<std::uint64_t, kBuckets> buckets_{};
    std::uint64_t count_ = 0;
    std::int64_t min_ = INT64_MAX;
    std::int64_t max_ = 0;
};

/// utime + stime of a process (all its threads) in nanoseconds; nullopt if it is gone.
std::optional<std::int64_t> processCpuNs(int pid);
/// Resident set size of a process in bytes (VmRSS); nullopt if it is gone.
std::optional<std::int64_t> processRssBytes(int pid);
/// This process's own utime + stime in nanoseconds.
std::int64_t selfCpuNs() noexcept;

/// "12.3k", "4.56M": a count for people.
std::string humanCount(double v);
/// "850 µs", "12.3 ms": a duration for people.
std::string humanNs(double ns);

} // namespace wsgw::bench

#include "http_framing.h"

#include <algorithm>
#include <cctype>
#include <cstdint>

namespace wsgw::daemon {

namespace {

// A chunk-size line (size, extensions, CRLF) longer than this is refused.
constexpr std::size_t kMaxChunkLine = 1024;
// Chunked framing may add this much to twice the body limit before it counts as too large.
constexpr std::size_t kChunkOverheadSlack = 64 * 1024;

bool isTokenChar(unsigned char c) {
    // RFC 9110 tchar
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool isToken(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return isTokenChar(static_cast<unsigned char>(c)); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

bool equalsNoCase(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// Calls fn(item) for each non-empty, trimmed item of a comma-separated list.
template <class Fn> void forEachItem(std::string_view list, Fn fn) {
    while (!list.empty()) {
        auto comma = list.find(',');
        std::string_view item = trim(list.substr(0, comma));
        if (!item.empty()) fn(item);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
}

int hexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string shown(std::string_view s) {
    constexpr std::size_t kMax = 40;
    std::string out;
    for (char c : s.substr(0, kMax)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
    return s.size() > kMax ? out + "..." : out;
}

} // namespace

void RequestFramer::reset() {
    FramingLimits limits = limits_;
    *this = RequestFramer(limits);
}

RequestFramer::Status RequestFramer::fail(int status, std::string why) {
    phase_ = Phase::Error;
    errorStatus_ = status;
    error_ = std::move(why);
    return Status::Invalid;
}

RequestFramer::Status RequestFramer::scan(std::string_view input) {
    for (;;) {
        switch (phase_) {
        case Phase::Skip:
            // Empty lines before the request line.
            while (pos_ < input.size()) {
                if (input[pos_] == '\n') {
                    ++pos_;
                } else if (input[pos_] == '\r') {
                    if (pos_ + 1 == input.size()) return Status::NeedMore;
                    if (input[pos_ + 1] != '\n') return fail(400, "malformed request: a stray CR before the request line");
                    pos_ += 2;
                } else {
                    break;
                }
                start_ = pos_;
                if (start_ > limits_.maxHeaderBytes) return fail(400, "malformed request: only empty lines");
            }
            if (pos_ == input.size()) return Status::NeedMore;
            phase_ = Phase::Head;
            break;
        case Phase::Head:
            if (Status s = scanHead(input); phase_ == Phase::Head || s != Status::NeedMore) return s;
            break;
        case Phase::Length: {
            std::size_t have = input.size() - pos_;
            if (have < bodyLeft_) {
                pos_ = input.size();
                bodyLeft_ -= have;
                return Status::NeedMore;
            }
            pos_ += bodyLeft_;
            bodyLeft_ = 0;
            end_ = pos_;
            phase_ = Phase::Done;
            break;
        }
        case Phase::ChunkSize:
        case Phase::ChunkData:
        case Phase::ChunkEnd:
        case Phase::Trailer:
            return scanChunks(input);
        case Phase::Done:
            return Status::Complete;
        case Phase::Error:
            return Status::Invalid;
        }
    }
}

RequestFramer::Status RequestFramer::scanHead(std::string_view input) {
    while (pos_ < input.size()) {
        auto nl = input.find('\n', pos_);
        if (nl == std::string_view::npos) break;
        if (nl == pos_ || input[nl - 1] != '\r') return fail(400, "malformed request: lines must end with CRLF");
        if (firstLineEnd_ == 0) {
            firstLineEnd_ = nl + 1;
            if (firstLineEnd_ - start_ - 2 > limits_.maxRequestLine)
                return fail(414, "request line too long (the limit is " + std::to_string(limits_.maxRequestLine) +
                                     " bytes)");
        }
        bool emptyLine = nl == pos_ + 1;
        pos_ = nl + 1;
        if (pos_ - start_ > limits_.maxHeaderBytes)
            return fail(431, "request header fields too large (the limit is " + std::to_string(limits_.maxHeaderBytes) +
                                 " bytes)");
        if (emptyLine && pos_ > firstLineEnd_) return parseHead(input.substr(start_, pos_ - start_));
    }
    // Incomplete: is what has come already too much?
    if (firstLineEnd_ == 0 && input.size() - start_ > limits_.maxRequestLine + 2)
        return fail(414, "request line too long (the limit is " + std::to_string(limits_.maxRequestLine) + " bytes)");
    if (input.size() - start_ > limits_.maxHeaderBytes)
        return fail(431, "request header fields too large (the limit is " + std::to_string(limits_.maxHeaderBytes) +
                             " bytes)");
    return Status::NeedMore;
}

RequestFramer::Status RequestFramer::parseHead(std::string_view head) {
    // The request line: method SP target SP version.
    std::string_view line = head.substr(0, head.find("\r\n"));
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
        return fail(400, "malformed request line '" + shown(line) + "': expected METHOD TARGET HTTP/1.1");
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (!isToken(method) || target.empty() ||
        std::any_of(target.begin(), target.end(), [](unsigned char c) { return c < 0x21 || c == 0x7f; }))
        return fail(400, "malformed request line '" + shown(line) + "': expected METHOD TARGET HTTP/1.1");
    if (version != "HTTP/1.1" && version != "HTTP/1.0") {
        if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && std::isdigit(static_cast<unsigned char>(version[5])) &&
            version[6] == '.' && std::isdigit(static_cast<unsigned char>(version[7])))
            return fail(505, "HTTP version " + std::string(version.substr(5)) + " is not supported: use HTTP/1.1");
        return fail(400, "malformed request line '" + shown(line) + "': expected METHOD TARGET HTTP/1.1");
    }
    head_.method = std::string(method);
    head_.path = std::string(target.substr(0, target.find_first_of("?#")));

    // The header fields: only what framing depends on is interpreted.
    bool hasLength = false, chunked = false, expect = false;
    std::uint64_t length = 0;
    std::string codings;
    std::size_t at = line.size() + 2;
    while (at + 2 < head.size()) {
        auto eol = head.find("\r\n", at);
        std::string_view field = head.substr(at, eol - at);
        at = eol + 2;
        if (field.front() == ' ' || field.front() == '\t')
            return fail(400, "malformed header: obsolete line folding (a line starting with a space)");
        auto colon = field.find(':');
        if (colon == std::string_view::npos || !isToken(field.substr(0, colon)))
            return fail(400, "malformed header line '" + shown(field) + "': expected 'Name: value'");
        std::string_view name = field.substr(0, colon);
        std::string_view value = trim(field.substr(colon + 1));
        if (equalsNoCase(name, "Content-Length")) {
            if (value.empty() || value.size() > 18 ||
                !std::all_of(value.begin(), value.end(), [](unsigned char c) { return std::isdigit(c); }))
                return fail(400, "malformed Content-Length '" + shown(value) + "'");
            std::uint64_t n = std::stoull(std::string(value));
            if (hasLength && n != length) return fail(400, "conflicting Content-Length headers");
            hasLength = true;
            length = n;
        } else if (equalsNoCase(name, "Transfer-Encoding")) {
            forEachItem(value, [&](std::string_view item) {
                if (!codings.empty()) codings += ", ";
                codings += std::string(item);
            });
        } else if (equalsNoCase(name, "Content-Encoding")) {
            std::string unsupported;
            forEachItem(value, [&](std::string_view item) {
                if (!equalsNoCase(item, "identity") && unsupported.empty()) unsupported = std::string(item);
            });
            if (!unsupported.empty())
                return fail(415, "Content-Encoding '" + shown(unsupported) + "' is not supported: send the body uncompressed");
        } else if (equalsNoCase(name, "Expect")) {
            expect = equalsNoCase(value, "100-continue");
        }
    }
    if (!codings.empty()) {
        if (!equalsNoCase(codings, "chunked"))
            return fail(501, "Transfer-Encoding '" + shown(codings) + "' is not supported (only chunked)");
        if (hasLength) return fail(400, "a request must not have both Content-Length and Transfer-Encoding");
        chunked = true;
    }
    if (hasLength && length > limits_.maxBodyBytes)
        return fail(413, "request body too large (the limit is " + std::to_string(limits_.maxBodyBytes) + " bytes)");

    bodyStart_ = pos_;
    head_.expectContinue = expect && (chunked || length > 0);
    if (chunked) {
        phase_ = Phase::ChunkSize;
    } else if (length > 0) {
        phase_ = Phase::Length;
        bodyLeft_ = static_cast<std::size_t>(length);
    } else {
        end_ = pos_;
        phase_ = Phase::Done;
    }
    return Status::NeedMore; // the caller's loop goes on with the body
}

RequestFramer::Status RequestFramer::scanChunks(std::string_view input) {
    const std::size_t maxFraming = 2 * limits_.maxBodyBytes + kChunkOverheadSlack;
    auto tooLarge = [&] {
        return fail(413, "request body too large (the limit is " + std::to_string(limits_.maxBodyBytes) + " bytes)");
    };
    for (;;) {
        if (pos_ - bodyStart_ > maxFraming) return tooLarge();
        switch (phase_) {
        case Phase::ChunkSize: {
            auto nl = input.find('\n', pos_);
            if (nl == std::string_view::npos) {
                if (input.size() - pos_ > kMaxChunkLine) return fail(400, "malformed chunked body: chunk size line too long");
                return Status::NeedMore;
            }
            if (nl - pos_ > kMaxChunkLine) return fail(400, "malformed chunked body: chunk size line too long");
            if (nl == pos_ || input[nl - 1] != '\r') return fail(400, "malformed chunked body: lines must end with CRLF");
            std::string_view sizeLine = input.substr(pos_, nl - 1 - pos_);
            std::size_t digits = 0;
            std::uint64_t size = 0;
            while (digits < sizeLine.size() && hexValue(sizeLine[digits]) >= 0) {
                if (digits == 15) return tooLarge();
                size = size * 16 + static_cast<std::uint64_t>(hexValue(sizeLine[digits]));
                ++digits;
            }
            std::string_view rest = trim(sizeLine.substr(digits));
            if (digits == 0 || (!rest.empty() && rest.front() != ';'))
                return fail(400, "malformed chunked body: bad chunk size '" + shown(sizeLine) + "'");
            pos_ = nl + 1;
            if (size == 0) {
                phase_ = Phase::Trailer;
                break;
            }
            if (size > limits_.maxBodyBytes - bodyBytes_) return tooLarge();
            bodyBytes_ += static_cast<std::size_t>(size);
            bodyLeft_ = static_cast<std::size_t>(size);
            phase_ = Phase::ChunkData;
            break;
        }
        case Phase::ChunkData: {
            std::size_t have = input.size() - pos_;
            if (have < bodyLeft_) {
                pos_ = input.size();
                bodyLeft_ -= have;
                return Status::NeedMore;
            }
            pos_ += bodyLeft_;
            bodyLeft_ = 0;
            phase_ = Phase::ChunkEnd;
            break;
        }
        case Phase::ChunkEnd:
        case Phase::Trailer: {
            // CRLF after a chunk's data; after the last chunk, CRLF alone (no trailer fields).
            bool last = phase_ == Phase::Trailer;
            if (pos_ < input.size() && input[pos_] != '\r')
                return fail(400, last ? "chunked trailer fields are not supported"
                                      : "malformed chunked body: chunk data not followed by CRLF");
            if (input.size() - pos_ < 2) return Status::NeedMore;
            if (input[pos_ + 1] != '\n')
                return fail(400, last ? "chunked trailer fields are not supported"
                                      : "malformed chunked body: chunk data not followed by CRLF");
            pos_ += 2;
            if (last) {
                end_ = pos_;
                phase_ = Phase::Done;
                return Status::Complete;
            }
            phase_ = Phase::ChunkSize;
            break;
        }
        default:
            return phase_ == Phase::Done ? Status::Complete : Status::Invalid;
        }
    }
}

} // namespace wsgw::daemon

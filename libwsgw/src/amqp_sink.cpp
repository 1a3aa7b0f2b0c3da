// The AMQP 0-9-1 event sink, on rabbitmq-c. See makeAmqpSink in <wsgw/sink.h>.
//
// One connection, one channel in confirm mode. publish() sends a whole batch, then reads
// basic.ack / basic.nack until every event of it is settled or the reply timeout passes, and
// reports the leading confirmed events. Any failure drops the connection (onFailure), so
// delivery tags always start again at 1 with the next connect and never mix two batches'
// confirms. rabbitmq-c services heartbeats only inside its own calls: idle() polls for frames
// so that heartbeats go out and a silent broker is noticed while no events flow.
#include <wsgw/sink.h>
#include <wsgw/template.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace wsgw {

namespace {

constexpr amqp_channel_t kChannel = 1;
constexpr std::size_t kMaxShortString = 255; // exchange, queue and routing key (AMQP shortstr)

amqp_bytes_t bytesOf(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char *>(s.data())}; }

std::string text(amqp_bytes_t b) { return b.bytes ? std::string(static_cast<const char *>(b.bytes), b.len) : ""; }

timeval toTimeval(std::chrono::milliseconds ms) {
    if (ms.count() < 0) ms = std::chrono::milliseconds(0);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>(ms.count() % 1000 * 1000);
    return tv;
}

std::string seconds(std::chrono::milliseconds ms) {
    if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + " s";
    return std::to_string(ms.count()) + " ms";
}

// "320 CONNECTION_FORCED - broker forced connection closure ..." from a close method.
std::string closeReason(const amqp_method_t &m) {
    if (m.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto *c = static_cast<const amqp_connection_close_t *>(m.decoded);
        return std::to_string(c->reply_code) + " " + text(c->reply_text);
    }
    if (m.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto *c = static_cast<const amqp_channel_close_t *>(m.decoded);
        return std::to_string(c->reply_code) + " " + text(c->reply_text);
    }
    char id[32];
    std::snprintf(id, sizeof id, "unexpected method 0x%08x", static_cast<unsigned>(m.id));
    return id;
}

// A TCP connection with a timeout, non-blocking as rabbitmq-c wants it. Done here rather than
// by amqp_socket_open_noblock because that reports every failure as "a socket error occurred";
// a person needs "connection refused" or "timed out".
int connectTcp(const std::string &host, std::uint16_t port, std::chrono::milliseconds timeout, std::string *error) {
    const std::string where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                              std::to_string(port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res = nullptr;
    std::string portText = std::to_string(port);
    if (int rc = getaddrinfo(host.c_str(), portText.c_str(), &hints, &res); rc != 0 || !res) {
        *error = "cannot resolve '" + host + "': " + gai_strerror(rc);
        return -1;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string why = "no address";
    int fd = -1;
    for (addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            why = std::strerror(errno);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        int err = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
        if (err == EINPROGRESS) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            pollfd p{fd, POLLOUT, 0};
            int n = ::poll(&p, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
            if (n == 0) {
                err = ETIMEDOUT;
            } else if (n < 0) {
                err = errno;
            } else {
                socklen_t len = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            }
        }
        if (err != 0) {
            why = err == ETIMEDOUT ? "timed out after " + seconds(timeout) : std::strerror(err);
            ::close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) *error = "cannot connect to " + where + ": " + why;
    return fd;
}

// The CA bundle for TLS: the configured file, else $SSL_CERT_FILE (as OpenSSL honours it), else
// Debian's system bundle.
std::string caFile(const std::string &configured) {
    if (!configured.empty()) return configured;
    if (const char *env = std::getenv("SSL_CERT_FILE"); env && *env) return env;
    return "/etc/ssl/certs/ca-certificates.crt";
}

class AmqpSink final : public EventSink {
public:
    AmqpSink(AmqpSinkOptions options, Template routingKey)
        : o_(std::move(options)), routingKey_(std::move(routingKey)) {
        where_ = (o_.host.find(':') != std::string::npos ? "[" + o_.host + "]" : o_.host) + ":" +
                 std::to_string(o_.port);
        // The headers table points into o_.headers, which stays put from here on.
        for (const auto &[key, value] : o_.headers) {
            amqp_table_entry_t entry{};
            entry.key = bytesOf(key);
            entry.value.kind = AMQP_FIELD_KIND_UTF8;
            entry.value.value.bytes = bytesOf(value);
            headerEntries_.push_back(entry);
        }
        props_._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
        props_.content_type = amqp_cstring_bytes("application/json");
        props_.delivery_mode = AMQP_DELIVERY_PERSISTENT;
        if (!headerEntries_.empty()) {
            props_._flags |= AMQP_BASIC_HEADERS_FLAG;
            props_.headers.num_entries = static_cast<int>(headerEntries_.size());
            props_.headers.entries = headerEntries_.data();
        }
    }

    ~AmqpSink() override { disconnect(true); }

    std::string name() const override { return "amqp"; }

    bool connect() override;
    std::size_t publish(const std::vector<EventPtr> &batch) override;
    void onFailure() override { disconnect(false); }
    bool idle() override;
    std::string lastError() const override { return error_; }
    std::uint64_t rejected() const override { return rejected_.load(std::memory_order_relaxed); }

private:
    bool fail(std::string message) {
        error_ = std::move(message);
        disconnect(false);
        return false;
    }
    // For the declarations: false with lastError() set unless the reply is normal.
    bool replyOk(std::string_view what);
    std::string loginError(const amqp_rpc_reply_t &r) const;
    // A frame that is not a confirm. Returns false (lastError() set) if it closed the
    // connection or the channel.
    bool handleFrame(const amqp_frame_t &frame);
    std::string statusError(int status) const;
    void disconnect(bool graceful);

    AmqpSinkOptions o_;
    Template routingKey_;
    std::string where_; // "host:port" for messages
    std::vector<amqp_table_entry_t> headerEntries_;
    amqp_basic_properties_t props_{};
    amqp_connection_state_t conn_ = nullptr;
    std::uint64_t nextTag_ = 1; // the delivery tag of the next publish on this channel
    std::string blocked_;       // why the broker blocked publishing (connection.blocked); "" if not
    std::string error_;
    std::atomic<std::uint64_t> rejected_{0};
};

std::string AmqpSink::statusError(int status) const {
    switch (status) {
    case AMQP_STATUS_HEARTBEAT_TIMEOUT:
        return "no heartbeat from the broker at " + where_ + " for " +
               std::to_string(2 * o_.heartbeat.count()) + " s: connection considered dead";
    case AMQP_STATUS_CONNECTION_CLOSED:
    case AMQP_STATUS_SOCKET_ERROR:
    case AMQP_STATUS_SOCKET_CLOSED:
    case AMQP_STATUS_TCP_ERROR:
    case AMQP_STATUS_SSL_ERROR:
        return "connection to the broker at " + where_ + " lost (" + amqp_error_string2(status) + ")";
    default:
        return std::string("AMQP error: ") + amqp_error_string2(status);
    }
}

std::string AmqpSink::loginError(const amqp_rpc_reply_t &r) const {
    const std::string who = "user '" + o_.user + "' on vhost '" + o_.vhost + "' at " + where_;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto *c = static_cast<const amqp_connection_close_t *>(r.reply.decoded);
        std::string reason = closeReason(r.reply);
        if (c->reply_code == AMQP_ACCESS_REFUSED)
            return "login refused for " + who + ": " + reason + " (check the user and password)";
        if (c->reply_code == AMQP_NOT_ALLOWED)
            return "vhost not available for " + who + ": " + reason + " (check the vhost and the user's permissions)";
        return "the broker refused the login of " + who + ": " + reason;
    }
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        if (r.library_error == AMQP_STATUS_CONNECTION_CLOSED)
            return "the broker at " + where_ + " closed the connection during login of " + who +
                   " (wrong user, password or vhost?)";
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return "no answer to the AMQP login from " + where_ + " within " + seconds(o_.connectTimeout) +
                   " (is this an AMQP 0-9-1 port?)";
        return "login at " + where_ + " failed: " + amqp_error_string2(r.library_error);
    }
    return "login at " + where_ + " failed";
}

bool AmqpSink::replyOk(std::string_view what) {
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return true;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
            return fail(std::string(what) + ": the broker refused: " + closeReason(r.reply));
        return fail(std::string(what) + ": the broker closed the connection: " + closeReason(r.reply));
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return fail(std::string(what) + ": no answer from the broker within " + seconds(o_.replyTimeout));
        return fail(std::string(what) + ": " + statusError(r.library_error));
    default:
        return fail(std::string(what) + ": no reply");
    }
}

bool AmqpSink::connect() {
    disconnect(false);
    blocked_.clear();
    conn_ = amqp_new_connection();
    if (!conn_) return fail("out of memory");

    if (o_.tls) {
        amqp_socket_t *sock = amqp_ssl_socket_new(conn_);
        if (!sock) return fail("cannot create a TLS socket");
        amqp_ssl_socket_set_verify_peer(sock, 1);
        amqp_ssl_socket_set_verify_hostname(sock, 1);
        std::string ca = caFile(o_.caFile);
        if (amqp_ssl_socket_set_cacert(sock, ca.c_str()) != AMQP_STATUS_OK)
            return fail("cannot load the CA certificates from '" + ca + "'");
        timeval tv = toTimeval(o_.connectTimeout);
        if (int rc = amqp_socket_open_noblock(sock, o_.host.c_str(), o_.port, &tv); rc != AMQP_STATUS_OK) {
            // Tell a closed port from a TLS problem.
            std::string why;
            int fd = connectTcp(o_.host, o_.port, o_.connectTimeout, &why);
            if (fd < 0) return fail(why);
            ::close(fd);
            return fail("TLS with " + where_ + " failed: " + amqp_error_string2(rc));
        }
    } else {
        std::string why;
        int fd = connectTcp(o_.host, o_.port, o_.connectTimeout, &why);
        if (fd < 0) return fail(why);
        amqp_socket_t *sock = amqp_tcp_socket_new(conn_);
        if (!sock) {
            ::close(fd);
            return fail("out of memory");
        }
        amqp_tcp_socket_set_sockfd(sock, fd); // the connection owns it from here
    }

    timeval handshake = toTimeval(o_.connectTimeout);
    amqp_set_handshake_timeout(conn_, &handshake);
    timeval rpc = toTimeval(o_.replyTimeout);
    amqp_set_rpc_timeout(conn_, &rpc);

    // Ask for connection.blocked notices (to say why confirms stop coming) and name the
    // connection for the broker's management UI.
    std::string connectionName = o_.node.empty() ? "wsgw" : "wsgw " + o_.node;
    amqp_table_entry_t capability{};
    capability.key = amqp_cstring_bytes("connection.blocked");
    capability.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capability.value.value.boolean = 1;
    amqp_table_entry_t properties[2]{};
    properties[0].key = amqp_cstring_bytes("capabilities");
    properties[0].value.kind = AMQP_FIELD_KIND_TABLE;
    properties[0].value.value.table = amqp_table_t{1, &capability};
    properties[1].key = amqp_cstring_bytes("connection_name");
    properties[1].value.kind = AMQP_FIELD_KIND_UTF8;
    properties[1].value.value.bytes = bytesOf(connectionName);
    amqp_table_t table{2, properties};
    const int heartbeat = static_cast<int>(std::min<long long>(o_.heartbeat.count(), 65535));
    amqp_rpc_reply_t login = amqp_login_with_properties(conn_, o_.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE,
                                                        heartbeat, &table, AMQP_SASL_METHOD_PLAIN, o_.user.c_str(),
                                                        o_.password.c_str());
    if (login.reply_type != AMQP_RESPONSE_NORMAL) return fail(loginError(login));

    amqp_channel_open(conn_, kChannel);
    if (!replyOk("opening a channel")) return false;
    if (!o_.exchange.empty()) {
        amqp_exchange_declare(conn_, kChannel, bytesOf(o_.exchange), amqp_cstring_bytes("topic"), /*passive=*/0,
                              /*durable=*/1, /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
        if (!replyOk("declaring exchange '" + o_.exchange + "' (durable, topic)")) return false;
    }
    if (!o_.queue.empty()) {
        amqp_queue_declare(conn_, kChannel, bytesOf(o_.queue), /*passive=*/0, /*durable=*/1, /*exclusive=*/0,
                           /*auto_delete=*/0, amqp_empty_table);
        if (!replyOk("declaring queue '" + o_.queue + "' (durable)")) return false;
        if (!o_.exchange.empty()) {
            amqp_queue_bind(conn_, kChannel, bytesOf(o_.queue), bytesOf(o_.exchange), amqp_cstring_bytes("#"),
                            amqp_empty_table);
            if (!replyOk("binding queue '" + o_.queue + "' to exchange '" + o_.exchange + "'")) return false;
        }
    }
    amqp_confirm_select(conn_, kChannel);
    if (!replyOk("enabling publisher confirms")) return false;
    nextTag_ = 1;
    amqp_maybe_release_buffers(conn_);
    error_.clear();
    return true;
}

bool AmqpSink::handleFrame(const amqp_frame_t &frame) {
    if (frame.frame_type != AMQP_FRAME_METHOD) return true; // e.g. the content of a basic.return
    const amqp_method_t &m = frame.payload.method;
    switch (m.id) {
    case AMQP_CONNECTION_CLOSE_METHOD: {
        error_ = "the broker at " + where_ + " closed the connection: " + closeReason(m);
        amqp_connection_close_ok_t ok{};
        amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return false;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        error_ = "the broker closed the channel: " + closeReason(m);
        amqp_channel_close_ok_t ok{};
        amqp_send_method(conn_, frame.channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return false;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
        blocked_ = text(static_cast<const amqp_connection_blocked_t *>(m.decoded)->reason);
        if (blocked_.empty()) blocked_ = "no reason given";
        return true;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        blocked_.clear();
        return true;
    default:
        return true;
    }
}

std::size_t AmqpSink::publish(const std::vector<EventPtr> &batch) {
    if (!conn_) {
        error_ = "not connected";
        return 0;
    }
    enum : std::uint8_t { Pending, Confirmed, Refused };
    const std::size_t n = batch.size();
    std::vector<std::uint8_t> state(n, Pending);
    // sent[k] is the batch index of the k-th message sent; its delivery tag is firstTag + k.
    std::vector<std::size_t> sent;
    sent.reserve(n);
    const std::uint64_t firstTag = nextTag_;
    amqp_basic_properties_t props = props_;
    std::string key;
    bool broken = false;
    for (std::size_t i = 0; i < n; ++i) {
        const Event &e = *batch[i];
        key = routingKey_.render(e);
        if (key.size() > kMaxShortString) {
            // No broker would take it, now or later: refused for good.
            state[i] = Confirmed;
            rejected_.fetch_add(1, std::memory_order_relaxed);
            continue;
        }
        std::string body = toJson(e, o_.node);
        props.timestamp = static_cast<std::uint64_t>(e.timeMs / 1000);
        int rc = amqp_basic_publish(conn_, kChannel, bytesOf(o_.exchange), bytesOf(key), /*mandatory=*/0,
                                    /*immediate=*/0, &props, bytesOf(body));
        if (rc != AMQP_STATUS_OK) {
            error_ = "publishing: " + statusError(rc);
            broken = true;
            break;
        }
        sent.push_back(i);
        ++nextTag_;
    }

    // Settle confirms. A multiple ack covers every tag up to its own; tags outside this batch
    // cannot occur (a failed batch drops the connection) and are ignored.
    std::size_t outstanding = sent.size();
    std::size_t low = 0; // sent[] below this are settled
    std::size_t nacked = 0;
    auto settle = [&](std::uint64_t tag, bool multiple, std::uint8_t result) {
        if (tag < firstTag || tag >= firstTag + sent.size()) return;
        std::size_t k = static_cast<std::size_t>(tag - firstTag);
        for (std::size_t j = multiple ? low : k; j <= k; ++j) {
            if (state[sent[j]] != Pending) continue;
            state[sent[j]] = result;
            --outstanding;
            if (result == Refused) ++nacked;
        }
        while (low < sent.size() && state[sent[low]] != Pending) ++low;
    };
    const auto deadline = std::chrono::steady_clock::now() + o_.replyTimeout;
    while (!broken && outstanding > 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            error_ = "the broker did not confirm " + std::to_string(outstanding) + " events within " +
                     seconds(o_.replyTimeout) +
                     (blocked_.empty() ? std::string() : " (it blocked publishing: " + blocked_ + ")");
            broken = true;
            break;
        }
        timeval tv = toTimeval(left);
        amqp_frame_t frame{};
        int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
        if (rc == AMQP_STATUS_TIMEOUT) continue;
        if (rc != AMQP_STATUS_OK) {
            error_ = "waiting for confirms: " + statusError(rc);
            broken = true;
            break;
        }
        if (frame.frame_type == AMQP_FRAME_METHOD && frame.channel == kChannel &&
            frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            const auto *ack = static_cast<const amqp_basic_ack_t *>(frame.payload.method.decoded);
            settle(ack->delivery_tag, ack->multiple != 0, Confirmed);
        } else if (frame.frame_type == AMQP_FRAME_METHOD && frame.channel == kChannel &&
                   frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            const auto *nack = static_cast<const amqp_basic_nack_t *>(frame.payload.method.decoded);
            settle(nack->delivery_tag, nack->multiple != 0, Refused);
        } else if (!handleFrame(frame)) {
            broken = true;
        }
    }
    if (!broken) amqp_maybe_release_buffers(conn_);

    std::size_t leading = 0;
    while (leading < n && state[leading] == Confirmed) ++leading;
    if (leading < n && !broken && nacked > 0)
        error_ = "the broker nacked " + std::to_string(nacked) + " events (it could not take them); they are retried";
    return leading;
}

bool AmqpSink::idle() {
    if (!conn_) {
        error_ = "not connected";
        return false;
    }
    // A zero timeout reads what has arrived without waiting; the call also sends a heartbeat
    // when one is due and fails with AMQP_STATUS_HEARTBEAT_TIMEOUT once the broker has been
    // silent for two intervals.
    for (;;) {
        timeval zero{};
        amqp_frame_t frame{};
        int rc = amqp_simple_wait_frame_noblock(conn_, &frame, &zero);
        if (rc == AMQP_STATUS_TIMEOUT) break;
        if (rc != AMQP_STATUS_OK) {
            error_ = statusError(rc);
            return false;
        }
        if (!handleFrame(frame)) return false;
    }
    amqp_maybe_release_buffers(conn_);
    return true;
}

void AmqpSink::disconnect(bool graceful) {
    if (!conn_) return;
    if (graceful) {
        timeval quick = toTimeval(std::chrono::milliseconds(1000));
        amqp_set_rpc_timeout(conn_, &quick);
        amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn_); // closes the socket
    conn_ = nullptr;
}

// Options that can never work; "" when fine.
std::string checkOptions(const AmqpSinkOptions &o) {
    if (o.host.empty()) return "no broker host";
    if (o.exchange.size() > kMaxShortString) return "exchange name longer than 255 bytes";
    if (o.queue.size() > kMaxShortString) return "queue name longer than 255 bytes";
    for (const auto &[key, value] : o.headers)
        if (key.empty() || key.size() > 128) return "header name '" + key + "' must have 1 to 128 bytes";
    if (o.heartbeat.count() < 0 || o.heartbeat.count() > 65535) return "heartbeat must be 0 to 65535 seconds";
    if (o.connectTimeout.count() <= 0 || o.replyTimeout.count() <= 0) return "timeouts must be positive";
    return {};
}

} // namespace

std::unique_ptr<EventSink> makeAmqpSink(AmqpSinkOptions options, std::string *error) {
    std::string why = checkOptions(options);
    std::optional<Template> key;
    if (why.empty()) {
        std::string templateError;
        key = Template::parse(options.routingKey, &templateError);
        if (!key)
            why = "routing key '" + options.routingKey + "': " + templateError;
        else if (key->isConstant() && key->source().size() > kMaxShortString)
            why = "routing key longer than 255 bytes";
    }
    if (!why.empty()) {
        if (error) *error = why;
        return nullptr;
    }
    return std::make_unique<AmqpSink>(std::move(options), std::move(*key));
}

} // namespace wsgw

#include "amqp_connect.h"

#include "amqp_support.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <unistd.h>

#include <algorithm>

namespace wsgw::amqp {

namespace {

using Clock = std::chrono::steady_clock;

std::string loginError(const AmqpSinkOptions &o, const amqp_rpc_reply_t &r) {
    const std::string where = whereOf(o);
    const std::string who = "user '" + o.user + "' on vhost '" + o.vhost + "' at " + where;
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
            return "the broker at " + where + " closed the connection during login of " + who +
                   " (wrong user, password or vhost?)";
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return "no answer to the AMQP login from " + where + " within " + seconds(o.connectTimeout) +
                   " (is this an AMQP 0-9-1 port?)";
        return "login at " + where + " failed: " + amqp_error_string2(r.library_error);
    }
    return "login at " + where + " failed";
}

// Opens the socket of `conn`: false with why.
bool openSocket(const AmqpSinkOptions &o, amqp_connection_state_t conn, std::string *error) {
    if (o.tls) {
        amqp_socket_t *sock = amqp_ssl_socket_new(conn);
        if (!sock) {
            *error = "cannot create a TLS socket";
            return false;
        }
        amqp_ssl_socket_set_verify_peer(sock, 1);
        amqp_ssl_socket_set_verify_hostname(sock, 1);
        std::string ca = caFile(o.caFile);
        if (amqp_ssl_socket_set_cacert(sock, ca.c_str()) != AMQP_STATUS_OK) {
            *error = "cannot load the CA certificates from '" + ca + "'";
            return false;
        }
        // Bounded by its own timeout: the TCP connect and the TLS handshake both.
        timeval tv = toTimeval(o.connectTimeout);
        if (int rc = amqp_socket_open_noblock(sock, o.host.c_str(), o.port, &tv); rc != AMQP_STATUS_OK) {
            // Tell a closed port from a TLS problem.
            int fd = connectTcp(o.host, o.port, o.connectTimeout, error);
            if (fd < 0) return false;
            ::close(fd);
            *error = "TLS with " + whereOf(o) + " failed: " + amqp_error_string2(rc);
            return false;
        }
        return true;
    }
    int fd = connectTcp(o.host, o.port, o.connectTimeout, error);
    if (fd < 0) return false;
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock) {
        ::close(fd);
        *error = "out of memory";
        return false;
    }
    amqp_tcp_socket_set_sockfd(sock, fd); // the connection owns it from here
    return true;
}

} // namespace

std::string whereOf(const AmqpSinkOptions &o) {
    return (o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host) + ":" + std::to_string(o.port);
}

amqp_connection_state_t openConnection(const AmqpSinkOptions &o, const std::string &connectionName,
                                       SocketWatchdog &dog, std::string *error) {
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn) {
        *error = "out of memory";
        return nullptr;
    }
    auto fail = [&](std::string why) -> amqp_connection_state_t {
        amqp_destroy_connection(conn); // closes the socket, if any
        *error = std::move(why);
        return nullptr;
    };
    std::string why;
    if (!openSocket(o, conn, &why)) return fail(why);

    timeval handshake = toTimeval(o.connectTimeout);
    amqp_set_handshake_timeout(conn, &handshake);
    timeval rpc = toTimeval(o.replyTimeout);
    amqp_set_rpc_timeout(conn, &rpc);

    // Ask for connection.blocked notices (amqp_sink.cpp says why), for basic.cancel when a
    // consumed queue goes away, and name the connection.
    amqp_table_entry_t capabilities[2]{};
    capabilities[0].key = amqp_cstring_bytes("connection.blocked");
    capabilities[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[0].value.value.boolean = 1;
    capabilities[1].key = amqp_cstring_bytes("consumer_cancel_notify");
    capabilities[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    capabilities[1].value.value.boolean = 1;
    amqp_table_entry_t properties[2]{};
    properties[0].key = amqp_cstring_bytes("capabilities");
    properties[0].value.kind = AMQP_FIELD_KIND_TABLE;
    properties[0].value.value.table = amqp_table_t{2, capabilities};
    properties[1].key = amqp_cstring_bytes("connection_name");
    properties[1].value.kind = AMQP_FIELD_KIND_UTF8;
    properties[1].value.value.bytes = bytesOf(connectionName);
    amqp_table_t table{2, properties};
    const int heartbeat = static_cast<int>(std::min<long long>(o.heartbeat.count(), 65535));
    // rabbitmq-c bounds the login's reads and writes by the handshake timeout; the guard is a
    // second line.
    WatchdogGuard guard(dog, amqp_get_sockfd(conn), Clock::now() + o.connectTimeout + kWatchdogGrace);
    amqp_rpc_reply_t login = amqp_login_with_properties(conn, o.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat,
                                                        &table, AMQP_SASL_METHOD_PLAIN, o.user.c_str(),
                                                        o.password.c_str());
    if (guard.end())
        return fail("no answer to the AMQP login from " + whereOf(o) + " within " +
                    seconds(o.connectTimeout + kWatchdogGrace));
    if (login.reply_type != AMQP_RESPONSE_NORMAL) return fail(loginError(o, login));
    return conn;
}

} // namespace wsgw::amqp

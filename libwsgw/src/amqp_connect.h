#pragma once

// Opening a logged-in AMQP 0-9-1 connection, for every user of rabbitmq-c in libwsgw (the event
// sink, amqp_sink.cpp; the command reader, amqp_command_reader.cpp): TCP or TLS, login with our
// client properties, and a failure described so that a person can act on it.
#include "socket_watchdog.h"

#include <wsgw/sink.h>

#include <amqp.h>

#include <chrono>
#include <string>

namespace wsgw::amqp {

/// How long past a call's own bound a SocketWatchdog waits before it shuts the socket down, so
/// that rabbitmq-c's own timeout (when it has one) reports first, with its more precise reason.
inline constexpr std::chrono::milliseconds kWatchdogGrace{1000};

/// "host:port" ("[::1]:5672" for IPv6) for messages.
std::string whereOf(const AmqpSinkOptions &o);

/// A new connection to the broker `o` names (host, port, tls, caFile, user, password, vhost,
/// heartbeat, connectTimeout, replyTimeout; the rest of `o` is not used), logged in, with
/// rabbitmq-c's handshake timeout set to connectTimeout and its RPC timeout to replyTimeout. The
/// client properties ask for connection.blocked and consumer cancel notices and name the
/// connection `connectionName` in the broker's management UI. Each step is bounded: TCP, TLS and
/// login by connectTimeout, the login also by `dog` (+kWatchdogGrace).
///
/// Returns the connection (the caller destroys it), or nullptr with why in `*error` ("cannot
/// connect to 127.0.0.1:5672: Connection refused", "login refused for user 'guest' ...").
amqp_connection_state_t openConnection(const AmqpSinkOptions &o, const std::string &connectionName,
                                       SocketWatchdog &dog, std::string *error);

} // namespace wsgw::amqp

#pragma once

// A private RabbitMQ node for tests and benchmarks, and a small AMQP client (rabbitmq-c) to look
// at what reached it.
//
// The node runs Debian's rabbitmq-server as the current user, with its own node name, AMQP and
// distribution ports, epmd (on its own port, started and stopped by us) and data, log and config
// files in a temp dir: it touches nothing of a system broker. Both processes get SIGTERM if the
// test process dies (PR_SET_PDEATHSIG), so a crashed test leaves no broker behind.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wsgw::itest {

/// Thread-compatible.
class RabbitBroker {
public:
    /// Whether Debian's rabbitmq-server and epmd are installed.
    static bool installed();

    RabbitBroker();  ///< picks ports and a temp dir; does not start
    ~RabbitBroker(); ///< stop()
    RabbitBroker(const RabbitBroker &) = delete;
    RabbitBroker &operator=(const RabbitBroker &) = delete;

    /// Starts the node (epmd first, if not running) and waits until an AMQP login succeeds.
    /// False with a message (and the broker's output) on failure or after `limit`.
    bool start(std::string *error, std::chrono::milliseconds limit = std::chrono::seconds(120));
    /// Stops the node (SIGTERM, then SIGKILL after 30 s), keeping its data; start() again
    /// restarts it with the same queues and messages. `andEpmd` stops epmd as well.
    void stop(bool andEpmd = true);
    bool running() const { return pid_ > 0; }

    /// SIGSTOP / SIGCONT to the Erlang VM: the broker keeps its sockets but answers nothing.
    bool freeze();
    void thaw();

    /// Raises (on) or clears (off) the node's memory alarm by setting its memory high watermark
    /// to 0 (every byte is too much) or back to the default 0.4: while it is raised the broker
    /// blocks every connection that publishes (connection.blocked, then it stops reading from
    /// it). Through erl_call, the Erlang distribution client, in a fraction of a second
    /// (rabbitmqctl would start a whole VM each time). False with a message on failure.
    bool setMemoryAlarm(bool on, std::string *error);
    /// Creates virtual host `vhost` and gives user guest every permission on it (erl_call, as
    /// setMemoryAlarm). False with a message on failure.
    bool addVhost(const std::string &vhost, std::string *error);
    /// The node's alarms as Erlang terms, e.g. "[{{resource_limit,memory,wsgwtest1@localhost},[]}]".
    std::string alarms();

    std::uint16_t port() const { return port_; }
    /// The TLS (amqps) listener, with a certificate for "localhost" and 127.0.0.1 signed by
    /// caFile(); 0 when the certificates could not be made (no openssl command).
    std::uint16_t tlsPort() const { return tlsPort_; }
    std::string caFile() const { return dir_ + "/ca.pem"; }
    /// amqp://USER:PASSWORD@127.0.0.1:PORT/
    std::string url(const std::string &user = "guest", const std::string &password = "guest") const;
    /// The broker's own log so far (for failure messages).
    std::string log() const;

private:
    void startEpmd();
    int vmPid() const;
    std::optional<std::string> call(const std::string &apply, std::string *error);

    std::string dir_; // removed with its contents by the destructor
    std::string node_;
    std::uint16_t port_ = 0;
    std::uint16_t distPort_ = 0;
    std::uint16_t epmdPort_ = 0;
    std::uint16_t tlsPort_ = 0;
    int pid_ = -1;     // the rabbitmq-server script (its process group holds the VM)
    int epmdPid_ = -1;
};

/// A message as a consumer sees it.
struct Delivery {
    std::string exchange;
    std::string routingKey;
    std::string body;
    std::string contentType;
    int deliveryMode = 0;       ///< 2 = persistent
    std::uint64_t timestamp = 0; ///< seconds; 0 if absent
    std::map<std::string, std::string> headers; ///< string-valued headers
    std::string correlationId;                  ///< "" if absent
};

/// Properties of a message the test publishes.
struct Publish {
    std::string replyTo;       ///< "" for none
    std::string correlationId; ///< "" for none
    std::string messageId;     ///< "" for none
    bool persistent = true;    ///< delivery mode 2
    /// Waits for the broker's confirm (publisher confirms on the client's channel): once
    /// publish() returns, the broker has taken the message (on disk, for a persistent message to
    /// a durable queue).
    bool confirm = false;
};

/// A blocking AMQP client for checks. Every call throws std::runtime_error with the broker's
/// reason on failure (the tests want to stop there). Thread-compatible.
class AmqpClient {
public:
    AmqpClient(std::uint16_t port, const std::string &user = "guest", const std::string &password = "guest",
               const std::string &vhost = "/");
    ~AmqpClient();
    AmqpClient(const AmqpClient &) = delete;
    AmqpClient &operator=(const AmqpClient &) = delete;

    void declareExchange(const std::string &name, const std::string &type, bool durable = true);
    void deleteExchange(const std::string &name);
    /// Declares (durable unless told) and returns the number of messages in it.
    std::uint32_t declareQueue(const std::string &name, bool durable = true);
    void bindQueue(const std::string &queue, const std::string &exchange, const std::string &key);
    void deleteQueue(const std::string &name);
    /// Publishes `body` to `exchange` ("" the default exchange: `key` names the queue).
    void publish(const std::string &exchange, const std::string &key, const std::string &body,
                 const Publish &props = {});

    /// Consumes (auto-ack) until `atLeast` messages arrived and then no more for `quiet`, or
    /// `limit` passed; returns what arrived.
    std::vector<Delivery> consume(const std::string &queue, std::size_t atLeast,
                                  std::chrono::milliseconds limit = std::chrono::seconds(10),
                                  std::chrono::milliseconds quiet = std::chrono::milliseconds(300));

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace wsgw::itest

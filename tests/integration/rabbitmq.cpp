#include "rabbitmq.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char **environ;

namespace wsgw::itest {

namespace {

const char *const kServer = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const char *const kEpmd = "/usr/bin/epmd";
const char *const kErlCall = "/usr/bin/erl_call"; // Debian's erlang-base, a dependency of rabbitmq-server

std::uint16_t freeTcpPort() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) {
        ::close(fd);
        throw std::runtime_error("bind");
    }
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

bool acceptsTcp(std::uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

void writeText(const std::string &path, const std::string &text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
}

std::string readText(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

// fork + exec in a new process group, with SIGTERM on our death, output appended to `log`.
// Everything is allocated before fork().
pid_t spawn(const std::vector<std::string> &args, const std::vector<std::string> &env, const std::string &log) {
    std::vector<char *> argv, envp;
    for (auto &a : args) argv.push_back(const_cast<char *>(a.c_str()));
    argv.push_back(nullptr);
    for (auto &e : env) envp.push_back(const_cast<char *>(e.c_str()));
    envp.push_back(nullptr);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (out >= 0) {
        dup2(out, 1);
        dup2(out, 2);
    }
    if (in >= 0) dup2(in, 0);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
}

// Waits for `pid` up to `limit`; true if it exited (and was reaped).
bool reap(pid_t pid, std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return true;
        if (std::chrono::steady_clock::now() >= until) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::string bytes(amqp_bytes_t b) { return b.bytes ? std::string(static_cast<const char *>(b.bytes), b.len) : ""; }

std::string describe(const amqp_rpc_reply_t &r) {
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return "ok";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        return amqp_error_string2(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            auto *c = static_cast<amqp_connection_close_t *>(r.reply.decoded);
            return "connection closed: " + std::to_string(c->reply_code) + " " + bytes(c->reply_text);
        }
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            auto *c = static_cast<amqp_channel_close_t *>(r.reply.decoded);
            return "channel closed: " + std::to_string(c->reply_code) + " " + bytes(c->reply_text);
        }
        return "server exception";
    default:
        return "no reply";
    }
}

} // namespace

// ---------------------------------------------------------------------------------------------
// RabbitBroker

bool RabbitBroker::installed() {
    return access(kServer, X_OK) == 0 && access(kEpmd, X_OK) == 0 && access(kErlCall, X_OK) == 0;
}

RabbitBroker::RabbitBroker() {
    std::string pattern = (std::filesystem::temp_directory_path() / "wsgw-rabbitmq-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    node_ = "wsgwtest" + std::to_string(getpid()) + "@localhost";
    port_ = freeTcpPort();
    do distPort_ = freeTcpPort(); while (distPort_ == port_);
    do epmdPort_ = freeTcpPort(); while (epmdPort_ == port_ || epmdPort_ == distPort_);
    std::filesystem::create_directories(dir_ + "/mnesia");
    std::filesystem::create_directories(dir_ + "/log");
    std::string conf = "listeners.tcp.default = 127.0.0.1:" + std::to_string(port_) +
                       "\n"
                       "loopback_users = none\n"
                       "log.file.level = info\n";
    // A CA and a server certificate for the amqps listener (EC keys: quick to make).
    writeText(dir_ + "/san.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    const std::string d = "'" + dir_ + "'";
    const std::string certs =
        "cd " + d + " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj /CN=wsgw-test-ca -keyout ca.key -out ca.pem && "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
        "-keyout server.key -out server.csr && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.cnf "
        "-out server.pem";
    if (std::system(("(" + certs + ") >/dev/null 2>&1").c_str()) == 0) {
        do tlsPort_ = freeTcpPort(); while (tlsPort_ == port_ || tlsPort_ == distPort_ || tlsPort_ == epmdPort_);
        conf += "listeners.ssl.default = 127.0.0.1:" + std::to_string(tlsPort_) + "\n" +
                "ssl_options.cacertfile = " + dir_ + "/ca.pem\n" + "ssl_options.certfile = " + dir_ +
                "/server.pem\n" + "ssl_options.keyfile = " + dir_ + "/server.key\n" +
                "ssl_options.verify = verify_none\n" + "ssl_options.fail_if_no_peer_cert = false\n";
    }
    writeText(dir_ + "/rabbitmq.conf", conf);
    writeText(dir_ + "/enabled_plugins", "[].\n");
    writeText(dir_ + "/rabbitmq-env.conf", "");
}

RabbitBroker::~RabbitBroker() {
    stop(true);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
}

std::string RabbitBroker::url(const std::string &user, const std::string &password) const {
    return "amqp://" + user + ":" + password + "@127.0.0.1:" + std::to_string(port_) + "/";
}

std::string RabbitBroker::log() const {
    return readText(dir_ + "/output.log") + readText(dir_ + "/log/" + node_ + ".log");
}

void RabbitBroker::startEpmd() {
    if (epmdPid_ > 0) return;
    std::vector<std::string> env{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
    epmdPid_ = spawn({kEpmd, "-port", std::to_string(epmdPort_)}, env, dir_ + "/epmd.log");
    for (int i = 0; i < 200 && !acceptsTcp(epmdPort_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

bool RabbitBroker::start(std::string *error, std::chrono::milliseconds limit) {
    if (pid_ > 0) return true;
    startEpmd();
    std::vector<std::string> env;
    for (char **e = environ; *e; ++e) {
        std::string_view v(*e);
        if (v.rfind("RABBITMQ_", 0) == 0 || v.rfind("ERL_", 0) == 0 || v.rfind("HOME=", 0) == 0) continue;
        env.emplace_back(v);
    }
    auto set = [&](const std::string &k, const std::string &v) { env.push_back(k + "=" + v); };
    set("HOME", dir_); // the Erlang cookie goes here
    set("ERL_EPMD_PORT", std::to_string(epmdPort_));
    set("RABBITMQ_CONF_ENV_FILE", dir_ + "/rabbitmq-env.conf");
    set("RABBITMQ_NODENAME", node_);
    set("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1");
    set("RABBITMQ_NODE_PORT", std::to_string(port_));
    set("RABBITMQ_DIST_PORT", std::to_string(distPort_));
    set("RABBITMQ_MNESIA_BASE", dir_ + "/mnesia");
    set("RABBITMQ_LOG_BASE", dir_ + "/log");
    set("RABBITMQ_CONFIG_FILE", dir_ + "/rabbitmq.conf");
    set("RABBITMQ_ADVANCED_CONFIG_FILE", dir_ + "/advanced.config");
    set("RABBITMQ_ENABLED_PLUGINS_FILE", dir_ + "/enabled_plugins");
    set("RABBITMQ_FEATURE_FLAGS_FILE", dir_ + "/feature_flags");
    pid_ = spawn({kServer}, env, dir_ + "/output.log");

    auto until = std::chrono::steady_clock::now() + limit;
    std::string last;
    while (std::chrono::steady_clock::now() < until) {
        int st = 0;
        if (waitpid(pid_, &st, WNOHANG) == pid_) {
            pid_ = -1;
            if (error) *error = "rabbitmq-server exited during start-up:\n" + log();
            return false;
        }
        if (acceptsTcp(port_)) {
            try {
                AmqpClient probe(port_);
                return true;
            } catch (const std::exception &e) {
                last = e.what();
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (error) *error = "rabbitmq-server did not accept an AMQP login in time (" + last + "):\n" + log();
    stop(false);
    return false;
}

int RabbitBroker::vmPid() const {
    // The script runs the VM as its only child (erl execs into beam.smp).
    std::string children = readText("/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children");
    return std::atoi(children.c_str());
}

bool RabbitBroker::freeze() {
    int vm = pid_ > 0 ? vmPid() : 0;
    return vm > 0 && ::kill(vm, SIGSTOP) == 0;
}

void RabbitBroker::thaw() {
    int vm = pid_ > 0 ? vmPid() : 0;
    if (vm > 0) ::kill(vm, SIGCONT);
}

// erl_call -a 'MODULE FUNCTION [ARGS]' on the node: its printed result, or nullopt (with what
// erl_call said in *error) when it failed or took more than 30 s.
std::optional<std::string> RabbitBroker::call(const std::string &apply, std::string *error) {
    if (pid_ <= 0) {
        if (error) *error = "the broker is not running";
        return std::nullopt;
    }
    // The node wrote its cookie into its HOME (dir_) on its first start.
    std::string cookie = readText(dir_ + "/.erlang.cookie");
    while (!cookie.empty() && std::isspace(static_cast<unsigned char>(cookie.back()))) cookie.pop_back();
    const std::string out = dir_ + "/erl_call.out";
    std::vector<std::string> env{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir_,
                                 "ERL_EPMD_PORT=" + std::to_string(epmdPort_)};
    std::remove(out.c_str());
    // "-e EXPRS": evaluate Erlang expressions (read from a file on stdin, through sh), for what
    // -a's argument parser cannot write (binaries).
    std::vector<std::string> argv{kErlCall, "-n", node_, "-c", cookie, "-timeout", "30", "-a", apply};
    if (apply.rfind("-e ", 0) == 0) {
        const std::string exprs = dir_ + "/erl_call.exprs";
        std::FILE *f = std::fopen(exprs.c_str(), "w");
        if (f) {
            std::fputs(apply.c_str() + 3, f);
            std::fclose(f);
        }
        argv = {"/bin/sh", "-c", std::string("exec \"$0\" -n \"$1\" -c \"$2\" -timeout 30 -e < \"$3\""), kErlCall,
                node_, cookie, exprs};
    }
    pid_t pid = spawn(argv, env, out);
    int status = 0;
    bool exited = false;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(40);
    while (!exited && std::chrono::steady_clock::now() < until) {
        exited = waitpid(pid, &status, WNOHANG) == pid;
        if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!exited) {
        ::kill(pid, SIGKILL);
        reap(pid, std::chrono::seconds(5));
    }
    std::string text = readText(out);
    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (error) *error = "erl_call -a '" + apply + "' failed: " + (exited ? text : "no answer within 40 s");
        return std::nullopt;
    }
    return text;
}

bool RabbitBroker::setMemoryAlarm(bool on, std::string *error) {
    auto r = call(std::string("vm_memory_monitor set_vm_memory_high_watermark ") + (on ? "[0.0]" : "[0.4]"), error);
    if (!r) return false;
    if (r->find("ok") == std::string::npos) {
        if (error) *error = "set_vm_memory_high_watermark answered " + *r;
        return false;
    }
    return true;
}

bool RabbitBroker::addVhost(const std::string &vhost, std::string *error) {
    const std::string name = "<<\"" + vhost + "\">>", all = "<<\".*\">>";
    auto r = call("-e ok = rabbit_vhost:add(" + name + ", <<\"wsgw-test\">>), ok = "
                  "rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, " + name + ", " + all + ", " + all +
                      ", " + all + ", <<\"wsgw-test\">>).\n",
                  error);
    if (!r) return false;
    if (r->find("ok") == std::string::npos) {
        if (error) *error = "adding vhost " + vhost + " answered " + *r;
        return false;
    }
    return true;
}

std::string RabbitBroker::alarms() {
    std::string error;
    auto r = call("rabbit_alarm get_alarms []", &error);
    return r ? *r : error;
}

void RabbitBroker::stop(bool andEpmd) {
    if (pid_ > 0) {
        thaw();
        ::kill(pid_, SIGTERM); // the script stops the VM and waits for it
        if (!reap(pid_, std::chrono::seconds(30))) {
            ::kill(-pid_, SIGKILL);
            reap(pid_, std::chrono::seconds(5));
        }
        pid_ = -1;
    }
    if (andEpmd && epmdPid_ > 0) {
        ::kill(epmdPid_, SIGTERM);
        if (!reap(epmdPid_, std::chrono::seconds(5))) {
            ::kill(epmdPid_, SIGKILL);
            reap(epmdPid_, std::chrono::seconds(5));
        }
        epmdPid_ = -1;
    }
}

// ---------------------------------------------------------------------------------------------
// AmqpClient

struct AmqpClient::Impl {
    amqp_connection_state_t conn = nullptr;
    amqp_channel_t nextChannel = 2;
    bool confirming = false;    // channel 1 is in confirm mode
    std::uint64_t nextTag = 1;  // delivery tag of the next publish on channel 1 (confirm mode)

    void check(const char *what) {
        amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error(std::string(what) + ": " + describe(r));
    }
};

AmqpClient::AmqpClient(std::uint16_t port, const std::string &user, const std::string &password,
                       const std::string &vhost)
    : impl_(std::make_unique<Impl>()) {
    Impl &d = *impl_;
    d.conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(d.conn);
    timeval tv{5, 0};
    if (!sock || amqp_socket_open_noblock(sock, "127.0.0.1", port, &tv) != AMQP_STATUS_OK) {
        amqp_destroy_connection(d.conn);
        throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    }
    amqp_set_rpc_timeout(d.conn, &tv);
    amqp_rpc_reply_t r =
        amqp_login(d.conn, vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, user.c_str(),
                   password.c_str());
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_destroy_connection(d.conn);
        throw std::runtime_error("login: " + describe(r));
    }
    amqp_channel_open(d.conn, 1);
    d.check("channel.open");
}

AmqpClient::~AmqpClient() {
    timeval tv{2, 0};
    amqp_set_rpc_timeout(impl_->conn, &tv);
    amqp_connection_close(impl_->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(impl_->conn);
}

void AmqpClient::declareExchange(const std::string &name, const std::string &type, bool durable) {
    amqp_exchange_declare(impl_->conn, 1, amqp_cstring_bytes(name.c_str()), amqp_cstring_bytes(type.c_str()), 0,
                          durable, 0, 0, amqp_empty_table);
    impl_->check(("exchange.declare " + name).c_str());
}

void AmqpClient::deleteExchange(const std::string &name) {
    amqp_exchange_delete(impl_->conn, 1, amqp_cstring_bytes(name.c_str()), 0);
    impl_->check(("exchange.delete " + name).c_str());
}

std::uint32_t AmqpClient::declareQueue(const std::string &name, bool durable) {
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(impl_->conn, 1, amqp_cstring_bytes(name.c_str()), 0, durable, 0, 0, amqp_empty_table);
    impl_->check(("queue.declare " + name).c_str());
    return ok ? ok->message_count : 0;
}

void AmqpClient::bindQueue(const std::string &queue, const std::string &exchange, const std::string &key) {
    amqp_queue_bind(impl_->conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_cstring_bytes(exchange.c_str()),
                    amqp_cstring_bytes(key.c_str()), amqp_empty_table);
    impl_->check(("queue.bind " + queue).c_str());
}

void AmqpClient::deleteQueue(const std::string &name) {
    amqp_queue_delete(impl_->conn, 1, amqp_cstring_bytes(name.c_str()), 0, 0);
    impl_->check(("queue.delete " + name).c_str());
}

void AmqpClient::publish(const std::string &exchange, const std::string &key, const std::string &body,
                         const Publish &props) {
    Impl &d = *impl_;
    if (props.confirm && !d.confirming) {
        amqp_confirm_select(d.conn, 1);
        d.check("confirm.select");
        d.confirming = true;
    }
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.delivery_mode = props.persistent ? 2 : 1;
    p.content_type = amqp_cstring_bytes("application/json");
    if (!props.replyTo.empty()) {
        p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        p.reply_to = amqp_cstring_bytes(props.replyTo.c_str());
    }
    if (!props.correlationId.empty()) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = amqp_cstring_bytes(props.correlationId.c_str());
    }
    if (!props.messageId.empty()) {
        p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        p.message_id = amqp_cstring_bytes(props.messageId.c_str());
    }
    amqp_bytes_t content{body.size(), const_cast<char *>(body.data())};
    int rc = amqp_basic_publish(d.conn, 1, amqp_cstring_bytes(exchange.c_str()), amqp_cstring_bytes(key.c_str()), 0, 0,
                                &p, content);
    if (rc != AMQP_STATUS_OK) throw std::runtime_error(std::string("basic.publish: ") + amqp_error_string2(rc));
    if (!d.confirming) return;
    const std::uint64_t tag = d.nextTag++;
    if (!props.confirm) return;
    for (int i = 0; i < 1000; ++i) {
        amqp_frame_t frame;
        timeval tv{10, 0};
        rc = amqp_simple_wait_frame_noblock(d.conn, &frame, &tv);
        if (rc != AMQP_STATUS_OK) throw std::runtime_error(std::string("waiting for a confirm: ") + amqp_error_string2(rc));
        if (frame.frame_type != AMQP_FRAME_METHOD || frame.channel != 1) continue;
        const amqp_method_t &m = frame.payload.method;
        if (m.id == AMQP_BASIC_ACK_METHOD) {
            const auto *ack = static_cast<const amqp_basic_ack_t *>(m.decoded);
            if (ack->delivery_tag == tag || (ack->multiple && ack->delivery_tag >= tag)) return;
        } else if (m.id == AMQP_BASIC_NACK_METHOD) {
            throw std::runtime_error("the broker nacked a message");
        } else if (m.id == AMQP_CHANNEL_CLOSE_METHOD || m.id == AMQP_CONNECTION_CLOSE_METHOD) {
            throw std::runtime_error("the broker closed the channel while we waited for a confirm");
        }
    }
    throw std::runtime_error("no confirm");
}

std::vector<Delivery> AmqpClient::consume(const std::string &queue, std::size_t atLeast,
                                          std::chrono::milliseconds limit, std::chrono::milliseconds quiet) {
    Impl &d = *impl_;
    const amqp_channel_t ch = d.nextChannel++;
    amqp_channel_open(d.conn, ch);
    d.check("channel.open");
    amqp_basic_consume(d.conn, ch, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, /*no_ack=*/1, 0,
                       amqp_empty_table);
    d.check(("basic.consume " + queue).c_str());

    std::vector<Delivery> out;
    auto until = std::chrono::steady_clock::now() + limit;
    auto lastMessage = std::chrono::steady_clock::now();
    for (;;) {
        auto now = std::chrono::steady_clock::now();
        if (now >= until) break;
        if (out.size() >= atLeast && now - lastMessage >= quiet) break;
        amqp_maybe_release_buffers(d.conn);
        amqp_envelope_t env{};
        timeval tv{0, 50'000};
        amqp_rpc_reply_t r = amqp_consume_message(d.conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) continue;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            amqp_frame_t frame;
            if (amqp_simple_wait_frame_noblock(d.conn, &frame, &tv) == AMQP_STATUS_OK &&
                frame.frame_type == AMQP_FRAME_METHOD &&
                (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                 frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD))
                throw std::runtime_error("consume " + queue + ": the broker closed the channel");
            continue;
        }
        if (r.reply_type != AMQP_RESPONSE_NORMAL) throw std::runtime_error("consume " + queue + ": " + describe(r));
        Delivery m;
        m.exchange = bytes(env.exchange);
        m.routingKey = bytes(env.routing_key);
        m.body = bytes(env.message.body);
        const amqp_basic_properties_t &p = env.message.properties;
        if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) m.contentType = bytes(p.content_type);
        if (p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) m.deliveryMode = p.delivery_mode;
        if (p._flags & AMQP_BASIC_TIMESTAMP_FLAG) m.timestamp = p.timestamp;
        if (p._flags & AMQP_BASIC_CORRELATION_ID_FLAG) m.correlationId = bytes(p.correlation_id);
        if (p._flags & AMQP_BASIC_HEADERS_FLAG)
            for (int i = 0; i < p.headers.num_entries; ++i) {
                const amqp_table_entry_t &e = p.headers.entries[i];
                if (e.value.kind == AMQP_FIELD_KIND_UTF8 || e.value.kind == AMQP_FIELD_KIND_BYTES)
                    m.headers[bytes(e.key)] = bytes(e.value.value.bytes);
            }
        amqp_destroy_envelope(&env);
        out.push_back(std::move(m));
        lastMessage = std::chrono::steady_clock::now();
    }
    amqp_channel_close(d.conn, ch, AMQP_REPLY_SUCCESS);
    return out;
}

} // namespace wsgw::itest

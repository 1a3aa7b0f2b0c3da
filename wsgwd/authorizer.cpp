#include "authorizer.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <pthread.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace wsgw::daemon {

namespace {

using json = nlohmann::json;

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
    return out;
}

// Not the client's to forward: hop-by-hop fields (RFC 9110 7.6.1) and the WebSocket handshake's own.
bool notForwarded(const std::string &name) {
    static const char *const kSkip[] = {"connection",          "keep-alive",        "proxy-authenticate",
                                        "proxy-authorization", "te",                "trailer",
                                        "transfer-encoding",   "upgrade",           "sec-websocket-key",
                                        "sec-websocket-version", "sec-websocket-extensions", "content-length"};
    return std::any_of(std::begin(kSkip), std::end(kSkip), [&](const char *s) { return name == s; });
}

// "http://host:port" and "/path?query" of a URL (validated by the config).
std::pair<std::string, std::string> splitUrl(const std::string &url) {
    const auto scheme = url.find("://");
    const auto slash = scheme == std::string::npos ? std::string::npos : url.find('/', scheme + 3);
    if (slash == std::string::npos) return {url, "/"};
    return {url.substr(0, slash), url.substr(slash)};
}

AuthorizeDecision failed(std::string why, bool failOpen) {
    AuthorizeDecision d;
    d.outcome = failOpen ? AuthorizeDecision::Outcome::FailedOpen : AuthorizeDecision::Outcome::Failed;
    d.status = 503;
    d.message = std::move(why);
    return d;
}

} // namespace

const char *outcomeName(AuthorizeDecision::Outcome o) noexcept {
    switch (o) {
    case AuthorizeDecision::Outcome::Accepted: return "accepted";
    case AuthorizeDecision::Outcome::Refused: return "refused";
    case AuthorizeDecision::Outcome::Failed: return "failed";
    case AuthorizeDecision::Outcome::FailedOpen: return "failed_open";
    }
    return "?";
}

std::string authorizeBody(const AuthorizeQuestion &q, const AuthorizeSettings &settings) {
    json headers = json::object();
    for (const auto &[name, value] : q.headers) {
        const std::string n = lower(name);
        const bool wanted = settings.forwardHeaders.empty()
                                ? !notForwarded(n)
                                : std::find(settings.forwardHeaders.begin(), settings.forwardHeaders.end(), n) !=
                                      settings.forwardHeaders.end();
        if (!wanted) continue;
        // A field sent twice is one field with the values in a comma list (RFC 9110 5.3).
        if (auto it = headers.find(n); it != headers.end())
            *it = it->get<std::string>() + ", " + value;
        else
            headers[n] = value;
    }
    char id[ConnectionId::kTextLength];
    q.connectionId.format(id);
    json body{{"connection_id", std::string(id, sizeof id)},
              {"endpoint", q.endpoint},
              {"path", q.path},
              {"query", q.query},
              {"headers", std::move(headers)},
              {"remote_addr", q.remoteAddr}};
    // Bytes that are not UTF-8 (a client's header) become U+FFFD rather than an exception.
    return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

AuthorizeDecision decideAuthorize(const AuthorizeAnswer &answer, bool failOpen) {
    if (answer.status == 0) return failed("no answer: " + answer.error, failOpen);
    if (answer.status >= 400 && answer.status < 500) {
        AuthorizeDecision d;
        d.outcome = AuthorizeDecision::Outcome::Refused;
        d.status = static_cast<unsigned>(answer.status);
        d.message = answer.body.empty() ? "refused by the authorizer" : answer.body.substr(0, 1024);
        return d;
    }
    if (answer.status < 200 || answer.status >= 300) return failed("HTTP " + std::to_string(answer.status), failOpen);
    const json body = json::parse(answer.body, nullptr, false);
    if (!body.is_object()) return failed("the answer is not a JSON object", failOpen);
    AuthorizeDecision d;
    d.outcome = AuthorizeDecision::Outcome::Accepted;
    d.status = 101;
    if (auto tags = body.find("tags"); tags != body.end() && !tags->is_null()) {
        if (!tags->is_object()) return failed("\"tags\" is not an object", failOpen);
        for (const auto &[k, v] : tags->items()) {
            if (k.empty()) return failed("a tag with an empty name", failOpen);
            if (v.is_string())
                d.tags.emplace_back(k, v.get<std::string>());
            else if (v.is_number() || v.is_boolean())
                d.tags.emplace_back(k, v.dump());
            else
                return failed("tag '" + k + "' is not a string", failOpen);
        }
    }
    if (auto id = body.find("id"); id != body.end() && !id->is_null()) {
        std::optional<ConnectionId> parsed;
        if (id->is_string()) parsed = ConnectionId::parse(id->get<std::string>());
        if (!parsed) return failed("\"id\" is not a UUID", failOpen);
        d.id = parsed;
    }
    return d;
}

struct AuthorizerPool::Impl {
    struct Job {
        std::string url;
        std::string body;
        std::chrono::milliseconds timeout;
        std::function<void(AuthorizeAnswer)> done;
    };
    std::size_t maxQueued;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Job> jobs; // guarded by mu
    bool stopping = false; // guarded by mu
    std::vector<std::thread> threads;

    void run() {
        // Keep-alive connections of this thread, by origin.
        std::map<std::string, std::unique_ptr<httplib::Client>> clients;
        for (;;) {
            Job job;
            {
                std::unique_lock lock(mu);
                cv.wait(lock, [&] { return stopping || !jobs.empty(); });
                if (jobs.empty()) return;
                job = std::move(jobs.front());
                jobs.pop_front();
            }
            const auto [origin, path] = splitUrl(job.url);
            std::unique_ptr<httplib::Client> &c = clients[origin];
            if (!c) {
                c = std::make_unique<httplib::Client>(origin);
                c->set_keep_alive(true);
                c->set_tcp_nodelay(true); // else Nagle holds the body for the server's delayed ACK
            }
            c->set_connection_timeout(job.timeout);
            c->set_read_timeout(job.timeout);
            c->set_write_timeout(job.timeout);
            AuthorizeAnswer answer;
            httplib::Result res = c->Post(path, job.body, "application/json");
            if (res) {
                answer.status = res->status;
                answer.body = res->body;
            } else {
                answer.error = httplib::to_string(res.error());
            }
            try {
                job.done(std::move(answer));
            } catch (...) {
            }
        }
    }
};

AuthorizerPool::AuthorizerPool(std::size_t threads, std::size_t maxQueued) : impl_(std::make_unique<Impl>()) {
    impl_->maxQueued = maxQueued;
    for (std::size_t i = 0; i < std::max<std::size_t>(threads, 1); ++i)
        impl_->threads.emplace_back([d = impl_.get()] {
            pthread_setname_np(pthread_self(), "wsgw-authorize");
            d->run();
        });
}

AuthorizerPool::~AuthorizerPool() {
    {
        std::lock_guard lock(impl_->mu);
        impl_->stopping = true;
        impl_->jobs.clear(); // their `done` never runs: the shards are gone by now
    }
    impl_->cv.notify_all();
    for (auto &t : impl_->threads) t.join();
}

bool AuthorizerPool::submit(std::string url, std::string body, std::chrono::milliseconds timeout,
                            std::function<void(AuthorizeAnswer)> done) {
    {
        std::lock_guard lock(impl_->mu);
        if (impl_->stopping || impl_->jobs.size() >= impl_->maxQueued) return false;
        impl_->jobs.push_back({std::move(url), std::move(body), timeout, std::move(done)});
    }
    impl_->cv.notify_one();
    return true;
}

} // namespace wsgw::daemon

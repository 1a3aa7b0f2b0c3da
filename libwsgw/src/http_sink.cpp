// The webhook event sink (stream_http): events as signed JSON POSTs, on cpp-httplib. See
// makeHttpSink in <wsgw/sink.h>.
//
// One keep-alive client per lane, created once and used by one thread at a time: lane 0 on the
// sink's thread, the others on threads started for a publish() call that has more than one
// request's worth of events (under load; a trickle of events costs one request on one thread).
// Every wait is bounded by `timeout` (connect, each send and each receive); cancel() stops the
// clients, which makes a request under way fail at once.
#include "webhook_signature.h"

#include <wsgw/sink.h>
#include <wsgw/version.h>

#include <httplib.h>

#include <atomic>
#include <ctime>
#include <mutex>
#include <thread>

namespace wsgw {

namespace {

// "http(s)://HOST[:PORT]" and the path after it ("/" when there is none).
struct HttpUrl {
    std::string origin;
    std::string path;
};

std::optional<HttpUrl> splitUrl(const std::string &url, std::string *error) {
    const auto scheme = url.find("://");
    const std::string s = scheme == std::string::npos ? "" : url.substr(0, scheme);
    if (s != "http" && s != "https") {
        if (error) *error = "'" + url + "' is not an http:// or https:// URL";
        return std::nullopt;
    }
    const auto slash = url.find('/', scheme + 3);
    HttpUrl u{url.substr(0, slash), slash == std::string::npos ? "/" : url.substr(slash)};
    if (u.origin.size() == scheme + 3 || u.origin.find_first_of(" @?#") != std::string::npos) {
        if (error) *error = "'" + url + "' has no valid host";
        return std::nullopt;
    }
    return u;
}

class HttpSink final : public EventSink {
public:
    HttpSink(HttpSinkOptions options, HttpUrl url, std::string key)
        : options_(std::move(options)), url_(std::move(url)), key_(std::move(key)) {
        for (std::size_t i = 0; i < options_.maxInFlight; ++i) {
            auto c = std::make_unique<httplib::Client>(url_.origin);
            const auto t = options_.timeout;
            c->set_connection_timeout(t);
            c->set_read_timeout(t);
            c->set_write_timeout(t);
            c->set_keep_alive(true);
            // Headers and body go out in separate writes: without this, Nagle holds the body
            // until the server's delayed ACK (40 ms a request).
            c->set_tcp_nodelay(true);
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
            c->enable_server_certificate_verification(true);
            if (!options_.caFile.empty()) c->set_ca_cert_path(options_.caFile);
#endif
            clients_.push_back(std::move(c));
        }
    }

    std::string name() const override { return "http"; }
    bool connect() override { return !cancelled_.load(); }
    void onFailure() override {
        // A failed lane may have left its connection in any state; start afresh.
        for (auto &c : clients_) c->stop();
    }
    std::string lastError() const override {
        std::lock_guard lock(errorMu_);
        return error_;
    }
    void cancel() noexcept override {
        cancelled_.store(true);
        for (auto &c : clients_) c->stop();
    }

    std::size_t publish(const std::vector<EventPtr> &batch) override {
        if (cancelled_.load()) return 0;
        const std::size_t per = options_.batchMaxEvents;
        const std::size_t lanes = std::min(clients_.size(), (batch.size() + per - 1) / per);
        // Each lane's events, in batch order; a connection's events all in one lane.
        std::vector<std::vector<std::size_t>> lane(lanes);
        for (std::size_t i = 0; i < batch.size(); ++i)
            lane[lanes == 1 ? 0 : batch[i]->connection.hash() % lanes].push_back(i);
        // Per lane: the index (in batch) of its first event not delivered; batch.size() if none.
        std::vector<std::size_t> firstFailed(lanes, batch.size());
        auto runLane = [&](std::size_t l) {
            const std::vector<std::size_t> &idx = lane[l];
            for (std::size_t from = 0; from < idx.size(); from += per) {
                const std::size_t to = std::min(idx.size(), from + per);
                if (!post(*clients_[l], batch, idx, from, to)) {
                    firstFailed[l] = idx[from];
                    return;
                }
            }
        };
        std::vector<std::thread> helpers;
        for (std::size_t l = 1; l < lanes; ++l) {
            if (lane[l].empty()) continue;
            try {
                helpers.emplace_back(runLane, l);
            } catch (...) {
                runLane(l); // no thread to be had: this lane in turn, on this thread
            }
        }
        runLane(0);
        for (auto &t : helpers) t.join();
        std::size_t acked = batch.size();
        for (std::size_t f : firstFailed) acked = std::min(acked, f);
        return acked;
    }

private:
    // POSTs batch[idx[from..to)] as one signed request; true on a 2xx answer.
    bool post(httplib::Client &client, const std::vector<EventPtr> &batch, const std::vector<std::size_t> &idx,
              std::size_t from, std::size_t to) {
        std::string body = "[";
        for (std::size_t i = from; i < to; ++i) {
            if (i > from) body += ',';
            body += toJson(*batch[idx[i]], options_.node);
        }
        body += ']';
        char id[ConnectionId::kTextLength];
        ConnectionId::random().format(id);
        const std::string msgId = "msg_" + std::string(id, sizeof id);
        const std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
        httplib::Headers headers{{"webhook-id", msgId}, {"webhook-timestamp", std::to_string(now)},
                                 {"User-Agent", std::string("wsgw/") + WSGW_VERSION_STRING}};
        if (!key_.empty()) headers.emplace("webhook-signature", webhook::signature(key_, msgId, now, body));
        httplib::Result res = client.Post(url_.path, headers, body, "application/json");
        if (res && res->status >= 200 && res->status < 300) return true;
        std::string why = "POST " + options_.url + ": ";
        if (res)
            why += "HTTP " + std::to_string(res->status);
        else
            why += cancelled_.load() ? "cancelled" : httplib::to_string(res.error());
        std::lock_guard lock(errorMu_);
        error_ = std::move(why);
        return false;
    }

    HttpSinkOptions options_;
    HttpUrl url_;
    std::string key_; // the decoded secret; empty: unsigned
    std::vector<std::unique_ptr<httplib::Client>> clients_;
    std::atomic<bool> cancelled_{false};
    mutable std::mutex errorMu_;
    std::string error_; // guarded by errorMu_
};

} // namespace

std::unique_ptr<EventSink> makeHttpSink(HttpSinkOptions options, std::string *error) {
    auto fail = [&](std::string why) -> std::unique_ptr<EventSink> {
        if (error) *error = std::move(why);
        return nullptr;
    };
    std::string why;
    auto url = splitUrl(options.url, &why);
    if (!url) return fail(why);
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
    if (options.url.rfind("https:", 0) == 0) return fail("https:// needs cpp-httplib built with OpenSSL");
#endif
    if (options.batchMaxEvents == 0) return fail("batch_max_events must be at least 1");
    if (options.maxInFlight == 0) return fail("max_in_flight must be at least 1");
    std::string key;
    if (!options.secret.empty()) {
        auto k = webhook::decodeSecret(options.secret, &why);
        if (!k) return fail(why);
        key = std::move(*k);
    }
    return std::make_unique<HttpSink>(std::move(options), std::move(*url), std::move(key));
}

} // namespace wsgw

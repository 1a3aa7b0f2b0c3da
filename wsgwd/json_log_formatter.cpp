#include "json_log_formatter.h"

#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace wsgw::daemon {

void JsonLogFormatter::format(const spdlog::details::log_msg &msg, spdlog::memory_buf_t &dest) {
    using namespace std::chrono;
    const auto since = msg.time.time_since_epoch();
    const std::time_t secs = static_cast<std::time_t>(duration_cast<seconds>(since).count());
    const auto millis = static_cast<int>(duration_cast<milliseconds>(since).count() % 1000);
    std::tm utc{};
    gmtime_r(&secs, &utc);
    char time[80]; // 24 bytes in fact; room for any int the compiler imagines
    std::snprintf(time, sizeof time, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                  utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis);

    const spdlog::string_view_t level = spdlog::level::to_string_view(msg.level);
    nlohmann::ordered_json line = { // in this order: time, level, msg
        {"time", time},
        {"level", std::string(level.data(), level.size())},
        {"msg", std::string(msg.payload.data(), msg.payload.size())},
    };
    const std::string text = line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
}

std::unique_ptr<spdlog::formatter> JsonLogFormatter::clone() const { return std::make_unique<JsonLogFormatter>(); }

} // namespace wsgw::daemon

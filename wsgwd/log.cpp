#include "log.h"

#include "json_log_formatter.h"

#include <libwebsockets.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

namespace wsgw::daemon {

namespace {

void lwsLog(int level, const char *line) {
    std::string_view text(line);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    if (level & LLL_ERR)
        spdlog::error("lws: {}", text);
    else if (level & LLL_WARN)
        spdlog::warn("lws: {}", text);
    else
        spdlog::debug("lws: {}", text);
}

std::unique_ptr<spdlog::formatter> makeFormatter(LogFormat format) {
    if (format == LogFormat::Json) return std::make_unique<JsonLogFormatter>();
    return std::make_unique<spdlog::pattern_formatter>("%Y/%m/%d %H:%M:%S %l %v");
}

} // namespace

void setLogFormat(LogFormat format) { spdlog::default_logger()->set_formatter(makeFormatter(format)); }

bool setupLogging(const std::string &level, LogFormat format) {
    auto lvl = spdlog::level::from_str(level);
    // from_str answers "off" for anything it does not know; only accept "off" when asked for.
    if (lvl == spdlog::level::off && level != "off") return false;
    spdlog::drop("wsgwd");
    auto logger = spdlog::stderr_logger_mt("wsgwd");
    logger->set_formatter(makeFormatter(format));
    logger->set_level(lvl);
    logger->flush_on(spdlog::level::info);
    spdlog::set_default_logger(logger);

    int lwsLevels = LLL_ERR | LLL_WARN;
    if (lvl <= spdlog::level::debug) lwsLevels |= LLL_NOTICE;
    lws_set_log_level(lwsLevels, lwsLog);
    return true;
}

} // namespace wsgw::daemon

// The step after parseConfig that touches the filesystem: the config file itself and the files
// it names (TLS certificates and keys, control_token_file, stream_http.secret_file, the endpoints'
// JWT keys).
#include "config.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace wsgw::daemon {

namespace {

using File = std::unique_ptr<std::FILE, int (*)(std::FILE *)>;

File open(const std::string &path) {
    return File(std::fopen(path.c_str(), "rb"), std::fclose);
}

bool fail(std::string *error, std::string message) {
    if (error) *error = std::move(message);
    return false;
}

} // namespace

bool readConfigFiles(Config &config, std::string *error) {
    for (const ConfigFile &f : config.files) {
        File fp = open(f.path);
        if (!fp) {
            const int err = errno;
            return fail(error, f.at + ": " + f.key + ": cannot read '" + f.path + "': " + std::strerror(err));
        }
        if (f.use == ConfigFile::Use::Readable) continue;
        std::string token;
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, fp.get())) > 0 && token.size() < 65536)
            token.append(buf, n);
        while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' '))
            token.pop_back();
        if (token.empty()) return fail(error, f.at + ": " + f.key + ": '" + f.path + "' is empty");
        if (f.use == ConfigFile::Use::Content) {
            if (std::string why = f.store(config, std::move(token)); !why.empty())
                return fail(error, f.at + ": " + f.key + ": '" + f.path + "': " + why);
            continue;
        }
        config.control.token = std::move(token);
    }
    return true;
}

std::optional<Config> loadConfigText(std::string_view yamlText, const std::string &file, std::string *error) {
    auto config = parseConfig(yamlText, file, error);
    if (config && !readConfigFiles(*config, error)) return std::nullopt;
    return config;
}

std::optional<Config> loadConfig(const std::string &path, std::string *error) {
    File f = open(path);
    if (!f) {
        const int err = errno;
        fail(error, path + ": cannot read: " + std::strerror(err));
        return std::nullopt;
    }
    std::string text;
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0)
        text.append(buf, n);
    if (std::ferror(f.get())) {
        const int err = errno;
        fail(error, path + ": cannot read: " + std::strerror(err));
        return std::nullopt;
    }
    return loadConfigText(text, path, error);
}

} // namespace wsgw::daemon

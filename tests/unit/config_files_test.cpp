// The file step of loading a config (wsgwd/config.h: readConfigFiles, loadConfigText,
// loadConfig): parseConfig only records the files a config names; opening them comes after,
// with the same FILE:LINE:COL messages.

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "config.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

using namespace wsgw::daemon;

namespace {

const std::string kEndpoint = "endpoints:\n  - path: /connect\n";

/// A file under /tmp with the given content, removed at the end of the test.
class TempFile {
public:
    explicit TempFile(const std::string &content) {
        char name[] = "/tmp/wsgw-config-files-XXXXXX";
        int fd = mkstemp(name);
        REQUIRE(fd >= 0);
        path_ = name;
        REQUIRE(write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
        close(fd);
    }
    ~TempFile() { std::remove(path_.c_str()); }
    TempFile(const TempFile &) = delete;
    TempFile &operator=(const TempFile &) = delete;
    const std::string &path() const { return path_; }

private:
    std::string path_;
};

Config parsed(const std::string &yaml) {
    std::string error;
    auto c = parseConfig(yaml, "t.yml", &error);
    REQUIRE_MESSAGE(c, error);
    return *c;
}

std::string loadError(const std::string &yaml) {
    std::string error;
    CHECK_FALSE(loadConfigText(yaml, "t.yml", &error));
    return error;
}

} // namespace

TEST_CASE("parseConfig opens no file: it records each one with its key and place") {
    Config c = parsed(kEndpoint + "tls: {cert: /nonexistent/a.crt, key: /nonexistent/a.key}\n"
                                  "control_token_file: /nonexistent/tok\n"
                                  "control_tls:\n  key: /nonexistent/c.key\n  cert: /nonexistent/c.crt\n");
    CHECK(c.control.token.empty()); // not read yet
    REQUIRE(c.files.size() == 5);
    using Use = ConfigFile::Use;
    const struct {
        Use use;
        const char *key, *path, *at;
    } want[] = {
        {Use::Readable, "tls.cert", "/nonexistent/a.crt", "t.yml:3:13"},
        {Use::Readable, "tls.key", "/nonexistent/a.key", "t.yml:3:38"},
        {Use::ControlToken, "control_token_file", "/nonexistent/tok", "t.yml:4:21"},
        {Use::Readable, "control_tls.key", "/nonexistent/c.key", "t.yml:6:8"},
        {Use::Readable, "control_tls.cert", "/nonexistent/c.crt", "t.yml:7:9"},
    };
    for (std::size_t i = 0; i < c.files.size(); ++i) {
        CAPTURE(i);
        CHECK(c.files[i].use == want[i].use);
        CHECK(c.files[i].key == want[i].key);
        CHECK(c.files[i].path == want[i].path);
        CHECK(c.files[i].at == want[i].at);
    }
    CHECK(parsed(kEndpoint).files.empty());
    CHECK(parsed(kEndpoint + "control_token: abc\n").files.empty());
}

TEST_CASE("readConfigFiles reports the first file, in the order written, that cannot be read") {
    TempFile ok("-----BEGIN CERTIFICATE-----\n"); // readable is all this step asks
    CHECK(loadError(kEndpoint + "control_tls: {cert: " + ok.path() + ", key: /nonexistent/k}\n" +
                    "tls: {cert: /nonexistent/c, key: " + ok.path() + "}\n") ==
          "t.yml:3:" + std::to_string(28 + ok.path().size()) +
              ": control_tls.key: cannot read '/nonexistent/k': No such file or directory");
    CHECK(loadError(kEndpoint + "tls: {cert: /nonexistent/c, key: /nonexistent/k}\n") ==
          "t.yml:3:13: tls.cert: cannot read '/nonexistent/c': No such file or directory");

    std::string error;
    auto c = loadConfigText(kEndpoint + "tls: {cert: " + ok.path() + ", key: " + ok.path() + "}\n", "t.yml",
                            &error);
    REQUIRE_MESSAGE(c, error);
    CHECK(c->ws.tls->cert == ok.path());
    CHECK(c->ws.tls->key == ok.path());
}

TEST_CASE("control_token_file: read by readConfigFiles, trailing newlines and spaces dropped") {
    TempFile token("s3cret token\r\n \n");
    Config c = parsed(kEndpoint + "control_token_file: " + token.path() + "\n");
    CHECK(c.control.token.empty());
    std::string error;
    REQUIRE_MESSAGE(readConfigFiles(c, &error), error);
    CHECK(c.control.token == "s3cret token");

    TempFile empty(" \n\n");
    CHECK(loadError(kEndpoint + "control_token_file: " + empty.path() + "\n") ==
          "t.yml:3:21: control_token_file: '" + empty.path() + "' is empty");
    CHECK(loadError(kEndpoint + "control_token_file: /\n") == "t.yml:3:21: control_token_file: '/' is empty");
}

TEST_CASE("control_token and control_token_file exclude each other, in either order") {
    std::string error;
    CHECK_FALSE(
        parseConfig(kEndpoint + "control_token_file: /nonexistent/tok\ncontrol_token: a\n", "t.yml", &error));
    CHECK(error == "t.yml:4:1: give control_token or control_token_file, not both");
    CHECK_FALSE(
        parseConfig(kEndpoint + "control_token: a\ncontrol_token_file: /nonexistent/tok\n", "t.yml", &error));
    CHECK(error == "t.yml:4:1: give control_token or control_token_file, not both");
}

TEST_CASE("loadConfig: the file, then the files it names") {
    TempFile token("from-file\n");
    TempFile config(kEndpoint + "control_token_file: " + token.path() + "\n");
    std::string error;
    auto c = loadConfig(config.path(), &error);
    REQUIRE_MESSAGE(c, error);
    CHECK(c->file == config.path());
    CHECK(c->control.token == "from-file");

    TempFile broken(kEndpoint + "tls: {cert: /nonexistent/c, key: /nonexistent/k}\n");
    CHECK_FALSE(loadConfig(broken.path(), &error));
    CHECK(error ==
          broken.path() + ":3:13: tls.cert: cannot read '/nonexistent/c': No such file or directory");
}

#include <wsgw/event.h>
#include <wsgw/template.h>

#include <doctest/doctest.h>

using namespace wsgw;

namespace {
Template parsed(std::string_view text) {
    std::string error;
    auto t = Template::parse(text, &error);
    REQUIRE_MESSAGE(t, error);
    return *t;
}
JsonExtractor extractor(std::vector<std::pair<std::string, std::string>> vars) {
    std::string error;
    auto x = JsonExtractor::create(vars, &error);
    REQUIRE_MESSAGE(x, error);
    return *x;
}
} // namespace

TEST_CASE("constant templates") {
    Template t = parsed("connectionevents");
    CHECK(t.isConstant());
    CHECK(t.render({}, {}) == "connectionevents");
    CHECK(parsed("").render({}, {}).empty());
}

TEST_CASE("tags, vars, defaults and the missing marker") {
    Template t = parsed("events-{tag.group}-{json.command:unknown_command}-{tag.region}");
    CHECK_FALSE(t.isConstant());
    CHECK(t.tagNames() == std::vector<std::string>{"group", "region"});
    CHECK(t.varNames() == std::vector<std::string>{"command"});
    CHECK(t.render({{"group", "a"}}, {{"command", "join"}}) == "events-a-join-_");
    CHECK(t.render({{"group", "a"}, {"region", "eu"}}, {}) == "events-a-unknown_command-eu");
    CHECK(parsed("{tag.x:}").render({}, {}).empty()); // an explicit empty default
    CHECK(parsed("{tag.x:a:b}").render({}, {}) == "a:b");
    CHECK(parsed("{tag.x}{tag.x}").tagNames() == std::vector<std::string>{"x"});
}

TEST_CASE("braces that open no placeholder are literal (Redis hash tags)") {
    CHECK(parsed("{user}:events:{tag.g}").render({{"g", "1"}}, {}) == "{user}:events:1");
    CHECK(parsed("a}b{").render({}, {}) == "a}b{");
    CHECK(parsed("{other.x}").isConstant());
}

TEST_CASE("invalid templates name the column") {
    std::string error;
    CHECK_FALSE(Template::parse("events-{tag.group", &error));
    CHECK(error == "unterminated placeholder at column 8: missing '}'");
    CHECK_FALSE(Template::parse("x{json.}", &error));
    CHECK(error == "invalid name '' in placeholder at column 2: use letters, digits and '_'");
    CHECK_FALSE(Template::parse("{tag.a-b}", &error));
    CHECK(error == "invalid name 'a-b' in placeholder at column 1: use letters, digits and '_'");
}

TEST_CASE("rendering an event reads included and context tags and vars") {
    Event e;
    e.tags = {{"group", "g1"}};
    e.context = {{"tenant", "t9"}};
    e.vars = {{"command", "ping"}};
    CHECK(parsed("{tag.tenant}/{tag.group}/{json.command}/{json.other:none}").render(e) == "t9/g1/ping/none");
}

TEST_CASE("JSON extraction: nested paths, indices, types") {
    JsonExtractor x = extractor({{"ref", "data.actionRef"},
                                 {"first", "items.0.id"},
                                 {"second", "items[1].id"},
                                 {"num", "data.n"},
                                 {"flag", "data.ok"},
                                 {"obj", "data.obj"},
                                 {"nul", "data.nothing"},
                                 {"missing", "data.absent.deeper"},
                                 {"oob", "items.7.id"}});
    Vars v = x.extract(R"({"data":{"actionRef":"abc","n":12.5,"ok":true,"obj":{"k":[1,2]},"nothing":null},
                          "items":[{"id":"i0"},{"id":7}]})");
    CHECK(v == Vars{{"ref", "abc"}, {"first", "i0"}, {"second", "7"}, {"num", "12.5"}, {"flag", "true"},
                    {"obj", R"({"k":[1,2]})"}});
    CHECK(x.names().size() == 9);
}

TEST_CASE("JSON extraction: non-JSON and non-object bodies yield nothing") {
    JsonExtractor x = extractor({{"c", "command"}});
    CHECK(x.extract("hello there").empty());
    CHECK(x.extract("{\"command\": ").empty());
    CHECK(x.extract("42").empty());
    CHECK(x.extract("").empty());
    CHECK(x.extract(R"({"command":"go"})") == Vars{{"c", "go"}});
    // A numeric segment on an object is a member name.
    CHECK(extractor({{"z", "m.0"}}).extract(R"({"m":{"0":"zero"}})") == Vars{{"z", "zero"}});
}

TEST_CASE("invalid extraction specs") {
    std::string error;
    CHECK_FALSE(JsonExtractor::create({{"bad-name", "a"}}, &error));
    CHECK(error == "invalid variable name 'bad-name': use letters, digits and '_'");
    CHECK_FALSE(JsonExtractor::create({{"v", "a..b"}}, &error));
    CHECK(error == "variable 'v': empty segment in path 'a..b' at column 3");
    CHECK_FALSE(JsonExtractor::create({{"v", "a[x]"}}, &error));
    CHECK(error == "variable 'v': bad array index in path 'a[x]' at column 2");
    CHECK_FALSE(JsonExtractor::create({{"v", ""}}, &error));
    CHECK_FALSE(JsonExtractor::create({{"v", "a."}}, &error));
    CHECK_FALSE(JsonExtractor::create({{"v", "a[0]b"}}, &error));
}

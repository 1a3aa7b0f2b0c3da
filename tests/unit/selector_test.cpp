#include <wsgw/selector.h>
#include <wsgw/tags.h>

#include <doctest/doctest.h>

using namespace wsgw;

namespace {
Selector parsed(std::string_view q) {
    std::string error;
    auto s = Selector::parse(q, &error);
    REQUIRE_MESSAGE(s, error);
    return *s;
}
std::string parseError(std::string_view q) {
    std::string error;
    CHECK_FALSE(Selector::parse(q, &error));
    return error;
}
} // namespace

TEST_CASE("form decoding") {
    CHECK(parseForm("a=1&b=x+y&c=%41%2b%2F") == TagList{{"a", "1"}, {"b", "x y"}, {"c", "A+/"}});
    CHECK(parseForm("") == TagList{});
    CHECK(parseForm("&&a=1&&") == TagList{{"a", "1"}});
    CHECK(parseForm("flag") == TagList{{"flag", ""}});
    CHECK(parseForm("a==b") == TagList{{"a", "=b"}});
    CHECK(parseForm("k%20ey=v%C3%A9") == TagList{{"k ey", "v\xC3\xA9"}});
    CHECK(parseForm("a=%00") == TagList{{"a", std::string(1, '\0')}});
    std::string error;
    CHECK_FALSE(parseForm("a=%zz", &error));
    CHECK(error == "malformed %-escape at offset 2");
    CHECK_FALSE(parseForm("a=1&b=%4", &error));
    CHECK(error == "malformed %-escape at offset 6");
    CHECK_FALSE(parseForm("a=1&=2", &error));
    CHECK(error == "empty key at offset 4");
    CHECK_FALSE(parseForm("%", &error));
    CHECK(error == "malformed %-escape at offset 0");
}

TEST_CASE("form encoding round-trips") {
    Tags t{{"a b", "x&y=z"}, {"plain", "v"}, {"utf", "\xC3\xA9"}};
    std::string enc = encodeForm(t);
    CHECK(enc == "a+b=x%26y%3Dz&plain=v&utf=%C3%A9");
    auto back = parseForm(enc);
    REQUIRE(back);
    CHECK(Tags(back->begin(), back->end()) == t);
    CHECK(formEncode("~-._") == "~-._");
    CHECK(formDecode("%2") == std::nullopt);
}

TEST_CASE("tag selectors: AND of pairs, first value of a repeated key wins") {
    Selector s = parsed("group=a&admin=1");
    CHECK(s.kind() == Selector::Kind::AllOf);
    CHECK(s.tags() == TagList{{"admin", "1"}, {"group", "a"}});
    CHECK(parsed("a=1&a=2").tags() == TagList{{"a", "1"}});
    CHECK(parsed("a=1&b=2&a=3").tags() == TagList{{"a", "1"}, {"b", "2"}});
    CHECK(parsed("name=John+Smith&city=S%C3%A3o").tags() == TagList{{"city", "S\xC3\xA3o"}, {"name", "John Smith"}});
    CHECK(s.matches(ConnectionId::random(), {{"group", "a"}, {"admin", "1"}, {"x", "y"}}));
    CHECK_FALSE(s.matches(ConnectionId::random(), {{"group", "a"}}));
    CHECK_FALSE(s.matches(ConnectionId::random(), {{"group", "a"}, {"admin", "2"}}));
}

TEST_CASE("an empty query selects no one") {
    CHECK(parsed("").kind() == Selector::Kind::None);
    CHECK(parsed("&&").kind() == Selector::Kind::None);
    CHECK_FALSE(parsed("").matches(ConnectionId::random(), {}));
    CHECK(Selector::all().matches(ConnectionId::random(), {}));
}

TEST_CASE("id selectors") {
    ConnectionId a = ConnectionId::random(), b = ConnectionId::random();
    Selector s = parsed("group=x&id=" + a.toString() + "," + b.toString() + ",,bogus,&admin=1");
    CHECK(s.kind() == Selector::Kind::Ids);
    CHECK(s.ids().size() == 2);
    CHECK(s.tags().empty());
    CHECK(s.matches(a, {}));
    CHECK_FALSE(s.matches(ConnectionId::random(), {{"group", "x"}}));
    // Upper-case hex is the same id; %2C is a comma too.
    std::string upper = a.toString();
    for (char &c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    CHECK(parsed("id=" + upper).ids() == std::vector<ConnectionId>{a});
    CHECK(parsed("id=" + a.toString() + "%2C" + b.toString()).ids().size() == 2);
    // Nothing usable in the id list: no one, not the tag terms.
    CHECK(parsed("id=&group=x").kind() == Selector::Kind::None);
    CHECK(parsed("id=,,").kind() == Selector::Kind::None);
    // The first id= wins like any repeated key.
    CHECK(parsed("id=" + a.toString() + "&id=" + b.toString()).ids() == std::vector<ConnectionId>{a});
}

TEST_CASE("malformed selectors are errors with a position") {
    CHECK(parseError("a=%G1") == "malformed %-escape at offset 2");
    CHECK(parseError("=x") == "empty key at offset 0");
    CHECK(parseError("a=1&=x") == "empty key at offset 4");
    CHECK(parseError("id=%") == "malformed %-escape at offset 3");
}

TEST_CASE("toString parses back to the same selector") {
    ConnectionId a = ConnectionId::random();
    for (const Selector &s : {parsed("b=2&a=x+y"), parsed("id=" + a.toString()), Selector::none(), Selector::all()}) {
        CHECK(parsed(s.toString()) == s);
    }
}

TEST_CASE("* is everyone, and only alone") {
    CHECK(Selector::all().toString() == "*");
    Selector all = parsed("*");
    CHECK(all.kind() == Selector::Kind::All);
    CHECK(all.matches(ConnectionId::random(), Tags{}));
    // Anywhere else `*` is a key without a value, which selects no one.
    CHECK_FALSE(parsed("*&a=1").matches(ConnectionId::random(), Tags{{"a", "1"}, {"*", "x"}}));
    CHECK(parsed("%2A").kind() == Selector::Kind::AllOf);
}

TEST_CASE("connection ids") {
    ConnectionId a = ConnectionId::random();
    std::string text = a.toString();
    REQUIRE(text.size() == 36);
    CHECK(text[14] == '4');                                    // version 4
    CHECK(std::string("89ab").find(text[19]) != std::string::npos); // RFC 4122 variant
    CHECK(ConnectionId::parse(text) == a);
    CHECK(ConnectionId::parse(text.substr(1)) == std::nullopt);
    CHECK(ConnectionId::parse("0123456789abcdef0123456789abcdef0123") == std::nullopt);
    CHECK(ConnectionId::parse("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz") == std::nullopt);
    CHECK(ConnectionId().isNil());
    CHECK(ConnectionId::random() != ConnectionId::random());
}

namespace {
Selector json(std::string_view text) {
    std::string error;
    auto s = Selector::parseJson(text, &error);
    REQUIRE_MESSAGE(s, error);
    return *s;
}
std::string jsonError(std::string_view text) {
    std::string error;
    CHECK_FALSE(Selector::parseJson(text, &error));
    return error;
}
} // namespace

TEST_CASE("JSON selectors: what each clause means") {
    ConnectionId me = ConnectionId::random(), other = ConnectionId::random();
    const Tags tags{{"group", "a"}, {"admin", "1"}};
    auto m = [&](std::string_view text, ConnectionId id = ConnectionId()) {
        return json(text).matches(id.isNil() ? me : id, tags);
    };
    CHECK(m(R"({})"));
    CHECK(m(R"({"all":{"group":"a","admin":"1"}})"));
    CHECK_FALSE(m(R"({"all":{"group":"a","admin":"0"}})"));
    CHECK(m(R"({"any":{"group":["b","a"]}})"));
    CHECK_FALSE(m(R"({"any":{"group":["b","c"]}})"));
    CHECK_FALSE(m(R"({"any":{"missing":["a"]}})"));
    CHECK(m(R"({"not":{"group":"b"}})"));
    CHECK(m(R"({"not":{"missing":"x"}})"));
    CHECK_FALSE(m(R"({"not":{"group":"a"}})"));
    CHECK(m(R"({"has":["group","admin"]})"));
    CHECK_FALSE(m(R"({"has":["group","missing"]})"));
    CHECK(m(R"({"ids":[")" + me.toString() + R"("]})"));
    CHECK_FALSE(m(R"({"ids":[")" + me.toString() + R"("]})", other));
    CHECK_FALSE(m(R"({"exclude_ids":[")" + me.toString() + R"("]})"));
    CHECK(m(R"({"exclude_ids":[")" + me.toString() + R"("]})", other));
    // The AND of every clause.
    CHECK(m(R"({"all":{"group":"a"},"any":{"admin":["0","1"]},"not":{"admin":"2"},"has":["admin"],"exclude_ids":[")" +
            other.toString() + R"("]})"));
    CHECK_FALSE(m(R"({"all":{"group":"a"},"any":{"admin":["0","1"]},"not":{"admin":"1"}})"));
}

TEST_CASE("JSON selectors: the simplest kind that says it, canonical text that reads back") {
    ConnectionId a = ConnectionId::random(), b = ConnectionId::random();
    CHECK(json(R"({})").kind() == Selector::Kind::All);
    CHECK(json(R"({"all":{"b":"2","a":"1"}})") == Selector::withTags({{"a", "1"}, {"b", "2"}}));
    CHECK(json(R"({"ids":[")" + a.toString() + R"("]})") == Selector::withIds({a}));
    CHECK(json(R"({"ids":[")" + a.toString() + "\",\"" + b.toString() + R"("],"exclude_ids":[")" + b.toString() +
               R"("]})") == Selector::withIds({a}));
    CHECK(json(R"({"ids":[]})").kind() == Selector::Kind::None);
    CHECK(json(R"({"any":{"k":[]}})").kind() == Selector::Kind::None);
    Selector w = json(R"({"has":["z","a","z"],"any":{"k":["2","1","2"]},"not":{"x":"y"}})");
    REQUIRE(w.kind() == Selector::Kind::Where);
    REQUIRE(w.clauses());
    CHECK(w.clauses()->has == std::vector<std::string>{"a", "z"});
    CHECK(w.clauses()->any.at(0).second == std::vector<std::string>{"1", "2"});
    CHECK(w.toString() == R"({"any":{"k":["1","2"]},"has":["a","z"],"not":{"x":"y"}})");
    // What toString() writes, fromString() reads back, every kind.
    for (const Selector &s : {w, json(R"({"exclude_ids":[")" + a.toString() + R"("]})"), Selector::none(), Selector::all(),
                              Selector::withTags({{"a", "b c"}}), Selector::withIds({a, b})}) {
        auto back = Selector::fromString(s.toString());
        REQUIRE(back);
        CHECK(*back == s);
        CHECK(json(s.toJson()) == s);
    }
    CHECK(Selector::none().toJson() == R"({"ids":[]})");
    CHECK(Selector::all().toJson() == "{}");
}

TEST_CASE("JSON selectors: malformed ones name the clause") {
    CHECK(jsonError("[]") == "selector: expected an object");
    CHECK(jsonError(R"({"al":{}})") == "al: unknown clause (expected all, any, not, has, ids or exclude_ids)");
    CHECK(jsonError(R"({"all":{"k":1}})") == "all.k: expected a string");
    CHECK(jsonError(R"({"all":{"k":""}})") == "all.k: empty (a tag's key and value are never empty)");
    CHECK(jsonError(R"({"all":{"":"v"}})") == "all: an empty key");
    CHECK(jsonError(R"({"all":{"id":"v"}})") == R"(all: `id` is not a tag (select connections by id with "ids"))");
    CHECK(jsonError(R"({"any":{"k":"v"}})") == "any.k: expected an array");
    CHECK(jsonError(R"({"any":{"k":["a",2]}})") == "any.k[1]: expected a string");
    CHECK(jsonError(R"({"has":"k"})") == "has: expected an array");
    CHECK(jsonError(R"({"ids":["nope"]})") == "ids[0]: not a connection id (a UUID): nope");
    CHECK(jsonError(R"({"exclude_ids":[1]})") == "exclude_ids[0]: expected a connection id (a string)");
    CHECK(jsonError(R"({"all":)").rfind("not JSON: ", 0) == 0);
}

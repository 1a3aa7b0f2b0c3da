// Fuzz target: stream-name / routing-key templates with JSON variables: wsgw::Template::parse and
// render, wsgw::JsonExtractor::create and extract (<wsgw/template.h>, <wsgw/event.h>).
//
// The input is three parts, one per line, the last taking the rest:
//   line 1   the template, e.g.  events.{tag.group:none}.{json.command}
//   line 2   the variables, NAME=PATH items separated by '&', taken byte for byte (no decoding),
//            e.g.  command=data.command&first=items[0].id
//   rest     the JSON message body the variables are extracted from
// Besides "no crash, no leak, no undefined behaviour, no exception", it checks:
//  - a template error names a column where a "{tag." or "{json." placeholder starts;
//  - a parsed template keeps its source, lists valid unique names, is constant exactly when it
//    has none (and then renders as its source), and renders every placeholder it names;
//  - render(Event) agrees with render(tags, vars), whether the tags are in the event's `tags` or
//    in its `context`;
//  - a JsonExtractor error names one of the variables; names() keeps the given order; extract
//    returns only those names, nothing for a body that is not JSON, and for a one-segment path
//    on an object the member's text.
//
// Run it with `make fuzz` or tests/fuzz/run.sh (tests/fuzz/README.md); by hand:
//   build-fuzz/tests/fuzz/template_fuzz -max_len=4096 -dict=tests/fuzz/template.dict
//       SCRATCH_DIR tests/fuzz/corpus/template

#include "fuzz_check.h"

#include <wsgw/event.h>
#include <wsgw/template.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using wsgw::fuzz::printable;
using VarSpec = std::vector<std::pair<std::string, std::string>>;

bool isName(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    });
}

/// Splits off the text up to the first '\n' (all of it when there is none).
std::string_view takeLine(std::string_view &rest) {
    std::size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    return line;
}

VarSpec parseSpec(std::string_view line) {
    VarSpec spec;
    std::size_t start = 0;
    while (start < line.size()) {
        std::size_t end = std::min(line.find('&', start), line.size());
        std::string_view item = line.substr(start, end - start);
        std::size_t eq = item.find('=');
        spec.emplace_back(std::string(item.substr(0, eq)),
                          eq == std::string_view::npos ? std::string() : std::string(item.substr(eq + 1)));
        start = end + 1;
    }
    return spec;
}

void checkTemplateError(std::string_view text, const std::string &error) {
    auto column = wsgw::fuzz::numberAfter(error, " at column ");
    FUZZ_CHECK(column.has_value(), "no column in '" + printable(error) + "' for '" + printable(text) + "'");
    FUZZ_CHECK(*column >= 1 && *column <= text.size(), "column out of range in '" + printable(error) + "'");
    std::string_view at = text.substr(*column - 1);
    FUZZ_CHECK(at.substr(0, 5) == "{tag." || at.substr(0, 6) == "{json.",
               "column does not point at a placeholder: '" + printable(error) + "' for '" + printable(text) +
                   "'");
}

void checkNames(const wsgw::Template &t, const std::vector<std::string> &names) {
    for (std::size_t i = 0; i < names.size(); ++i) {
        FUZZ_CHECK(isName(names[i]),
                   "invalid name '" + printable(names[i]) + "' from '" + printable(t.source()) + "'");
        FUZZ_CHECK(std::find(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(i), names[i]) ==
                       names.begin() + static_cast<std::ptrdiff_t>(i),
                   "duplicate name '" + names[i] + "' from '" + printable(t.source()) + "'");
    }
}

void checkTemplate(std::string_view text, const wsgw::Template &t, const wsgw::Tags &tags,
                   const wsgw::Vars &vars) {
    FUZZ_CHECK(t.source() == text, "source() is not the text parsed: '" + printable(text) + "'");
    std::vector<std::string> tagNames = t.tagNames(), varNames = t.varNames();
    checkNames(t, tagNames);
    checkNames(t, varNames);
    FUZZ_CHECK(t.isConstant() == (tagNames.empty() && varNames.empty()),
               "isConstant() disagrees with the names of '" + printable(text) + "'");
    if (t.isConstant())
        FUZZ_CHECK(t.render(tags, vars) == text,
                   "a constant template renders otherwise: '" + printable(text) + "'");
    if (text.find('{') == std::string_view::npos)
        FUZZ_CHECK(t.isConstant(), "a template without braces has placeholders: '" + printable(text) + "'");

    // Every placeholder it names renders its value: give each a marker value and look for it.
    wsgw::Tags marked;
    wsgw::Vars markedVars;
    for (const std::string &n : tagNames)
        marked.emplace(n, "<t:" + n + ">");
    for (const std::string &n : varNames)
        markedVars.emplace(n, "<v:" + n + ">");
    std::string full = t.render(marked, markedVars);
    for (const auto &[n, v] : marked)
        FUZZ_CHECK(full.find(v) != std::string::npos,
                   "tag '" + n + "' not rendered by '" + printable(text) + "'");
    for (const auto &[n, v] : markedVars)
        FUZZ_CHECK(full.find(v) != std::string::npos,
                   "var '" + n + "' not rendered by '" + printable(text) + "'");

    // The event overload looks tags up in `tags`, then `context`: splitting them changes nothing.
    std::string expected = t.render(tags, vars);
    wsgw::Event event;
    event.action = wsgw::EventAction::Message;
    event.vars = vars;
    event.tags = tags;
    FUZZ_CHECK(t.render(event) == expected,
               "render(Event) != render(tags, vars) for '" + printable(text) + "'");
    event.tags.clear();
    bool toContext = false;
    for (const auto &[k, v] : tags) {
        (toContext ? event.context : event.tags).emplace(k, v);
        toContext = !toContext;
    }
    FUZZ_CHECK(t.render(event) == expected, "render with context tags differs for '" + printable(text) + "'");
}

/// Checks extract's result against the spec and an independent look at the body.
void checkExtract(const VarSpec &spec, std::string_view body, const wsgw::Vars &vars) {
    for (const auto &found : vars)
        FUZZ_CHECK(
            std::any_of(spec.begin(), spec.end(), [&](const auto &v) { return v.first == found.first; }),
            "extract returned '" + printable(found.first) + "', which is not a variable");
    auto doc = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_structured()) {
        FUZZ_CHECK(vars.empty(),
                   "variables from a body that is not a JSON object or array: '" + printable(body) + "'");
        return;
    }
    if (!doc.is_object()) return;
    for (const auto &var : spec) {
        const std::string &name = var.first, &path = var.second;
        if (std::count_if(spec.begin(), spec.end(), [&](const auto &v) { return v.first == name; }) != 1)
            continue;
        if (path.find_first_of(".[") != std::string::npos) continue;
        auto member = doc.find(path);
        auto found = vars.find(name);
        if (member == doc.end() || member->is_null()) {
            FUZZ_CHECK(found == vars.end(),
                       "'" + printable(name) + "' extracted from an absent or null member");
        } else if (member->is_string()) {
            FUZZ_CHECK(found != vars.end() && found->second == member->get_ref<const std::string &>(),
                       "'" + printable(name) + "' is not the string member '" + printable(path) + "'");
        } else {
            FUZZ_CHECK(found != vars.end() && !found->second.empty(),
                       "'" + printable(name) + "' missing for member '" + printable(path) + "'");
        }
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
    std::string_view rest(reinterpret_cast<const char *>(data), size);
    std::string_view text = takeLine(rest);
    VarSpec spec = parseSpec(takeLine(rest));
    std::string_view body = rest;

    std::string error;
    auto extractor = wsgw::JsonExtractor::create(spec, &error);
    wsgw::Vars vars;
    if (!extractor) {
        FUZZ_CHECK(
            std::any_of(spec.begin(), spec.end(),
                        [&](const auto &v) { return error.find("'" + v.first + "'") != std::string::npos; }),
            "the error '" + printable(error) + "' names no variable");
    } else {
        std::vector<std::string> names = extractor->names();
        FUZZ_CHECK(names.size() == spec.size() && extractor->empty() == spec.empty(),
                   "names() lost variables");
        for (std::size_t i = 0; i < names.size(); ++i)
            FUZZ_CHECK(names[i] == spec[i].first && isName(names[i]), "names() out of order or invalid");
        vars = extractor->extract(body);
        checkExtract(spec, body, vars);
    }

    // The connection's tags: a fixed pair, and the extracted variables under the same names.
    wsgw::Tags tags{{"group", "a"}, {"user", "u1"}};
    for (const auto &[k, v] : vars)
        if (!v.empty()) tags.emplace(k, v);

    error.clear();
    auto t = wsgw::Template::parse(text, &error);
    if (!t) {
        checkTemplateError(text, error);
        return 0;
    }
    checkTemplate(text, *t, tags, vars);
    return 0;
}

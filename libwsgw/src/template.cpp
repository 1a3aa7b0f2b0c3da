#include <wsgw/template.h>

#include <algorithm>

namespace wsgw {

namespace {

bool isNameChar(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

constexpr std::string_view kMissing = "_";

} // namespace

std::optional<Template> Template::parse(std::string_view text, std::string *error) {
    Template t;
    t.source_ = std::string(text);
    std::string literal;
    auto flush = [&] {
        if (!literal.empty()) t.parts_.push_back(Part{Kind::Literal, std::move(literal), std::nullopt});
        literal.clear();
    };
    std::size_t i = 0;
    while (i < text.size()) {
        std::string_view rest = text.substr(i);
        Kind kind;
        std::size_t prefix;
        if (rest.substr(0, 5) == "{tag.") {
            kind = Kind::Tag;
            prefix = 5;
        } else if (rest.substr(0, 6) == "{json.") {
            kind = Kind::Var;
            prefix = 6;
        } else {
            literal.push_back(text[i++]);
            continue;
        }
        std::size_t close = rest.find('}');
        if (close == std::string_view::npos) {
            if (error) *error = "unterminated placeholder at column " + std::to_string(i + 1) + ": missing '}'";
            return std::nullopt;
        }
        std::string_view body = rest.substr(prefix, close - prefix);
        std::size_t colon = body.find(':');
        std::string_view name = body.substr(0, colon);
        if (name.empty() || !std::all_of(name.begin(), name.end(), isNameChar)) {
            if (error)
                *error = "invalid name '" + std::string(name) + "' in placeholder at column " + std::to_string(i + 1) +
                         ": use letters, digits and '_'";
            return std::nullopt;
        }
        flush();
        Part part{kind, std::string(name), std::nullopt};
        if (colon != std::string_view::npos) part.fallback = std::string(body.substr(colon + 1));
        t.parts_.push_back(std::move(part));
        i += close + 1;
    }
    flush();
    return t;
}

template <class TagLookup, class VarLookup> std::string Template::renderWith(TagLookup tag, VarLookup var) const {
    std::string out;
    for (const Part &p : parts_) {
        if (p.kind == Kind::Literal) {
            out += p.text;
            continue;
        }
        const std::string *value = p.kind == Kind::Tag ? tag(p.text) : var(p.text);
        if (value && !value->empty()) {
            out += *value;
        } else if (p.fallback) {
            out += *p.fallback;
        } else {
            out += kMissing;
        }
    }
    return out;
}

std::string Template::render(const Event &event) const {
    return renderWith([&](const std::string &name) { return event.findTag(name); },
                      [&](const std::string &name) -> const std::string * {
                          auto it = event.vars.find(name);
                          return it == event.vars.end() ? nullptr : &it->second;
                      });
}

std::string Template::render(const Tags &tags, const Vars &vars) const {
    return renderWith(
        [&](const std::string &name) -> const std::string * {
            auto it = tags.find(name);
            return it == tags.end() ? nullptr : &it->second;
        },
        [&](const std::string &name) -> const std::string * {
            auto it = vars.find(name);
            return it == vars.end() ? nullptr : &it->second;
        });
}

namespace {
template <class Parts, class Kind> std::vector<std::string> namesOf(const Parts &parts, Kind kind) {
    std::vector<std::string> out;
    for (const auto &p : parts)
        if (p.kind == kind && std::find(out.begin(), out.end(), p.text) == out.end()) out.push_back(p.text);
    return out;
}
} // namespace

std::vector<std::string> Template::tagNames() const { return namesOf(parts_, Kind::Tag); }
std::vector<std::string> Template::varNames() const { return namesOf(parts_, Kind::Var); }

bool Template::isConstant() const noexcept {
    return std::all_of(parts_.begin(), parts_.end(), [](const Part &p) { return p.kind == Kind::Literal; });
}

} // namespace wsgw

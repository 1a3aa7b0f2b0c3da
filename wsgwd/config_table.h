#pragma once

// The machinery of config_schema.cpp's tables: a Section is a table of Keys, one per key of a
// YAML map; each Key says how its value is read (number(), flag(), choice(), hostPort(), ...:
// the type, the bounds, the field it fills), and whether it must be given. walk() reads a map
// by its table: unknown keys are errors with a suggestion (yaml_walker.h), each value goes
// where its row says, missing required keys are named.
//
// Thread-compatible: the tables are immutable once built; a Reader is used by one parse.

#include "broker_url.h"
#include "config.h"
#include "yaml_walker.h"

#include <wsgw/template.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsgw::daemon::schema {

/// What reading a key has at hand: the walker (typed reads, errors) and the whole config, for
/// what a key records beyond its own value (the files it names).
struct Reader {
    const Walker &w;
    Config &config;
};

/// Reads one key's value into a T. `name` is the key's full name for messages
/// ("stream_redis.addr", "endpoints[0].path").
template <class T> using Read = std::function<void(Reader &, const Entry &, const std::string &name, T &)>;

/// A row: a key and how its value is read (its type and bounds are in the Read: number(), ...).
template <class T> struct Key {
    Key(std::string_view name_, Read<T> read_, const char *requiredExample_ = nullptr)
        : name(name_)
        , read(std::move(read_))
        , requiredExample(requiredExample_) {}
    std::string_view name;
    Read<T> read;
    /// Not null: the key must be given, and the message for its absence offers this example.
    const char *requiredExample;
};

/// What a section written with nothing after it ("tls:") means.
enum class IfNull {
    Empty,    ///< an empty map: its required keys are missing
    Defaults, ///< the defaults, even where keys are required when the map is given
    Absent,   ///< not configured: an optional section stays unset
};

/// A table: the keys of one map, read into a T.
template <class T> struct Section {
    Section(std::string_view what_, IfNull ifNull_, std::vector<Key<T>> keys_,
            std::function<void(T &)> finish_ = {})
        : what(what_)
        , ifNull(ifNull_)
        , keys(std::move(keys_))
        , finish(std::move(finish_)) {
        for (const Key<T> &k : keys)
            names.push_back(k.name);
    }
    std::string_view what; ///< for "expected WHAT, got a list"
    IfNull ifNull;
    std::vector<Key<T>> keys;            ///< in the order "known keys are ..." lists them
    std::vector<std::string_view> names; ///< the keys' names, for the walker
    std::function<void(T &)> finish;     ///< settles values that depend on several keys
};

inline const Entry *findEntry(const std::vector<Entry> &entries, std::string_view key) {
    for (const Entry &e : entries)
        if (e.key == key) return &e;
    return nullptr;
}

/// Reads the map `node` into `target` by `section`. `name` names the map in messages ("" is
/// the top level); a missing required key is blamed on `at`. Returns the entries given.
template <class T>
std::vector<Entry> walk(Reader &r, const YAML::Node &node, const std::string &name, const YAML::Mark &at,
                        const Section<T> &section, T &target) {
    std::vector<Entry> given = r.w.entries(node, name, section.names);
    for (const Entry &e : given) {
        const Key<T> &key = *std::find_if(section.keys.begin(), section.keys.end(),
                                          [&](const Key<T> &k) { return k.name == e.key; });
        key.read(r, e, name.empty() ? e.key : name + "." + e.key, target);
    }
    for (const Key<T> &key : section.keys)
        if (key.requiredExample && !findEntry(given, key.name))
            r.w.fail(at, name + ": missing '" + std::string(key.name) + "', e.g. " + key.requiredExample);
    if (section.finish) section.finish(target);
    return given;
}

/// The map under `e` read into `target`, null as the section says (not IfNull::Absent).
template <class T>
void readSection(Reader &r, const Entry &e, const std::string &name, const Section<T> &section, T &target) {
    const YAML::Node &node = r.w.map(e, name, section.what);
    if (node.IsNull() && section.ifNull == IfNull::Defaults) {
        if (section.finish) section.finish(target);
        return;
    }
    walk(r, node, name, e.keyNode.Mark(), section, target);
}

// ---------------------------------------------------------------------------------------------
// Reads by type: each says what it expects, its bounds, and which field it fills.

template <class T, class N> Read<T> number(N T::*field, std::uint64_t min, std::uint64_t max) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        t.*field = static_cast<N>(r.w.number(e, name, min, max));
    };
}

/// A number of `unit`-byte units (max_message_size_kb: 1024) into a field that holds bytes; the
/// bounds and messages are in the key's units.
template <class T, class N>
Read<T> bytes(N T::*field, std::size_t unit, std::uint64_t min, std::uint64_t max) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        t.*field = static_cast<N>(r.w.number(e, name, min, max)) * static_cast<N>(unit);
    };
}

/// A number of `Unit`s (std::chrono::seconds for a key ending in _s) into a std::chrono field;
/// the bounds and messages are in the key's units.
template <class Unit, class T, class D> Read<T> duration(D T::*field, std::uint64_t min, std::uint64_t max) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        t.*field = Unit(static_cast<typename Unit::rep>(r.w.number(e, name, min, max)));
    };
}

template <class T> Read<T> flag(bool T::*field) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) { t.*field = r.w.boolean(e, name); };
}

/// One of some names, each standing for a value of the field.
template <class T, class V> Read<T> choice(V T::*field, std::vector<std::pair<std::string_view, V>> values) {
    std::vector<std::string_view> names;
    for (const auto &v : values)
        names.push_back(v.first);
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        std::string s = r.w.choice(e, name, names);
        for (const auto &[n, v] : values)
            if (n == s) t.*field = v;
    };
}

/// One of some names, kept as the name.
template <class T> Read<T> oneOf(std::string T::*field, std::vector<std::string_view> names) {
    std::vector<std::pair<std::string_view, std::string>> values;
    for (std::string_view n : names)
        values.emplace_back(n, std::string(n));
    return choice(field, std::move(values));
}

/// Any text, empty included.
template <class T> Read<T> text(std::string T::*field, std::string_view what) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        t.*field = r.w.scalar(e, name, what);
    };
}

/// Any text but the empty one.
template <class T> Read<T> nonEmptyText(std::string T::*field, std::string_view what) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) { t.*field = r.w.nonEmpty(e, name, what); };
}

/// A wsgw::Template source, checked; a problem points at its character.
template <class T> Read<T> templateText(std::string T::*field, bool allowEmpty) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        std::string s = allowEmpty ? r.w.scalar(e, name, "a name") : r.w.nonEmpty(e, name, "a name");
        std::string why;
        auto parsed = wsgw::Template::parse(s, &why);
        if (!parsed) r.w.failWithin(e.value, name + ": invalid template '" + s + "': ", why);
        t.*field = parsed->source();
    };
}

template <class T> Read<T> hostPort(HostPort T::*field) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        std::string s = r.w.nonEmpty(e, name, "HOST:PORT, e.g. 0.0.0.0:5000");
        std::string why;
        auto hp = HostPort::parse(s, &why);
        if (!hp) r.w.fail(e.value.Mark(), name + ": " + why);
        t.*field = *hp;
    };
}

/// A Redis URL, parsed and handed to `store` with the target (which keeps what it needs of it).
template <class T> Read<T> redisUrl(void (*store)(const RedisAddress &, T &)) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        std::string s = r.w.nonEmpty(e, name, "a Redis URL, e.g. redis://localhost:6379/0");
        std::string why;
        auto addr = RedisAddress::parse(s, &why);
        if (!addr) r.w.fail(e.value.Mark(), name + ": invalid Redis URL '" + s + "': " + why);
        store(*addr, t);
    };
}

/// An AMQP URL, parsed and handed to `store`. A bad query option (heartbeat=soon) is named on
/// its own and pointed at.
template <class T> Read<T> amqpUrl(void (*store)(const AmqpAddress &, T &)) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        std::string s = r.w.nonEmpty(e, name, "an AMQP URL, e.g. amqp://guest:guest@localhost:5672/");
        std::string why;
        std::size_t optionAt = std::string::npos;
        auto addr = AmqpAddress::parse(s, &why, &optionAt);
        if (!addr && optionAt != std::string::npos) {
            bool exact = false;
            r.w.fail(r.w.charMark(e.value, optionAt, &exact), name + ": " + why);
        }
        if (!addr) r.w.fail(e.value.Mark(), name + ": invalid AMQP URL '" + s + "': " + why);
        store(*addr, t);
    };
}

/// The path of a file that must be readable; recorded for readConfigFiles, not opened here.
template <class T> Read<T> pemFile(std::string T::*field) {
    return [=](Reader &r, const Entry &e, const std::string &name, T &t) {
        t.*field = r.w.nonEmpty(e, name, "the path of a PEM file");
        r.config.files.push_back(
            {ConfigFile::Use::Readable, name, t.*field, position(r.config.file, e.value.Mark()), {}});
    };
}

/// A read of a member's own field: in(&Config::ws, number(&WsServerOptions::maxConnections, ...)).
template <class T, class M> Read<T> in(M T::*member, Read<M> read) {
    return [member, read = std::move(read)](Reader &r, const Entry &e, const std::string &name, T &t) {
        read(r, e, name, t.*member);
    };
}

/// A section into a field of the target.
template <class T, class S> Read<T> section(S T::*field, const Section<S> &keys) {
    return [field, &keys](Reader &r, const Entry &e, const std::string &name, T &t) {
        readSection(r, e, name, keys, t.*field);
    };
}

/// A section that may be left out; with IfNull::Absent a null one stays unset.
template <class T, class S> Read<T> optionalSection(std::optional<S> T::*field, const Section<S> &keys) {
    return [field, &keys](Reader &r, const Entry &e, const std::string &name, T &t) {
        if (keys.ifNull == IfNull::Absent && r.w.map(e, name, keys.what).IsNull()) return;
        S value;
        readSection(r, e, name, keys, value);
        t.*field = std::move(value);
    };
}

/// A section whose keys belong to the target itself (prometheus.enabled).
template <class T> Read<T> inPlace(const Section<T> &keys) {
    return [&keys](Reader &r, const Entry &e, const std::string &name, T &t) {
        readSection(r, e, name, keys, t);
    };
}

} // namespace wsgw::daemon::schema

// SPDX-License-Identifier: MIT
// Attaching programs where their ELF sections say, as libbpf's auto-attach does
// (`bpftime load FILE --attach`, `bpftime attach auto PROG_ID`).
#include "cli.hpp"

#include <bpftime/attach/attach.hpp>
#include <bpftime/provider/usdt_attach.hpp>

#include <cerrno>
#include <string_view>

namespace bpftime::cli {

result<section_target> section_target_of(std::string_view section) {
    auto after =
        [&](std::initializer_list<std::string_view> prefixes) -> std::optional<std::string_view> {
        for (std::string_view p : prefixes) {
            if (section.starts_with(p)) {
                return section.substr(p.size());
            }
        }
        return std::nullopt;
    };
    auto none = [&](const std::string &why) {
        return make_error(ENOENT, "section '" + std::string(section) + "' " + why);
    };
    // uprobe/BINARY:FUNCTION[+OFFSET] (libbpf's uprobe.s/ is the sleepable form of the same).
    for (const char *kind : {"uprobe", "uretprobe"}) {
        const std::string prefix = kind, plain = prefix + "/", sleepable = prefix + ".s/";
        if (section == prefix || section == prefix + ".s") {
            return none("names no target (attach it with bpftime attach " + prefix +
                        " PROG BINARY:SYMBOL)");
        }
        auto rest = after({plain, sleepable});
        if (!rest) {
            continue;
        }
        if (rest->starts_with("/proc/self/exe:")) {
            return none("names the loader's own executable (/proc/self/exe), which the command "
                        "line is not; attach it with bpftime attach " +
                        prefix + " PROG BINARY:SYMBOL");
        }
        if (rest->find(':') == std::string_view::npos) {
            return none("is not " + prefix + "/BINARY:FUNCTION[+OFFSET]");
        }
        return section_target{prefix, std::string(*rest)};
    }
    // tracepoint/CATEGORY/NAME, tp/CATEGORY/NAME.
    if (auto rest = after({"tracepoint/", "tp/"})) {
        auto slash = rest->find('/');
        if (slash == std::string_view::npos || slash == 0 || slash + 1 == rest->size()) {
            return none("is not tracepoint/CATEGORY/NAME");
        }
        return section_target{"tracepoint", std::string(rest->substr(0, slash)) + ":" +
                                                std::string(rest->substr(slash + 1))};
    }
    // raw_tracepoint/NAME, raw_tp/NAME.
    if (auto rest = after({"raw_tracepoint/", "raw_tp/"})) {
        if (rest->empty()) {
            return none("names no raw tracepoint");
        }
        return section_target{"raw_tracepoint", std::string(*rest)};
    }
    if (auto rest = after({"usdt/"})) {
        return section_target{"usdt", std::string(*rest)};
    }
    // Kernel functions (the kernel provider attaches them): kprobe/FUNC[+OFF], kretprobe/FUNC,
    // and the BTF-typed programs, whose section names what they were loaded for.
    for (const char *kind : {"kprobe", "kretprobe", "fentry", "fexit", "tp_btf"}) {
        const std::string prefix = kind;
        auto rest = after({prefix + "/", prefix + ".s/"});
        if (!rest) {
            continue;
        }
        if (rest->empty()) {
            return none("names no kernel function");
        }
        return section_target{prefix, std::string(*rest)};
    }
    return none("names no target bpftime attaches by itself (uprobe/, uretprobe/, tracepoint/, "
                "tp/, raw_tracepoint/, raw_tp/, usdt/, and on the kernel kprobe/, kretprobe/, "
                "fentry/, fexit/, tp_btf/ do)");
}

result<std::vector<auto_link>> attach_by_section(base_event_provider &provider, uint32_t prog_id,
                                                 std::string_view section) {
    auto where = section_target_of(section);
    if (!where) {
        return std::move(where).err();
    }
    std::vector<auto_link> out;
    if (where->type == "usdt") {
        auto links = attach_usdt(provider, prog_id, where->args, 0);
        if (!links) {
            return std::move(links).err();
        }
        for (const usdt_link &l : *links) {
            out.push_back({l.link_id, l.target_id, "usdt", where->args});
        }
        return out;
    }
    auto type = parse_attach_type(where->type);
    if (!type) {
        return make_error(EINVAL, "attach type " + where->type + " is not known here");
    }
    auto target = provider.create_attach_target(*type, where->args);
    if (!target) {
        return std::move(target).err();
    }
    auto link = provider.attach_program(prog_id, *target, 0);
    if (!link) {
        (void)provider.destroy_object(*target);
        return std::move(link).err();
    }
    out.push_back({*link, *target, where->type, where->args});
    return out;
}

} // namespace bpftime::cli

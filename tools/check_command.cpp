// SPDX-License-Identifier: MIT
// bpftime check: verifies the segment (segment::check) and prints each problem on a line of
// its own. Exit status 0 when the segment is consistent, 1 with findings (a segment refused at
// open is one: its header, version, owner or mode), 2 when there is nothing to check.
#include "cli.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <string>

namespace bpftime::cli {

namespace {

using json = nlohmann::ordered_json;

// Exit status for "nothing checked": no segment of that name, or the lock stayed busy.
constexpr int not_checked = 2;

int print_refused(const global_options &g, const std::string &name, const error &e) {
    if (g.json) {
        json out = {
            {"segment", name},
            {"clean", false},
            {"findings", json::array({{{"check", "open"}, {"id", 0}, {"message", e.message}}})}};
        std::printf("%s\n", out.dump(2).c_str());
    } else {
        std::printf("open: %s\n", e.message.c_str());
    }
    return 1;
}

int cmd_check(const global_options &g) {
    if (g.kernel()) {
        return report(make_error(EOPNOTSUPP, "check verifies a user-space segment; the kernel "
                                             "provider's objects are the kernel's (use "
                                             "--provider user)"));
    }
    const std::string name = store::segment_name(g.shm);
    auto seg = open_store(g, false);
    if (!seg) {
        if (seg.err().code == ENOENT) {
            report(seg.err());
            return not_checked;
        }
        return print_refused(g, name, seg.err());
    }
    auto checked = (*seg)->check();
    if (!checked) {
        report(checked.err());
        return not_checked;
    }
    const store::check_report &r = *checked;
    if (g.json) {
        json findings = json::array();
        for (const auto &f : r.findings) {
            findings.push_back({{"check", f.check}, {"id", f.id}, {"message", f.message}});
        }
        json dead = json::array();
        for (const auto &d : r.dead_hosts) {
            dead.push_back({{"link", d.link_id}, {"pid", d.pid}});
        }
        json out = {{"segment", name},          {"clean", r.findings.empty()},
                    {"findings", findings},     {"generation", r.generation},
                    {"objects", r.objects},     {"max_objects", r.max_objects},
                    {"next_id", r.next_id},     {"programs", r.programs},
                    {"maps", r.maps},           {"targets", r.targets},
                    {"links", r.links},         {"extents", r.extents},
                    {"heap_size", r.heap_size}, {"heap_used", r.heap_used},
                    {"heap_free", r.heap_free}, {"live_hosts", r.live_hosts},
                    {"dead_hosts", dead}};
        std::printf("%s\n", out.dump(2).c_str());
        return r.findings.empty() ? 0 : 1;
    }
    for (const auto &f : r.findings) {
        std::printf("%s: %s\n", f.check.c_str(), f.message.c_str());
    }
    for (const auto &d : r.dead_hosts) {
        std::printf("note: link %u has a host record of pid %d, which has exited (its counts "
                    "stay in the link's totals)\n",
                    d.link_id, d.pid);
    }
    std::printf("segment %s: %u objects (%u programs, %u maps, %u targets, %u links) of %u "
                "slots; heap %llu bytes used in %u extents + %llu free = %llu; %u running "
                "hosts, %zu exited; %s\n",
                name.c_str(), r.objects, r.programs, r.maps, r.targets, r.links, r.max_objects,
                static_cast<unsigned long long>(r.heap_used), r.extents,
                static_cast<unsigned long long>(r.heap_free),
                static_cast<unsigned long long>(r.heap_size), r.live_hosts, r.dead_hosts.size(),
                r.findings.empty() ? "consistent"
                                   : (std::to_string(r.findings.size()) + " problems").c_str());
    return r.findings.empty() ? 0 : 1;
}

} // namespace

void add_check_command(CLI::App &app, const global_options &g, int &status) {
    auto *check = app.add_subcommand(
        "check", "verify the segment: every record well formed, links and programs naming "
                 "objects that exist, map storage inside the heap and not overlapping, space "
                 "adding up, host records (exit 0: consistent, 1: problems found, 2: nothing "
                 "checked)");
    check->callback([&g, &status] { status = cmd_check(g); });
}

} // namespace bpftime::cli

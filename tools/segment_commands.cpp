// SPDX-License-Identifier: MIT
// Who may use the segment: --shm-group / $BPFTIME_SHM_GROUP, and bpftime segment info | chgrp |
// chmod for a segment that exists.
#include "cli.hpp"

#include <nlohmann/json.hpp>

#include <grp.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace bpftime::cli {

namespace {

using json = nlohmann::ordered_json;

// A group by name or number.
result<gid_t> parse_group(const std::string &text, const std::string &source) {
    if (text.empty()) {
        return make_error(EINVAL, source + " is empty; it takes a group name or number");
    }
    if (text.find_first_not_of("0123456789") == std::string::npos) {
        errno = 0;
        char *end = nullptr;
        unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (errno != 0 || v >= static_cast<unsigned long long>(static_cast<gid_t>(-1))) {
            return make_error(EINVAL, source + " '" + text + "' is not a group number");
        }
        return static_cast<gid_t>(v);
    }
    std::vector<char> buf(1 << 16);
    group gr{}, *found = nullptr;
    if (getgrnam_r(text.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
        return make_error(EINVAL, source + ": no group named '" + text +
                                      "' (see /etc/group; a group number works too)");
    }
    return found->gr_gid;
}

std::string octal(unsigned mode) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0%03o", mode & 07777);
    return buf;
}

result<unsigned> parse_mode(const std::string &text) {
    char *end = nullptr;
    errno = 0;
    unsigned long v = std::strtoul(text.c_str(), &end, 8);
    if (text.empty() || errno != 0 || *end != '\0' || v > 07777) {
        return make_error(EINVAL, "mode '" + text + "' is not an octal mode such as 0660");
    }
    return static_cast<unsigned>(v);
}

int cmd_info(const global_options &g) {
    std::string name = store::segment_name(g.shm);
    auto a = store::access_of_segment(name);
    if (!a) {
        return report(a.err().code == ENOENT
                          ? with_hint(a.err(), "bpftime load creates one; --shm or BPFTIME_SHM "
                                               "picks another name")
                          : a.err());
    }
    // The host processes and retired storage, when this process may read the segment.
    std::vector<store::host_process> hosts;
    std::vector<store::retired_object> retired;
    uint64_t generation = 0;
    bool readable = false;
    if (auto seg = store::segment::open(name, {.create = false})) {
        auto h = (*seg)->hosts();
        auto r = (*seg)->retired();
        if (h && r) {
            hosts = std::move(*h);
            retired = std::move(*r);
            generation = (*seg)->generation();
            readable = true;
        }
    }
    uint64_t retired_bytes = 0;
    for (const store::retired_object &r : retired) {
        retired_bytes += r.bytes;
    }
    if (g.json) {
        json out{{"name", name},    {"owner", store::user_name(a->owner)},
                 {"uid", a->owner}, {"group", store::group_name(a->group)},
                 {"gid", a->group}, {"mode", octal(a->mode)},
                 {"size", a->size}};
        if (readable) {
            json hj = json::array();
            for (const store::host_process &h : hosts) {
                hj.push_back({{"pid", h.pid}, {"passed", h.passed}});
            }
            out["generation"] = generation;
            out["hosts"] = std::move(hj);
            out["retired_objects"] = retired.size();
            out["retired_bytes"] = retired_bytes;
        }
        std::puts(out.dump().c_str());
        return 0;
    }
    std::printf("segment %s: owner %s (uid %u), group %s (gid %u), mode %s, %llu bytes\n",
                name.c_str(), store::user_name(a->owner).c_str(), a->owner,
                store::group_name(a->group).c_str(), a->group, octal(a->mode).c_str(),
                static_cast<unsigned long long>(a->size));
    std::string group = store::group_name(a->group);
    if ((a->mode & 0060) == 0060) {
        std::printf("processes of group %s may use it (hosts read and write it)\n", group.c_str());
    } else if ((a->mode & 0040) != 0) {
        std::printf("processes of group %s may read it but not host its programs (hosts read "
                    "and write it; `bpftime segment chmod 0660` lets them)\n",
                    group.c_str());
    } else {
        std::printf("only %s may use it (and root)\n", store::user_name(a->owner).c_str());
    }
    if (readable) {
        std::printf("generation %llu, %zu host process%s\n",
                    static_cast<unsigned long long>(generation), hosts.size(),
                    hosts.size() == 1 ? "" : "es");
        for (const store::host_process &h : hosts) {
            std::printf("host process %d: synchronised to generation %llu\n", h.pid,
                        static_cast<unsigned long long>(h.passed));
        }
        for (const store::retired_object &r : retired) {
            std::string pids;
            for (int32_t pid : r.held_by) {
                pids += (pids.empty() ? "" : ", ") + std::to_string(pid);
            }
            std::printf("retired storage of %s %u (%s): %llu bytes held by pid %s\n",
                        store::kind_name(r.kind), r.id, r.name.c_str(),
                        static_cast<unsigned long long>(r.bytes), pids.c_str());
        }
    }
    return 0;
}

int cmd_chgrp(const global_options &g, const std::string &group_text,
              const std::string &mode_text) {
    auto gid = parse_group(group_text, "group");
    if (!gid) {
        return report(gid.err());
    }
    auto mode = parse_mode(mode_text);
    if (!mode) {
        return report(mode.err());
    }
    std::string name = store::segment_name(g.shm);
    if (auto r = store::set_segment_access(name, *gid, *mode); !r) {
        return report(r.err());
    }
    std::printf("segment %s: group %s, mode %s\n", name.c_str(), store::group_name(*gid).c_str(),
                octal(*mode).c_str());
    return 0;
}

int cmd_chmod(const global_options &g, const std::string &mode_text) {
    auto mode = parse_mode(mode_text);
    if (!mode) {
        return report(mode.err());
    }
    std::string name = store::segment_name(g.shm);
    if (auto r = store::set_segment_access(name, std::nullopt, *mode); !r) {
        return report(r.err());
    }
    std::printf("segment %s: mode %s\n", name.c_str(), octal(*mode).c_str());
    return 0;
}

} // namespace

result<std::optional<gid_t>> shm_group(const global_options &g) {
    if (!g.shm_group.empty()) {
        auto gid = parse_group(g.shm_group, "--shm-group");
        if (!gid) {
            return gid.err();
        }
        return std::optional<gid_t>(*gid);
    }
    const char *env = std::getenv("BPFTIME_SHM_GROUP");
    if (env == nullptr || *env == '\0') {
        return std::optional<gid_t>();
    }
    auto gid = parse_group(env, "BPFTIME_SHM_GROUP");
    if (!gid) {
        return gid.err();
    }
    return std::optional<gid_t>(*gid);
}

result<store::open_options> store_options(const global_options &g, bool create) {
    store::open_options opts;
    opts.create = create;
    auto group = shm_group(g);
    if (!group) {
        return group.err();
    }
    if (*group) {
        opts.group = **group;
        opts.mode = 0660;
    }
    return opts;
}

error with_access_hint(const global_options &, const error &e) {
    if (e.code == EACCES) {
        return with_hint(e, "its owner can give it to a group of yours with `bpftime segment "
                            "chgrp GROUP`; --shm-group GROUP creates it so");
    }
    if (e.code == EPERM && e.message.find("can write it and") != std::string::npos) {
        return with_hint(e, "--shm-group GROUP or BPFTIME_SHM_GROUP names the group that may "
                            "write it; `bpftime segment info` shows its group");
    }
    return e;
}

void note_group_mismatch(const global_options &g, const store::open_options &opts) {
    if (!opts.group) {
        return;
    }
    std::string name = store::segment_name(g.shm);
    auto a = store::access_of_segment(name);
    if (!a || (a->group == *opts.group && (a->mode & 0060) == 0060)) {
        return;
    }
    std::fprintf(stderr,
                 "bpftime: note: segment %s is group %s with mode %s: processes of group %s "
                 "cannot use it (`bpftime segment chgrp %s` gives it to them)\n",
                 name.c_str(), store::group_name(a->group).c_str(), octal(a->mode).c_str(),
                 store::group_name(*opts.group).c_str(), store::group_name(*opts.group).c_str());
}

void add_segment_commands(CLI::App &app, const global_options &g, int &status) {
    auto *segment = app.add_subcommand(
        "segment", "who may use the segment: its owner, group and mode (user-space provider)");
    segment->require_subcommand(1);

    auto *info = segment->add_subcommand("info", "show the segment's owner, group and mode");
    info->callback([&] { status = cmd_info(g); });

    auto *chgrp = segment->add_subcommand(
        "chgrp", "give the segment to a group whose processes (nginx workers) use it; mode "
                 "0660 unless --mode says otherwise (root, or the owner for a group it is in)");
    static std::string group_text, chgrp_mode = "0660", chmod_mode;
    chgrp->add_option("group", group_text, "group name or number")->required();
    chgrp->add_option("--mode", chgrp_mode, "permission bits: 0660 (default), 0640 or 0600");
    chgrp->callback([&] { status = cmd_chgrp(g, group_text, chgrp_mode); });

    auto *chmod = segment->add_subcommand(
        "chmod", "set the segment's permission bits: 0600 (its owner only), 0660 (its group "
                 "reads and writes; what hosts of the group need) or 0640");
    chmod->add_option("mode", chmod_mode, "octal mode")->required();
    chmod->callback([&] { status = cmd_chmod(g, chmod_mode); });
}

} // namespace bpftime::cli

// SPDX-License-Identifier: MIT
// What a segment must be before it is used: owned and writable only by whom it should be, and
// a header that describes the mapping it is in. Also who may open a segment (its file's owner,
// group and mode) and changing that.
#include "open_checks.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace bpftime::store {

std::string user_name(uid_t uid) {
    char buf[4096];
    passwd pw{}, *found = nullptr;
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
        return found->pw_name;
    }
    return "?";
}

std::string group_name(gid_t gid) {
    // A group's entry lists its members: it can be far longer than a user's.
    std::vector<char> buf(1 << 16);
    group gr{}, *found = nullptr;
    if (getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
        return found->gr_name;
    }
    return "?";
}

namespace {

std::string octal(unsigned mode) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0%03o", mode & 07777);
    return buf;
}

// Whether this process is in group gid (effective or supplementary).
bool in_group(gid_t gid) {
    if (getegid() == gid) {
        return true;
    }
    int n = getgroups(0, nullptr);
    if (n <= 0) {
        return false;
    }
    std::vector<gid_t> groups(static_cast<size_t>(n));
    n = getgroups(n, groups.data());
    for (int i = 0; i < n; i++) {
        if (groups[static_cast<size_t>(i)] == gid) {
            return true;
        }
    }
    return false;
}

std::string who(uid_t uid) {
    return user_name(uid) + " (uid " + std::to_string(uid) + ")";
}

std::string which_group(gid_t gid) {
    return group_name(gid) + " (gid " + std::to_string(gid) + ")";
}

// "owner root, group www-data, mode 0660"
std::string describe(const struct stat &st) {
    return "owner " + user_name(st.st_uid) + ", uid " + std::to_string(st.st_uid) + ", group " +
           group_name(st.st_gid) + ", gid " + std::to_string(st.st_gid) + ", mode " +
           octal(st.st_mode);
}

std::string file_path(const std::string &name) {
    return "/dev/shm/" + name;
}

// The owner rule of check_trust; empty when it holds.
std::string owner_problem(const struct stat &st, const open_options &opts) {
    uid_t me = geteuid();
    if (opts.owner ? st.st_uid != *opts.owner : st.st_uid != 0 && st.st_uid != me) {
        return "it belongs to neither " +
               (opts.owner ? user_name(*opts.owner) + " (uid " + std::to_string(*opts.owner) +
                                 ", the configured owner)"
                           : std::string("root nor this user (uid ") + std::to_string(me) + ")");
    }
    return {};
}

} // namespace

result<segment_access> access_of_segment(const std::string &name) {
    struct stat st {};
    if (name.empty() || name.find('/') != std::string::npos) {
        return make_error(EINVAL, "bad segment name '" + name + "'");
    }
    if (stat(file_path(name).c_str(), &st) != 0) {
        int e = errno;
        if (e == ENOENT) {
            return make_error(ENOENT, "no segment named " + name);
        }
        return make_error(e, "segment " + name + ": " + std::strerror(e));
    }
    return segment_access{st.st_uid, st.st_gid, static_cast<unsigned>(st.st_mode & 07777),
                          static_cast<uint64_t>(st.st_size)};
}

result<void> set_segment_access(const std::string &name, std::optional<gid_t> group,
                                unsigned mode) {
    if ((mode & ~0666u) != 0 || (mode & 0007) != 0 || (mode & 0600) != 0600) {
        return make_error(EINVAL, "mode " + octal(mode) +
                                      " is not one a segment may have: the owner reads and "
                                      "writes it, its group may read or read and write it "
                                      "(0600, 0640, 0660), others get nothing");
    }
    if (name.empty() || name.find('/') != std::string::npos) {
        return make_error(EINVAL, "bad segment name '" + name + "'");
    }
    // O_NOFOLLOW: the name itself, not what a link planted under it points to.
    int fd = open(file_path(name).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            return make_error(ENOENT, "no segment named " + name);
        }
        if (e == EACCES) {
            return make_error(EACCES, detail::describe_denied(name));
        }
        return make_error(e, "segment " + name + ": " + std::strerror(e));
    }
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return make_error(e, "segment " + name + ": fstat: " + std::strerror(e));
    }
    if (auto problem = owner_problem(st, {}); !problem.empty()) {
        close(fd);
        return make_error(EPERM, "segment " + name + " is not trusted: " + problem + " (" +
                                     describe(st) + "); remove it with `rm /dev/shm/" + name +
                                     "` as root and create it again");
    }
    if (group && fchown(fd, static_cast<uid_t>(-1), *group) != 0) {
        int e = errno;
        close(fd);
        return make_error(e, "segment " + name + ": cannot give it to group " +
                                 which_group(*group) + ": " + std::strerror(e) +
                                 " (only root, or its owner for a group the owner is in, may)");
    }
    if (fchmod(fd, mode) != 0) {
        int e = errno;
        close(fd);
        return make_error(e, "segment " + name + ": cannot set mode " + octal(mode) + ": " +
                                 std::strerror(e) + " (only root or its owner may)");
    }
    close(fd);
    return {};
}

namespace detail {

std::string describe_denied(const std::string &name) {
    std::string what = "segment " + name + ": permission denied: this process (user " +
                       who(geteuid()) + ", group " + which_group(getegid()) +
                       ") may not read and write it";
    struct stat st {};
    if (stat(file_path(name).c_str(), &st) == 0) {
        what += " (" + describe(st) + ")";
    }
    return what + "; a host needs read and write access: the segment's group must be one of "
                  "the host's groups, with mode 0660";
}

result<void> check_trust(int fd, const std::string &name, const open_options &opts) {
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        return make_error(errno, "segment " + name + ": fstat: " + std::strerror(errno));
    }
    std::string problem = owner_problem(st, opts);
    bool group_problem = false;
    if (problem.empty() && (st.st_mode & S_IWOTH) != 0) {
        problem = "other users can write it";
    } else if (problem.empty() && (st.st_mode & S_IWGRP) != 0) {
        group_problem = true;
        if (opts.group && st.st_gid != *opts.group) {
            problem = "its group " + which_group(st.st_gid) +
                      " can write it and the configured group is " + which_group(*opts.group);
        } else if (!opts.group && !(opts.member_groups && in_group(st.st_gid))) {
            problem = "its group " + which_group(st.st_gid) +
                      " can write it and no group was configured" +
                      (opts.member_groups ? " nor is this process a member of it" : "");
        }
    }
    if (problem.empty()) {
        return {};
    }
    if (group_problem) {
        // Made so by its owner (root or this user): a deployment's group, not an intruder's.
        return make_error(EPERM, "segment " + name + " is not trusted: " + problem + " (" +
                                     describe(st) +
                                     "); to use it, name that group as the one that may write "
                                     "it, or have its owner take the group's write access away");
    }
    return make_error(EPERM, "segment " + name + " is not trusted: " + problem + " (owner " +
                                 user_name(st.st_uid) + ", uid " + std::to_string(st.st_uid) +
                                 ", mode " + octal(st.st_mode) + "); remove it with `rm /dev/shm/" +
                                 name + "` as root and create it again");
}

result<geometry> check_header(const header &h, uint64_t mapped, const std::string &name) {
    auto corrupt = [&](const std::string &why) {
        return make_error(EPROTO, "segment " + name + " is corrupt: " + why +
                                      " (remove it and load the objects again)");
    };
    if (load_acquire(h.ready) != 1) {
        return corrupt("its creator did not finish it");
    }
    if (h.size != mapped) {
        return corrupt("its header says " + std::to_string(h.size) + " bytes, it has " +
                       std::to_string(mapped));
    }
    if (h.header_size != sizeof(header) || h.slot_size != sizeof(slot)) {
        return corrupt("header size " + std::to_string(h.header_size) + " and slot size " +
                       std::to_string(h.slot_size) + " are not this layout's (" +
                       std::to_string(sizeof(header)) + ", " + std::to_string(sizeof(slot)) + ")");
    }
    geometry g;
    g.max_objects = h.max_objects;
    g.table_offset = h.table_offset;
    g.heap_offset = h.heap_offset;
    uint64_t table_end = g.table_offset + uint64_t{g.max_objects} * sizeof(slot);
    if (g.table_offset != round_up(sizeof(header), align) || g.max_objects == 0 ||
        g.heap_offset % align != 0 || table_end > g.heap_offset || g.heap_offset > mapped ||
        h.heap_size > mapped - g.heap_offset) {
        return corrupt("its table (offset " + std::to_string(g.table_offset) + ", " +
                       std::to_string(g.max_objects) + " slots) and heap (offset " +
                       std::to_string(g.heap_offset) + ", " + std::to_string(h.heap_size) +
                       " bytes) do not fit its " + std::to_string(mapped) + " bytes");
    }
    g.heap_end = g.heap_offset + h.heap_size;
    return g;
}

} // namespace detail
} // namespace bpftime::store

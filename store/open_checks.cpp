// SPDX-License-Identifier: MIT
// What a segment must be before it is used: owned and writable only by whom it should be, and
// a header that describes the mapping it is in.
#include "open_checks.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace bpftime::store::detail {

namespace {

std::string user_name(uid_t uid) {
    char buf[1024];
    passwd pw{}, *found = nullptr;
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
        return found->pw_name;
    }
    return "?";
}

std::string octal(unsigned mode) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0%03o", mode & 07777);
    return buf;
}

} // namespace

result<void> check_trust(int fd, const std::string &name, const open_options &opts) {
    struct stat st {};
    if (fstat(fd, &st) != 0) {
        return make_error(errno, "segment " + name + ": fstat: " + std::strerror(errno));
    }
    std::string problem;
    uid_t me = geteuid();
    if (opts.owner ? st.st_uid != *opts.owner : st.st_uid != 0 && st.st_uid != me) {
        problem = "it belongs to neither " +
                  (opts.owner ? user_name(*opts.owner) + " (uid " + std::to_string(*opts.owner) +
                                    ", the configured owner)"
                              : std::string("root nor this user (uid ") + std::to_string(me) + ")");
    } else if ((st.st_mode & S_IWOTH) != 0) {
        problem = "other users can write it";
    } else if ((st.st_mode & S_IWGRP) != 0 && (!opts.group || st.st_gid != *opts.group)) {
        problem = "its group (gid " + std::to_string(st.st_gid) +
                  ") can write it and no group was configured";
    }
    if (problem.empty()) {
        return {};
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

} // namespace bpftime::store::detail

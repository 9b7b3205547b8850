// SPDX-License-Identifier: MIT
// cgroup_array: slot i holds a cgroup v2 id (uint64, 0 when empty) in the value area, which
// programs cannot reach (map_view::value_area() is empty for this type). An update names the
// cgroup with a directory fd of the updating process, as Linux's does; the id it resolves to
// means the same cgroup in every process, so a program in any target can ask whether its
// process is in that cgroup's subtree (bpf_current_task_under_cgroup).
#include "layout.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

namespace bpftime::maps {

namespace detail {

namespace {

uint64_t &slot(const map_ref &m, uint32_t idx) {
    return *reinterpret_cast<uint64_t *>(m.base + m.lay.values + uint64_t{idx} * 8);
}

uint32_t index_of(std::span<const uint8_t> key) {
    uint32_t idx;
    std::memcpy(&idx, key.data(), sizeof idx);
    return idx;
}

error bad_index(uint32_t idx, const map_spec &spec) {
    return make_error(E2BIG, "index " + std::to_string(idx) + " out of range (max_entries " +
                                 std::to_string(spec.max_entries) + ")");
}

} // namespace

result<void> cgroup_array_write(const map_ref &m, std::span<const uint8_t> key,
                                std::span<const uint8_t> value, uint64_t flags) {
    if (value.size() != sizeof(int32_t)) {
        return make_error(EINVAL, "the value has " + std::to_string(value.size()) +
                                      " bytes; a cgroup array takes a 4-byte cgroup fd");
    }
    if (flags != update_any) {
        return make_error(EINVAL, "cgroup arrays take only BPF_ANY (0) updates, as in Linux");
    }
    uint32_t idx = index_of(key);
    if (idx >= m.spec.max_entries) {
        return bad_index(idx, m.spec);
    }
    int32_t fd;
    std::memcpy(&fd, value.data(), sizeof fd);
    auto id = cgroup_id_of_fd(fd);
    if (!id) {
        return std::move(id).err();
    }
    atomic(slot(m, idx)).store(*id, std::memory_order_release);
    return {};
}

result<void> cgroup_array_erase(const map_ref &m, std::span<const uint8_t> key) {
    uint32_t idx = index_of(key);
    if (idx >= m.spec.max_entries) {
        return bad_index(idx, m.spec);
    }
    if (atomic(slot(m, idx)).exchange(0, std::memory_order_acq_rel) == 0) {
        return make_error(ENOENT, "slot " + std::to_string(idx) + " holds no cgroup");
    }
    return {};
}

} // namespace detail

using namespace detail;

result<uint64_t> cgroup_id_of_fd(int fd) {
    struct stat st {};
    if (fd < 0 || fstat(fd, &st) != 0) {
        return make_error(EBADF, "fd " + std::to_string(fd) + " is not open in this process");
    }
    struct statfs fs {};
    if (!S_ISDIR(st.st_mode) || fstatfs(fd, &fs) != 0 ||
        static_cast<unsigned long>(fs.f_type) != CGROUP2_SUPER_MAGIC) {
        return make_error(EBADF, "fd " + std::to_string(fd) +
                                     " is not a cgroup v2 directory (open a directory under the "
                                     "cgroup2 mount, such as /sys/fs/cgroup/NAME)");
    }
    return static_cast<uint64_t>(st.st_ino);
}

namespace {

// mountinfo escapes blanks, tabs, newlines and backslashes in paths as \ooo.
std::string unescape(const std::string &s) {
    std::string out;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] == '\\' && i + 3 < s.size() &&
            std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
            out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

// The cgroup2 mount: its root within the hierarchy and its mount point.
bool cgroup2_mount(std::string &root, std::string &point) {
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string id, parent, dev, r, p, word;
        f >> id >> parent >> dev >> r >> p;
        while (f >> word && word != "-") {
        }
        std::string fstype;
        f >> fstype;
        if (fstype == "cgroup2") {
            root = unescape(r);
            point = unescape(p);
            return true;
        }
    }
    return false;
}

} // namespace

result<std::vector<uint64_t>> current_cgroup_ancestry() {
    std::ifstream in("/proc/self/cgroup");
    std::string line, path;
    bool found = false;
    while (std::getline(in, line)) {
        if (line.rfind("0::", 0) == 0) {
            path = line.substr(3);
            found = true;
            break;
        }
    }
    std::string root, point;
    if (!found || !cgroup2_mount(root, point)) {
        return std::vector<uint64_t>{};
    }
    // The cgroup's path below the mount's root.
    if (root != "/") {
        if (path.rfind(root, 0) != 0) {
            return std::vector<uint64_t>{};
        }
        path = path.substr(root.size());
    }
    std::vector<uint64_t> ids;
    std::string dir = point;
    auto add = [&]() -> result<void> {
        struct stat st {};
        if (stat(dir.c_str(), &st) != 0) {
            int e = errno;
            return make_error(e, "cannot stat cgroup directory " + dir + ": " + strerror(e));
        }
        ids.push_back(static_cast<uint64_t>(st.st_ino));
        return {};
    };
    if (auto ok = add(); !ok) {
        return std::move(ok).err();
    }
    std::istringstream parts(path);
    std::string part;
    while (std::getline(parts, part, '/')) {
        if (part.empty()) {
            continue;
        }
        dir += "/" + part;
        if (auto ok = add(); !ok) {
            return std::move(ok).err();
        }
    }
    std::reverse(ids.begin(), ids.end());
    return ids;
}

namespace {

// Bumped in a forked child, whose cgroup may differ from its parent's once it is moved.
std::atomic<uint64_t> fork_generation{0};

struct cgroup_cache {
    uint64_t generation = UINT64_MAX;
    uint64_t read_at_ns = 0;
    std::vector<uint64_t> ids;
};

uint64_t coarse_now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The calling process's cgroup ids, re-read once a second so a process moved to another cgroup
// is seen moved soon after.
const std::vector<uint64_t> &current_ids() {
    static std::once_flag once;
    std::call_once(once, [] {
        pthread_atfork(nullptr, nullptr,
                       [] { fork_generation.fetch_add(1, std::memory_order_relaxed); });
    });
    thread_local cgroup_cache cache;
    uint64_t gen = fork_generation.load(std::memory_order_relaxed);
    uint64_t now = coarse_now_ns();
    if (cache.generation != gen || now - cache.read_at_ns > 1'000'000'000ull) {
        auto ids = current_cgroup_ancestry();
        cache.ids = ids ? std::move(*ids) : std::vector<uint64_t>{};
        cache.generation = gen;
        cache.read_at_ns = now;
    }
    return cache.ids;
}

} // namespace

long map_view::current_task_under_cgroup(uint32_t index) const {
    if (spec_.type != map_type::cgroup_array) {
        return -EINVAL;
    }
    if (index >= spec_.max_entries) {
        return -E2BIG;
    }
    uint64_t id = atomic(slot(ref(), index)).load(std::memory_order_acquire);
    if (id == 0) {
        return -EAGAIN;
    }
    const std::vector<uint64_t> &ids = current_ids();
    return std::find(ids.begin(), ids.end(), id) != ids.end() ? 1 : 0;
}

std::optional<uint64_t> map_view::cgroup_at(uint32_t index) const {
    if (spec_.type != map_type::cgroup_array || index >= spec_.max_entries) {
        return std::nullopt;
    }
    return atomic(slot(ref(), index)).load(std::memory_order_acquire);
}

} // namespace bpftime::maps

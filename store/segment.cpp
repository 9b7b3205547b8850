// SPDX-License-Identifier: MIT
// The shared-memory segment: opening, creating and checking it, the writer lock, and the
// object API over the object table (layout.hpp) and the heap (heap.hpp).
#include "heap.hpp"
#include "layout.hpp"

#include <bpftime/store/store.hpp>

#include "guard.hpp"
#include "open_checks.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <thread>
#include <type_traits>
#include <utility>

namespace bpftime::store {

using namespace detail;

namespace {

// A record refused by the checks, as the error of a single-object read.
error damaged_record(uint32_t id, const error &e) {
    return make_error(e.code == EPROTO ? EPROTO : e.code,
                      "object " + std::to_string(id) + " is damaged: " + e.message);
}

// A key as `map` commands print it: an index for 4-byte keys, else its bytes in hex.
std::string hex_bytes(const std::vector<uint8_t> &key) {
    if (key.size() == sizeof(uint32_t)) {
        uint32_t index = 0;
        std::memcpy(&index, key.data(), sizeof index);
        return std::to_string(index);
    }
    std::string out = "0x";
    for (uint8_t b : key) {
        char buf[3];
        std::snprintf(buf, sizeof buf, "%02x", b);
        out += buf;
    }
    return out;
}

// The generation's low 32 bits (x86-64 is little-endian): the futex word hosts wait on. Every
// bump changes it; 2^32 bumps between two looks of a host would be needed to miss one.
uint32_t *generation_word(header *h) {
    static_assert(offsetof(header, generation) % 8 == 0);
    return reinterpret_cast<uint32_t *>(&h->generation);
}

// Wakes every process waiting on the generation: a shared futex (no FUTEX_PRIVATE_FLAG), keyed
// by the segment's page, so waiters in other processes are found whatever address they mapped
// it at.
void wake_waiters(header *h) {
    syscall(SYS_futex, generation_word(h), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// A process's start time (clock ticks after boot, /proc/PID/stat's 22nd field), 0 when it
// cannot be read. With the pid it names one process: a pid reused later has another.
uint64_t process_start_time(int32_t pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
    FILE *f = std::fopen(path, "r");
    if (f == nullptr) {
        return 0;
    }
    char buf[1024];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    const char *p = std::strrchr(buf, ')');
    if (p == nullptr) {
        return 0;
    }
    p++;
    for (int field = 2; field < 22 && *p != '\0'; p++) {
        if (*p == ' ') {
            field++;
        }
    }
    return std::strtoull(p, nullptr, 10);
}

// Whether the host an entry names is still running (a process with its pid and start time).
bool host_alive(const host_entry &h) {
    if (h.pid <= 0 || (kill(h.pid, 0) != 0 && errno == ESRCH)) {
        return false;
    }
    uint64_t start = process_start_time(h.pid);
    return start == 0 || h.start_time == 0 || start == h.start_time;
}

std::string shm_path(const std::string &name) {
    return "/" + name;
}

result<void> check_name(const std::string &name) {
    if (name.empty() || name.size() > 200 || name.find('/') != std::string::npos) {
        return make_error(EINVAL,
                          "bad segment name '" + name + "': 1 to 200 characters without '/'");
    }
    return {};
}

void copy_name(char (&dst)[max_name + 1], const std::string &src) {
    std::memset(dst, 0, sizeof dst);
    std::memcpy(dst, src.data(), std::min(src.size(), max_name));
}

} // namespace

std::string segment_name(const std::string &explicit_name) {
    if (!explicit_name.empty()) {
        return explicit_name;
    }
    if (const char *env = std::getenv("BPFTIME_SHM"); env != nullptr && *env != '\0') {
        return env;
    }
    return default_segment_name;
}

const char *kind_name(object_kind kind) {
    switch (kind) {
    case object_kind::program:
        return "program";
    case object_kind::map:
        return "map";
    case object_kind::target:
        return "target";
    case object_kind::link:
        return "link";
    }
    return "unknown";
}

struct segment::impl {
    uint8_t *base = nullptr;
    uint64_t size = 0;
    std::string name;
    geometry geo;         // checked at open, never read again from the header
    uint32_t wait_ms = 0; // open_options::wait_ms
    int guard_index = -1; // guard.hpp
    int fd = -1;          // the segment's shm fd, kept for segment::fd()

    header *hdr() const { return reinterpret_cast<header *>(base); }
    slot *slots() const { return reinterpret_cast<slot *>(base + geo.table_offset); }
    uint32_t max_objects() const { return geo.max_objects; }

    ~impl() {
        if (base != nullptr) {
            unguard_mapping(guard_index);
            munmap(base, size);
        }
        if (fd >= 0) {
            close(fd);
        }
    }

    bool damaged() const { return mapping_damaged(guard_index); }

    result<void> check_damaged() const {
        if (damaged()) {
            return make_error(EIO, "segment " + name +
                                       " was truncated under this process; it is no longer "
                                       "used (remove it and load the objects again)");
        }
        return {};
    }

    // --- locking ---

    // The writer lock while held. A writer that moved the generation wakes the hosts waiting
    // on it (wait_generation) after it unlocks, so that a host woken at once finds the lock
    // free instead of failing its single try.
    class guard {
    public:
        guard(header *h, uint64_t generation_at_lock) : h_(h), at_lock_(generation_at_lock) {}
        guard(guard &&o) noexcept : h_(std::exchange(o.h_, nullptr)), at_lock_(o.at_lock_) {}
        ~guard() {
            if (h_ != nullptr) {
                const bool moved = __atomic_load_n(&h_->generation, __ATOMIC_RELAXED) != at_lock_;
                pthread_mutex_unlock(&h_->lock);
                if (moved) {
                    wake_waiters(h_);
                }
            }
        }

    private:
        header *h_;
        uint64_t at_lock_;
    };

    // The thread id the lock word names as its owner (glibc's robust mutex keeps it there), 0
    // for none.
    pid_t lock_owner() const {
        auto word = __atomic_load_n(&hdr()->lock.__data.__lock, __ATOMIC_RELAXED);
        return static_cast<pid_t>(static_cast<uint32_t>(word) & FUTEX_TID_MASK);
    }

    // A lock word naming a thread that no longer exists (the kernel clears the words of
    // threads that die, so another PID namespace's thread or bytes written into the segment)
    // is handed to the next locker as if its owner had died: it gets EOWNERDEAD and repairs.
    bool recover_dead_owner(pid_t tid) const {
        if (tid == 0 || tid == gettid() || kill(tid, 0) == 0 || errno != ESRCH) {
            return false;
        }
        auto *word = reinterpret_cast<int *>(&hdr()->lock.__data.__lock);
        int seen = __atomic_load_n(word, __ATOMIC_RELAXED);
        if (static_cast<pid_t>(static_cast<uint32_t>(seen) & FUTEX_TID_MASK) != tid) {
            return false;
        }
        int dead =
            static_cast<int>(FUTEX_OWNER_DIED | (static_cast<uint32_t>(seen) & FUTEX_WAITERS));
        if (!__atomic_compare_exchange_n(word, &seen, dead, false, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED)) {
            return false;
        }
        syscall(SYS_futex, word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
        return true;
    }

    // "process 123 (thread 124, stopped)": who holds the lock, from /proc.
    static std::string describe_holder(pid_t tid) {
        if (tid == 0) {
            return "an unknown process";
        }
        std::string pid = std::to_string(tid), state = "state unknown";
        if (FILE *f = std::fopen(("/proc/" + std::to_string(tid) + "/status").c_str(), "r")) {
            char line[256];
            while (std::fgets(line, sizeof line, f) != nullptr) {
                std::string l(line);
                if (l.rfind("State:", 0) == 0) {
                    // "State:\tT (stopped)"
                    auto open = l.find('('), close = l.find(')');
                    if (open != std::string::npos && close != std::string::npos && close > open) {
                        state = l.substr(open + 1, close - open - 1);
                    }
                } else if (l.rfind("Tgid:", 0) == 0) {
                    pid = std::to_string(std::strtol(l.c_str() + 5, nullptr, 10));
                }
            }
            std::fclose(f);
        }
        return "process " + pid + " (thread " + std::to_string(tid) + ", " + state + ")";
    }

    // Takes the writer lock, waiting at most wait_ms (hosts: 0, a single try).
    result<guard> lock() const {
        if (auto d = check_damaged(); !d) {
            return d.err();
        }
        int rc = 0;
        for (int attempt = 0; attempt < 2; attempt++) {
            if (wait_ms == 0) {
                rc = pthread_mutex_trylock(&hdr()->lock);
            } else {
                timespec deadline{};
                clock_gettime(CLOCK_MONOTONIC, &deadline);
                deadline.tv_sec += static_cast<time_t>(wait_ms / 1000);
                deadline.tv_nsec += static_cast<long>(wait_ms % 1000) * 1000000;
                if (deadline.tv_nsec >= 1000000000) {
                    deadline.tv_sec++;
                    deadline.tv_nsec -= 1000000000;
                }
                rc = pthread_mutex_clocklock(&hdr()->lock, CLOCK_MONOTONIC, &deadline);
            }
            if ((rc != EBUSY && rc != ETIMEDOUT) || !recover_dead_owner(lock_owner())) {
                break;
            }
        }
        const uint64_t at_lock = __atomic_load_n(&hdr()->generation, __ATOMIC_RELAXED);
        if (rc == EOWNERDEAD) {
            // A writer died holding the lock: drop what it half-created, then carry on.
            recover();
            pthread_mutex_consistent(&hdr()->lock);
        } else if (rc == EBUSY || rc == ETIMEDOUT) {
            pid_t tid = lock_owner();
            if (wait_ms == 0) {
                // Hosts ask often; /proc is for the message a person reads.
                return make_error(EBUSY, "segment " + name +
                                             ": the writer lock is held (by thread " +
                                             std::to_string(tid) + ")");
            }
            return make_error(ETIMEDOUT, "segment " + name + ": the writer lock is held by " +
                                             describe_holder(tid) + " for more than " +
                                             std::to_string(wait_ms) +
                                             " ms; let it finish or end that process");
        } else if (rc != 0) {
            return make_error(rc, "segment " + name + ": cannot take the writer lock: " +
                                      std::strerror(rc) + " (remove the segment and load again)");
        }
        return guard(hdr(), at_lock);
    }

    void recover() const {
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (s.state == slot_creating) {
                store_release(s.state, slot_free);
            }
            // An unfinished replace either published its extent (pending == extent) or not
            // (the old instructions stay); both ways the pending reference goes.
            s.pending = 0;
        }
        bump();
    }

    void bump() const { __atomic_fetch_add(&hdr()->generation, 1, __ATOMIC_RELEASE); }

    // --- objects ---

    slot *find(uint32_t id) const {
        if (id == 0) {
            return nullptr;
        }
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (load_acquire(s.state) == slot_live && s.id == id) {
                return &s;
            }
        }
        return nullptr;
    }

    result<slot *> find_kind(uint32_t id, object_kind kind) const {
        slot *s = find(id);
        if (s == nullptr) {
            return make_error(ENOENT, "no object with id " + std::to_string(id));
        }
        if (s->kind != static_cast<uint32_t>(kind)) {
            uint32_t k = s->kind;
            return make_error(EINVAL, "object " + std::to_string(id) + " is a " +
                                          kind_name(static_cast<object_kind>(k)) + ", not a " +
                                          kind_name(kind));
        }
        return s;
    }

    // What a writer changing one object holds: the writer lock and the object's live slot.
    struct locked_slot {
        guard held;
        slot *s;
    };
    result<locked_slot> lock_object(uint32_t id, object_kind kind) const {
        auto g = lock();
        if (!g) {
            return g.err();
        }
        auto s = find_kind(id, kind);
        if (!s) {
            return s.err();
        }
        return locked_slot{std::move(*g), *s};
    }

    // Reads one live object of a kind without the lock: from a copy of its slot, checked
    // like every record; when a writer changed the slot meanwhile, again.
    template <class F>
    auto read_object(uint32_t id, object_kind kind, F &&read) const
        -> std::invoke_result_t<F, const slot &, slot *> {
        if (auto d = check_damaged(); !d) {
            return d.err();
        }
        for (int attempt = 0; attempt < 100; attempt++) {
            auto s = find_kind(id, kind);
            if (!s) {
                return s.err();
            }
            slot copy;
            std::memcpy(static_cast<void *>(&copy), *s, sizeof copy);
            std::atomic_thread_fence(std::memory_order_acquire);
            auto out = read(copy, *s);
            std::atomic_thread_fence(std::memory_order_acquire);
            const slot &now = **s;
            if (load_acquire(now.state) == slot_live && now.id == copy.id &&
                now.extent == copy.extent && now.revision == copy.revision) {
                return out;
            }
            std::this_thread::yield();
        }
        return make_error(EAGAIN, "object " + std::to_string(id) +
                                      " kept changing while it was read; try again");
    }

    // Starts a new object in a free slot; it stays invisible until publish().
    result<slot *> begin(object_kind kind, const std::string &object_name) const {
        if (object_name.size() > max_name) {
            return make_error(ENAMETOOLONG, "name '" + object_name + "' is longer than " +
                                                std::to_string(max_name) + " bytes");
        }
        reclaim();
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (s.state == slot_free) {
                std::memset(static_cast<void *>(&s), 0, sizeof s);
                s.id = hdr()->next_id++;
                s.kind = static_cast<uint32_t>(kind);
                copy_name(s.name, object_name);
                store_release(s.state, slot_creating);
                return &s;
            }
        }
        return make_error(ENOSPC, "segment " + name + " is full: all " +
                                      std::to_string(max_objects()) + " object slots are used" +
                                      retired_note());
    }

    // --- retired storage ---

    // Live hosts; entries of processes that are gone are freed on the way (under the lock).
    std::vector<const host_entry *> live_hosts() const {
        std::vector<const host_entry *> out;
        for (host_entry &h : hdr()->hosts) {
            if (h.pid == 0) {
                continue;
            }
            if (!host_alive(h)) {
                h = host_entry{};
                continue;
            }
            out.push_back(&h);
        }
        return out;
    }

    // Frees the retired slots (and with them their extents) that every live host has passed.
    // Called under the lock.
    void reclaim() const {
        bool any = false;
        for (uint32_t i = 0; i < max_objects() && !any; i++) {
            any = slots()[i].state == slot_retired;
        }
        if (!any) {
            return;
        }
        auto hosts = live_hosts();
        for (uint32_t i = 0; i < max_objects(); i++) {
            slot &s = slots()[i];
            if (s.state != slot_retired) {
                continue;
            }
            bool held = std::any_of(hosts.begin(), hosts.end(), [&](const host_entry *h) {
                return load_acquire(h->passed) < s.revision;
            });
            if (!held) {
                store_release(s.state, slot_free);
            }
        }
    }

    // For a full segment or table: "; 2 destroyed objects keep their slot and storage until
    // host process 123 synchronises ...", or nothing when none is retired.
    std::string retired_note() const {
        uint32_t count = 0;
        for (uint32_t i = 0; i < max_objects(); i++) {
            count += slots()[i].state == slot_retired ? 1 : 0;
        }
        if (count == 0) {
            return {};
        }
        std::string pids;
        bool several = false;
        for (const host_entry *h : live_hosts()) {
            bool holds = false;
            for (uint32_t i = 0; i < max_objects() && !holds; i++) {
                holds = slots()[i].state == slot_retired && h->passed < slots()[i].revision;
            }
            if (holds) {
                several = !pids.empty();
                pids += (pids.empty() ? "" : ", ") + std::to_string(h->pid);
            }
        }
        return "; " + std::to_string(count) + " destroyed object" +
               (count > 1 ? "s keep their" : " keeps its") +
               " slot and storage until host process" +
               (several ? "es " + pids + " synchronise" : " " + pids + " synchronises") +
               " or exits (`bpftime list` shows them; a stopped host keeps them)";
    }

    uint32_t publish(slot *s) const {
        store_release(s->state, slot_live);
        bump();
        return s->id;
    }

    void abandon(slot *s) const { store_release(s->state, slot_free); }

    // --- heap ---

    detail::heap objects() const { return {base, geo, name}; }
    result<uint64_t> allocate(uint64_t payload, uint32_t owner,
                              uint64_t payload_align = align) const {
        auto off = objects().allocate(payload, owner, payload_align);
        if (!off && off.err().code == ENOSPC) {
            return make_error(ENOSPC, off.err().message + retired_note());
        }
        return off;
    }
    void *payload(uint64_t off) const { return objects().payload(off); }

    // Writes a program payload into a new extent owned by s.
    result<uint64_t> write_program(slot *s, const std::vector<vm::ebpf_inst> &insns,
                                   const std::vector<uint32_t> &map_ids) const {
        if (insns.empty()) {
            return make_error(EINVAL, "a program needs at least one instruction");
        }
        if (map_ids.size() > max_program_maps) {
            return make_error(E2BIG, "a program may use at most " +
                                         std::to_string(max_program_maps) + " maps");
        }
        for (uint32_t map_id : map_ids) {
            if (auto m = find_kind(map_id, object_kind::map); !m) {
                return make_error(m.err().code, "the program refers to map " +
                                                    std::to_string(map_id) + ": " +
                                                    m.err().message);
            }
        }
        if (auto ok = check_host_maps(s->id, map_ids); !ok) {
            return ok.err();
        }
        uint64_t bytes = sizeof(program_payload) + insns.size() * sizeof(vm::ebpf_inst) +
                         map_ids.size() * sizeof(uint32_t);
        reclaim();
        auto off = allocate(bytes, s->id);
        if (!off) {
            return off;
        }
        auto *p = static_cast<program_payload *>(payload(*off));
        p->insn_count = static_cast<uint32_t>(insns.size());
        p->map_count = static_cast<uint32_t>(map_ids.size());
        auto *code = reinterpret_cast<uint8_t *>(p + 1);
        std::memcpy(code, insns.data(), insns.size() * sizeof(vm::ebpf_inst));
        // std::copy, not memcpy: an empty vector's data() may be null.
        std::copy(map_ids.begin(), map_ids.end(),
                  reinterpret_cast<uint32_t *>(code + insns.size() * sizeof(vm::ebpf_inst)));
        return off;
    }

    // A host running every program of the segment holds a handle for each map they name: with
    // map_ids as the maps of program prog_id, they must stay within max_host_maps.
    result<void> check_host_maps(uint32_t prog_id, const std::vector<uint32_t> &map_ids) const {
        std::vector<uint32_t> named(map_ids.begin(), map_ids.end());
        for (uint32_t i = 0; i < max_objects(); i++) {
            const slot &s = slots()[i];
            if (s.state != slot_live || s.id == prog_id ||
                s.kind != static_cast<uint32_t>(object_kind::program)) {
                continue;
            }
            if (auto p = to_program(s)) {
                named.insert(named.end(), p->map_ids.begin(), p->map_ids.end());
            }
        }
        std::sort(named.begin(), named.end());
        auto distinct =
            static_cast<size_t>(std::unique(named.begin(), named.end()) - named.begin());
        if (distinct > max_host_maps) {
            return make_error(E2BIG, "the programs of segment " + name + " would name " +
                                         std::to_string(distinct) + " maps, past the limit of " +
                                         std::to_string(max_host_maps) +
                                         " map handles per process (a host running them all "
                                         "holds one per map); destroy programs or load these "
                                         "into another segment");
        }
        return {};
    }

    // The maps that hold map id (array_of_maps, hash_of_maps), with the key of each entry.
    std::vector<std::pair<uint32_t, std::vector<uint8_t>>> holders(uint32_t id) const {
        std::vector<std::pair<uint32_t, std::vector<uint8_t>>> out;
        for (uint32_t i = 0; i < max_objects(); i++) {
            const slot &s = slots()[i];
            if (s.state != slot_live || s.kind != static_cast<uint32_t>(object_kind::map) ||
                !maps::is_map_in_map(static_cast<maps::map_type>(s.map_type))) {
                continue;
            }
            auto m = to_map(s); // a damaged map holds nothing that can be found
            if (!m) {
                continue;
            }
            const maps::map_view &v = m->second;
            std::vector<uint8_t> key;
            // A walk bounded by the map's capacity: damaged storage cannot loop it.
            for (uint64_t n = 0; n <= uint64_t{v.spec().max_entries}; n++) {
                auto next = v.next_key(key);
                if (!next || !*next) {
                    break;
                }
                key = std::move(**next);
                if (v.inner_map_id(key.data()) == id) {
                    out.emplace_back(s.id, key);
                }
            }
        }
        return out;
    }

    // The objects that depend on id: programs on maps, links on programs and targets.
    std::vector<uint32_t> dependents(uint32_t id) const {
        std::vector<uint32_t> out;
        for (uint32_t i = 0; i < max_objects(); i++) {
            const slot &s = slots()[i];
            if (s.state != slot_live) {
                continue;
            }
            if (s.kind == static_cast<uint32_t>(object_kind::link) &&
                (s.prog_id == id || s.target_id == id)) {
                out.push_back(s.id);
            } else if (s.kind == static_cast<uint32_t>(object_kind::program)) {
                // A damaged program uses nothing that can be found.
                auto p = to_program(s);
                if (p && std::find(p->map_ids.begin(), p->map_ids.end(), id) != p->map_ids.end()) {
                    out.push_back(s.id);
                }
            }
        }
        return out;
    }

    // --- reading records: each field from the segment is checked before it is used ---

    static result<std::string> checked_string(const char *src, size_t cap, const char *what) {
        size_t n = strnlen(src, cap);
        if (n == cap) {
            return make_error(EPROTO, std::string("its ") + what + " is not NUL-terminated");
        }
        return std::string(src, n);
    }

    // The payload of s's extent, with its size, when it lies inside the heap.
    result<std::pair<const uint8_t *, uint64_t>> extent_of(const slot &s) const {
        if (s.extent == 0) {
            return make_error(EPROTO, "it has no extent");
        }
        auto bytes = objects().checked_payload_size(s.extent);
        if (!bytes) {
            return bytes.err();
        }
        return std::pair{static_cast<const uint8_t *>(payload(s.extent)), *bytes};
    }

    result<program_info> to_program(const slot &s) const {
        auto object_name = checked_string(s.name, sizeof s.name, "name");
        auto section = checked_string(s.section, sizeof s.section, "section");
        auto ext = extent_of(s);
        if (!object_name || !section || !ext) {
            return !object_name ? object_name.err() : !section ? section.err() : ext.err();
        }
        auto [bytes, extent_size] = *ext;
        if (extent_size < sizeof(program_payload)) {
            return make_error(EPROTO, "its extent of " + std::to_string(extent_size) +
                                          " bytes cannot hold a program");
        }
        program_payload counts;
        std::memcpy(&counts, bytes, sizeof counts);
        uint64_t need = sizeof(program_payload) +
                        uint64_t{counts.insn_count} * sizeof(vm::ebpf_inst) +
                        uint64_t{counts.map_count} * sizeof(uint32_t);
        if (counts.insn_count == 0 || counts.map_count > max_program_maps || need > extent_size) {
            return make_error(EPROTO, "its counts (" + std::to_string(counts.insn_count) +
                                          " instructions, " + std::to_string(counts.map_count) +
                                          " maps) do not fit its extent of " +
                                          std::to_string(extent_size) + " bytes");
        }
        program_info info{
            s.id, std::move(*object_name), s.prog_type, std::move(*section), {}, {}, s.revision};
        const uint8_t *code = bytes + sizeof(program_payload);
        info.insns.resize(counts.insn_count);
        std::memcpy(static_cast<void *>(info.insns.data()), code,
                    counts.insn_count * sizeof(vm::ebpf_inst));
        // An empty vector's data() may be null: no memcpy of zero bytes into it.
        info.map_ids.resize(counts.map_count);
        if (counts.map_count > 0) {
            std::memcpy(info.map_ids.data(), code + counts.insn_count * sizeof(vm::ebpf_inst),
                        counts.map_count * sizeof(uint32_t));
        }
        return info;
    }

    static maps::map_spec spec_of(const slot &s) {
        return {static_cast<maps::map_type>(s.map_type),
                s.key_size,
                s.value_size,
                s.max_entries,
                s.map_flags,
                s.map_extra,
                {static_cast<maps::map_type>(s.inner_type), s.inner_key_size, s.inner_value_size,
                 s.inner_max_entries, s.inner_flags},
                s.map_lock == 0 ? -1 : static_cast<int32_t>(s.map_lock - 1)};
    }

    // A map's record and its storage: the spec valid, the storage inside the extent, and the
    // storage's own header matching the spec (map_view::open checks that).
    result<std::pair<map_info, maps::map_view>> to_map(const slot &s) const {
        auto object_name = checked_string(s.name, sizeof s.name, "name");
        if (!object_name) {
            return object_name.err();
        }
        maps::map_spec spec = spec_of(s);
        if (auto ok = maps::validate_spec(spec); !ok) {
            return make_error(EPROTO, "its map spec is invalid: " + ok.err().message);
        }
        auto need = maps::storage_size(spec, s.ncpus);
        if (!need) {
            return make_error(EPROTO, "its CPU count " + std::to_string(s.ncpus) +
                                          " is invalid: " + need.err().message);
        }
        auto ext = extent_of(s);
        if (!ext) {
            return ext.err();
        }
        if (*need > ext->second) {
            return make_error(EPROTO, "its storage needs " + std::to_string(*need) +
                                          " bytes, its extent holds " +
                                          std::to_string(ext->second));
        }
        auto view = maps::map_view::open(const_cast<uint8_t *>(ext->first), ext->second, spec);
        if (!view) {
            return make_error(EPROTO, "its storage: " + view.err().message);
        }
        return std::pair{map_info{s.id, std::move(*object_name), spec, s.ncpus, s.read_only != 0},
                         *view};
    }

    result<target_info> to_target(const slot &s) const {
        auto object_name = checked_string(s.name, sizeof s.name, "name");
        auto ext = extent_of(s);
        if (!object_name || !ext) {
            return !object_name ? object_name.err() : ext.err();
        }
        auto args = checked_string(reinterpret_cast<const char *>(ext->first), ext->second,
                                   "argument string");
        if (!args) {
            return args.err();
        }
        return target_info{s.id, std::move(*object_name), s.attach_type, std::move(*args)};
    }

    // counters: the slot in the segment (s is a copy). The totals are the link's own stripes
    // and those of its host records (host_counters).
    result<link_info> to_link(const slot &s, const slot &counters) const;
    // Process pid's host record (a host_record) of link slot s, made (in the running state)
    // when it has none: an empty one, one of a process that no longer exists, or past
    // max_link_hosts the oldest. A record handed to another process first gives its counts to
    // the link's own stripes. Called under the lock.
    result<void *> record_for(slot &s, int32_t pid);
    // read_all's work, with the lock held.
    snapshot read_locked() const;
    bool timing() const {
        return (__atomic_load_n(&hdr()->stats_flags, __ATOMIC_RELAXED) & detail::stats_timing) != 0;
    }
};

namespace {

// A link's extent (links own none otherwise): what each host process reported about it, and
// what it counted (host_counters).
struct alignas(64) host_record {
    counter_stripe counters[counter_stripes];
    int32_t pid;     // 0: empty
    uint32_t failed; // host_running, host_failed or host_attaching
    uint64_t stamp;  // newer records have larger stamps
    char why[240];
    detail::filter_counts decisions;
    // pid while runs are not timed, else 0: the one value the process's per-run path compares
    // (link_counters::owned_untimed). Written under the lock, read by hosts without it.
    int32_t owned_key;
    uint32_t reserved;
};
struct host_records {
    uint64_t magic;
    uint64_t next_stamp;
    host_record rec[max_link_hosts];
};
constexpr uint64_t host_records_magic = 0x74736f686b6e696cull; // "linkhost"
static_assert(std::is_trivially_copyable_v<host_records> && sizeof(host_record) == 1024 &&
              offsetof(host_records, rec) == 64 && offsetof(host_record, owned_key) == 992);

// host_record::failed: what its process said of the link.
constexpr uint32_t host_running = 0, host_failed = 1, host_attaching = 2;

// The owned key of a record of pid (0: none) while runs are timed or not.
int32_t owned_key_of(int32_t pid, bool timing) {
    return timing ? 0 : pid;
}

// The host records of a link slot, or null when it has none or they are not well formed.
host_records *records_of(const detail::heap &h, const slot &s) {
    if (s.extent == 0) {
        return nullptr;
    }
    auto size = h.checked_payload_size(s.extent);
    if (!size || *size < sizeof(host_records)) {
        return nullptr;
    }
    auto *r = static_cast<host_records *>(h.payload(s.extent));
    return r->magic == host_records_magic ? r : nullptr;
}

} // namespace

result<link_info> segment::impl::to_link(const slot &s, const slot &counters) const {
    auto object_name = checked_string(s.name, sizeof s.name, "name");
    if (!object_name) {
        return object_name.err();
    }
    link_info info{s.id, std::move(*object_name), s.prog_id, s.target_id, s.enabled != 0, 0, 0};
    info.cookie = s.cookie;
    detail::counter_totals t;
    detail::sum_counters(counters.counters, t);
    if (const host_records *r = records_of(objects(), s)) {
        for (const host_record &rec : r->rec) {
            detail::sum_counters(rec.counters, t);
            detail::sum_decisions(rec.decisions, info.decisions);
        }
    }
    info.runs = t.runs;
    info.faults = t.faults;
    info.budget_stops = t.budget_stops;
    info.run_time_ns = t.run_time_ns;
    return info;
}

segment::~segment() = default;

result<std::shared_ptr<segment>> segment::open(const std::string &name, const open_options &opts) {
    if (auto r = check_name(name); !r) {
        return r.err();
    }
    std::string path = shm_path(name);
    uint64_t min_size = round_up(sizeof(header), align) +
                        static_cast<uint64_t>(opts.max_objects) * sizeof(slot) + 4 * align;
    bool created = false;
    int fd = -1;
    if (opts.create) {
        // Exclusive: a name that exists (perhaps made by another user a moment ago) is opened
        // and checked like any other below, never taken over.
        fd = shm_open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, opts.mode);
        created = fd >= 0;
        if (created) {
            // The group first: the mode may let it in. shm_open's mode is filtered by the
            // umask; say exactly what was asked.
            if (opts.group && fchown(fd, static_cast<uid_t>(-1), *opts.group) != 0) {
                int e = errno;
                close(fd);
                shm_unlink(path.c_str());
                return make_error(e, "segment " + name + ": cannot give it to group " +
                                         group_name(*opts.group) + " (gid " +
                                         std::to_string(*opts.group) + "): " + std::strerror(e));
            }
            (void)fchmod(fd, opts.mode);
            int e = 0;
            if (opts.size < min_size || opts.max_objects == 0) {
                e = EINVAL;
            } else if (ftruncate(fd, static_cast<off_t>(opts.size)) != 0) {
                e = errno;
            } else {
                // Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS later.
                e = posix_fallocate(fd, 0, static_cast<off_t>(opts.size));
            }
            if (e != 0) {
                close(fd);
                shm_unlink(path.c_str());
                return make_error(e, "segment " + name + ": cannot reserve " +
                                         std::to_string(opts.size) + " bytes (at least " +
                                         std::to_string(min_size) +
                                         " needed): " + std::strerror(e));
            }
        } else if (errno != EEXIST) {
            return make_error(errno, "segment " + name + ": " + std::strerror(errno));
        }
    }
    if (fd < 0) {
        fd = shm_open(path.c_str(), O_RDWR, 0);
        if (fd < 0) {
            int e = errno;
            if (e == ENOENT) {
                return make_error(ENOENT, "no segment named " + name);
            }
            if (e == EACCES) {
                return make_error(EACCES, describe_denied(name));
            }
            return make_error(e, "segment " + name + ": " + std::strerror(e));
        }
    }
    if (auto trusted = check_trust(fd, name, opts); !trusted) {
        close(fd);
        return trusted.err();
    }

    auto seg = std::shared_ptr<segment>(new segment());
    seg->name_ = name;
    seg->impl_ = std::make_unique<impl>();
    impl &im = *seg->impl_;
    im.name = name;
    im.wait_ms = opts.wait_ms;

    // A segment another process is creating right now may not be sized yet.
    struct stat st {};
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(std::min<uint32_t>(opts.wait_ms, 2000));
    while (fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) < sizeof(header) && !created &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (static_cast<uint64_t>(st.st_size) < sizeof(header)) {
        close(fd);
        return make_error(EBADF, "segment " + name + " is too small (" +
                                     std::to_string(st.st_size) +
                                     " bytes) to be a bpftime segment");
    }
    im.size = static_cast<uint64_t>(st.st_size);
    void *p = mmap(nullptr, im.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        close(fd);
        return make_error(errno, "segment " + name + ": mmap: " + std::strerror(errno));
    }
    im.base = static_cast<uint8_t *>(p);
    im.fd = fd;
    im.guard_index = guard_mapping(p, im.size);
    header *h = im.hdr();

    if (created) {
        std::memcpy(h->magic, segment_magic, sizeof segment_magic);
        h->layout_version = layout_version;
        h->header_size = sizeof(header);
        h->size = im.size;
        h->max_objects = opts.max_objects;
        h->slot_size = sizeof(slot);
        h->table_offset = round_up(sizeof(header), align);
        h->heap_offset = round_up(h->table_offset + opts.max_objects * sizeof(slot), align);
        h->heap_size = im.size - h->heap_offset;
        h->next_id = 1;
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        pthread_mutex_init(&h->lock, &attr);
        pthread_mutexattr_destroy(&attr);
        store_release(h->ready, 1u);
    } else if (std::memcmp(h->magic, segment_magic, sizeof segment_magic) != 0) {
        // Maybe still being initialised by its creator.
        while (load_acquire(h->ready) == 0 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (std::memcmp(h->magic, segment_magic, sizeof segment_magic) != 0) {
            return make_error(EPROTO, "segment " + name +
                                          " is not a bpftime segment (bad magic); remove it "
                                          "if it is stale");
        }
    }
    if (h->layout_version != layout_version) {
        return make_error(EPROTO, "segment " + name + " has layout version " +
                                      std::to_string(h->layout_version) + "; this bpftime uses " +
                                      std::to_string(layout_version) +
                                      ": use the matching bpftime, or remove the segment to "
                                      "start over (removes every object)");
    }
    auto geo = check_header(*h, im.size, name);
    if (!geo) {
        return geo.err();
    }
    im.geo = *geo;
    return seg;
}

result<void> segment::remove(const std::string &name) {
    if (auto r = check_name(name); !r) {
        return r;
    }
    if (shm_unlink(shm_path(name).c_str()) != 0) {
        if (errno == ENOENT) {
            return make_error(ENOENT, "no segment named " + name);
        }
        return make_error(errno, "segment " + name + ": " + std::strerror(errno));
    }
    return {};
}

uint64_t segment::generation() const {
    return __atomic_load_n(&impl_->hdr()->generation, __ATOMIC_ACQUIRE);
}

bool segment::damaged() const {
    return impl_->damaged();
}

bool segment::wait_generation(uint64_t seen, std::chrono::milliseconds timeout) const {
    if (generation() != seen) {
        return true;
    }
    if (timeout.count() <= 0) {
        return false;
    }
    uint32_t *word = generation_word(impl_->hdr());
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1000) * 1000000;
    // FUTEX_WAIT's timeout is relative; the kernel returns at once when the word no longer
    // holds seen's low half (a bump between the load above and the call is not lost).
    long rc = syscall(SYS_futex, word, FUTEX_WAIT, static_cast<uint32_t>(seen), &ts, nullptr, 0);
    if (rc != 0 && errno != EAGAIN && errno != EINTR && errno != ETIMEDOUT) {
        // A futex the kernel refuses on this mapping (it never should): sleep instead, so the
        // caller never spins.
        std::this_thread::sleep_for(timeout);
    }
    return generation() != seen;
}

void segment::wake_generation_waiters() const {
    wake_waiters(impl_->hdr());
}

result<void> segment::check_named() const {
    struct stat mapped {};
    struct stat named {};
    if (fstat(impl_->fd, &mapped) != 0) {
        return make_error(errno, "segment " + name_ + ": " + std::strerror(errno));
    }
    if (stat(("/dev/shm/" + name_).c_str(), &named) != 0) {
        return make_error(ENOENT, "segment " + name_ + " was removed");
    }
    if (named.st_dev != mapped.st_dev || named.st_ino != mapped.st_ino) {
        return make_error(ESTALE, "segment " + name_ + " was replaced by another of that name");
    }
    return {};
}

result<uint32_t> segment::create_program(const std::string &name, uint32_t type,
                                         const std::string &section,
                                         const std::vector<vm::ebpf_inst> &insns,
                                         const std::vector<uint32_t> &map_ids) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->begin(object_kind::program, name);
    if (!s) {
        return s.err();
    }
    auto off = impl_->write_program(*s, insns, map_ids);
    if (!off) {
        impl_->abandon(*s);
        return off.err();
    }
    (*s)->extent = *off;
    (*s)->prog_type = type;
    std::strncpy((*s)->section, section.c_str(), sizeof((*s)->section) - 1);
    return impl_->publish(*s);
}

result<void> segment::replace_program(uint32_t id, const std::vector<vm::ebpf_inst> &insns,
                                      const std::vector<uint32_t> &map_ids) {
    auto locked = impl_->lock_object(id, object_kind::program);
    if (!locked) {
        return locked.err();
    }
    slot *s_slot = locked->s;
    auto off = impl_->write_program(s_slot, insns, map_ids);
    if (!off) {
        return off.err();
    }
    // pending keeps the new extent allocated while it is written; one store publishes it.
    // The revision moves first: a writer dying before the switch only costs hosts a
    // needless recompile.
    s_slot->pending = *off;
    s_slot->revision++;
    store_release(s_slot->extent, *off);
    s_slot->pending = 0;
    impl_->bump();
    return {};
}

result<uint32_t> segment::create_map(const std::string &name, const maps::map_spec &spec,
                                     const std::vector<uint8_t> &initial_value, bool read_only) {
    if (auto r = maps::validate_spec(spec); !r) {
        return make_error(r.err().code, "map " + name + ": " + r.err().message);
    }
    uint32_t ncpus = maps::possible_cpus();
    auto bytes = maps::storage_size(spec, ncpus);
    if (!bytes) {
        return bytes.err();
    }
    if (!initial_value.empty() &&
        (spec.type != maps::map_type::array || initial_value.size() != spec.value_size)) {
        return make_error(EINVAL, "map " + name +
                                      ": an initial value needs an array map whose "
                                      "value size is the value's size");
    }
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->begin(object_kind::map, name);
    if (!s) {
        return s.err();
    }
    // Storage a process may mmap starts on a page, so the region's pages are the map's alone.
    uint64_t storage_align = maps::mmapable_region(spec, ncpus) ? maps::mmap_page_size : align;
    auto off = impl_->allocate(*bytes, (*s)->id, storage_align);
    if (!off) {
        impl_->abandon(*s);
        return off.err();
    }
    slot &sl = **s;
    sl.extent = *off;
    sl.map_type = static_cast<uint32_t>(spec.type);
    sl.key_size = spec.key_size;
    sl.value_size = spec.value_size;
    sl.max_entries = spec.max_entries;
    sl.map_flags = spec.flags;
    sl.map_extra = spec.map_extra;
    sl.inner_type = static_cast<uint32_t>(spec.inner.type);
    sl.inner_key_size = spec.inner.key_size;
    sl.inner_value_size = spec.inner.value_size;
    sl.inner_max_entries = spec.inner.max_entries;
    sl.inner_flags = spec.inner.flags;
    sl.map_lock = spec.spin_lock_off >= 0 ? static_cast<uint32_t>(spec.spin_lock_off) + 1 : 0;
    sl.ncpus = ncpus;
    sl.read_only = read_only ? 1 : 0;
    void *storage = impl_->payload(*off);
    if (auto r = maps::init_storage(storage, *bytes, spec, ncpus); !r) {
        impl_->abandon(*s);
        return r.err();
    }
    if (!initial_value.empty()) {
        auto view = maps::map_view::open(storage, *bytes, spec);
        uint32_t key = 0;
        auto w = view ? view->write({reinterpret_cast<uint8_t *>(&key), sizeof key}, initial_value)
                      : result<void>(view.err());
        if (!w) {
            impl_->abandon(*s);
            return w.err();
        }
    }
    return impl_->publish(*s);
}

result<uint32_t> segment::create_target(const std::string &name, int32_t attach_type,
                                        const std::string &args) {
    if (args.size() > 4096) {
        return make_error(E2BIG, "attach target arguments are longer than 4096 bytes");
    }
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto s = impl_->begin(object_kind::target, name);
    if (!s) {
        return s.err();
    }
    auto off = impl_->allocate(args.size() + 1, (*s)->id);
    if (!off) {
        impl_->abandon(*s);
        return off.err();
    }
    std::memcpy(impl_->payload(*off), args.c_str(), args.size() + 1);
    (*s)->extent = *off;
    (*s)->attach_type = attach_type;
    return impl_->publish(*s);
}

result<uint32_t> segment::create_link(const std::string &name, uint32_t prog_id, uint32_t target_id,
                                      bool enabled, uint64_t cookie) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    if (auto p = impl_->find_kind(prog_id, object_kind::program); !p) {
        return p.err();
    }
    if (auto t = impl_->find_kind(target_id, object_kind::target); !t) {
        return t.err();
    }
    auto s = impl_->begin(object_kind::link, name);
    if (!s) {
        return s.err();
    }
    (*s)->prog_id = prog_id;
    (*s)->target_id = target_id;
    (*s)->enabled = enabled ? 1 : 0;
    (*s)->cookie = cookie;
    return impl_->publish(*s);
}

result<void> segment::set_link_enabled(uint32_t id, bool enabled) {
    auto locked = impl_->lock_object(id, object_kind::link);
    if (!locked) {
        return locked.err();
    }
    slot *s_slot = locked->s;
    store_release(s_slot->enabled, enabled ? 1u : 0u);
    impl_->bump();
    return {};
}

result<void> segment::destroy(uint32_t id) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    slot *s = impl_->find(id);
    if (s == nullptr) {
        return make_error(ENOENT, "no object with id " + std::to_string(id));
    }
    if (auto users = impl_->dependents(id); !users.empty()) {
        std::string list;
        for (uint32_t u : users) {
            list += (list.empty() ? "" : ", ") + std::to_string(u);
        }
        return make_error(EBUSY, std::string(kind_name(static_cast<object_kind>(s->kind))) + " " +
                                     std::to_string(id) + " is used by object" +
                                     (users.size() > 1 ? "s " : " ") + list +
                                     "; destroy those first");
    }
    if (s->kind == static_cast<uint32_t>(object_kind::map)) {
        if (auto held = impl_->holders(id); !held.empty()) {
            return make_error(
                EBUSY,
                "map " + std::to_string(id) + " is an inner map of map " +
                    std::to_string(held.front().first) + " (key " + hex_bytes(held.front().second) +
                    (held.size() > 1 ? " and " + std::to_string(held.size() - 1) + " more entries"
                                     : std::string()) +
                    "); delete those entries or destroy map " + std::to_string(held.front().first) +
                    " first");
        }
    }
    // Gone for every reader at once; its extent and the slot itself (a link's counters) stay
    // until the hosts that may still run with them have synchronised past this generation.
    s->revision = __atomic_load_n(&impl_->hdr()->generation, __ATOMIC_RELAXED) + 1;
    store_release(s->state, slot_retired);
    impl_->bump();
    impl_->reclaim();
    return {};
}

result<void> segment::set_inner_map(uint32_t outer_id, std::span<const uint8_t> key,
                                    uint32_t inner_id, uint64_t flags) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto outer_slot = impl_->find_kind(outer_id, object_kind::map);
    if (!outer_slot) {
        return outer_slot.err();
    }
    auto outer = impl_->to_map(**outer_slot);
    if (!outer) {
        return damaged_record(outer_id, outer.err());
    }
    const maps::map_spec &spec = outer->first.spec;
    auto refused = [&](int code, const std::string &why) {
        return make_error(code, "map " + std::to_string(inner_id) + " cannot be put into map " +
                                    std::to_string(outer_id) + " (" + outer->first.name +
                                    "): " + why);
    };
    if (!maps::is_map_in_map(spec.type)) {
        return make_error(EINVAL, "map " + std::to_string(outer_id) + " is a " +
                                      maps::map_type_name(spec.type) +
                                      " map, not an array_of_maps or hash_of_maps");
    }
    if (inner_id == outer_id) {
        return refused(EINVAL, "a map cannot hold itself");
    }
    auto inner_slot = impl_->find_kind(inner_id, object_kind::map);
    if (!inner_slot) {
        return refused(inner_slot.err().code, inner_slot.err().message);
    }
    auto inner = impl_->to_map(**inner_slot);
    if (!inner) {
        return damaged_record(inner_id, inner.err());
    }
    if (auto ok = maps::check_inner_map(spec, inner->first.spec); !ok) {
        return refused(EINVAL, ok.err().message);
    }
    auto value = std::as_bytes(std::span(&inner_id, 1));
    return outer->second.write(key, {reinterpret_cast<const uint8_t *>(value.data()), value.size()},
                               flags);
}

result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>> segment::holders(uint32_t id) const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    return impl_->holders(id);
}

result<snapshot> segment::read_all() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    return impl_->read_locked();
}

snapshot segment::impl::read_locked() const {
    snapshot snap;
    snap.generation = __atomic_load_n(&hdr()->generation, __ATOMIC_ACQUIRE);
    struct record {
        uint32_t index;
        const slot *at;
        slot copy;
    };
    std::vector<record> live;
    for (uint32_t i = 0; i < max_objects(); i++) {
        const slot &s = slots()[i];
        uint32_t state = load_acquire(s.state);
        if (state == slot_live) {
            live.push_back({i, &s, {}});
            std::memcpy(static_cast<void *>(&live.back().copy), &s, sizeof(slot));
        } else if (state != slot_free && state != slot_creating && state != slot_retired) {
            snap.damaged.push_back({s.id, i, "its state " + std::to_string(state) + " is unknown"});
        }
    }
    // Ids grow with creation, so id order is creation order (link order for hooks).
    std::sort(live.begin(), live.end(),
              [](const record &a, const record &b) { return a.copy.id < b.copy.id; });
    for (size_t i = 0; i < live.size(); i++) {
        const slot &s = live[i].copy;
        auto damaged = [&](const std::string &why) {
            snap.damaged.push_back({s.id, live[i].index, why});
        };
        bool twin = (i > 0 && live[i - 1].copy.id == s.id) ||
                    (i + 1 < live.size() && live[i + 1].copy.id == s.id);
        if (s.id == 0 || twin) {
            damaged(s.id == 0 ? "its id is 0" : "another slot holds the same id");
            continue;
        }
        switch (static_cast<object_kind>(s.kind)) {
        case object_kind::program:
            if (auto p = to_program(s); p) {
                snap.programs.push_back(std::move(*p));
            } else {
                damaged(p.err().message);
            }
            break;
        case object_kind::map:
            if (auto m = to_map(s); m) {
                snap.maps.push_back(std::move(m->first));
            } else {
                damaged(m.err().message);
            }
            break;
        case object_kind::target:
            if (auto t = to_target(s); t) {
                snap.targets.push_back(std::move(*t));
            } else {
                damaged(t.err().message);
            }
            break;
        case object_kind::link:
            if (auto l = to_link(s, *live[i].at); l) {
                snap.links.push_back(std::move(*l));
            } else {
                damaged(l.err().message);
            }
            break;
        default:
            damaged("its kind " + std::to_string(s.kind) + " is unknown");
            break;
        }
    }
    return snap;
}

result<program_info> segment::program(uint32_t id) const {
    return impl_->read_object(id, object_kind::program,
                              [&](const slot &s, slot *) -> result<program_info> {
                                  auto p = impl_->to_program(s);
                                  return p ? p : result<program_info>(damaged_record(id, p.err()));
                              });
}

result<map_info> segment::map(uint32_t id) const {
    return impl_->read_object(id, object_kind::map, [&](const slot &s, slot *) -> result<map_info> {
        auto m = impl_->to_map(s);
        return m ? result<map_info>(m->first) : result<map_info>(damaged_record(id, m.err()));
    });
}

result<link_info> segment::link(uint32_t id) const {
    return impl_->read_object(id, object_kind::link,
                              [&](const slot &s, slot *at) -> result<link_info> {
                                  auto l = impl_->to_link(s, *at);
                                  return l ? l : result<link_info>(damaged_record(id, l.err()));
                              });
}

result<maps::map_view> segment::map_view(uint32_t id) const {
    return impl_->read_object(id, object_kind::map,
                              [&](const slot &s, slot *) -> result<maps::map_view> {
                                  auto m = impl_->to_map(s);
                                  return m ? result<maps::map_view>(m->second)
                                           : result<maps::map_view>(damaged_record(id, m.err()));
                              });
}

result<map_region> segment::map_mmap_region(uint32_t id) const {
    return impl_->read_object(
        id, object_kind::map, [&](const slot &s, slot *) -> result<map_region> {
            auto m = impl_->to_map(s);
            if (!m) {
                return damaged_record(id, m.err());
            }
            auto region = maps::mmapable_region(m->first.spec, m->first.ncpus);
            if (!region) {
                return make_error(ENODEV, "map " + std::to_string(id) + " (" +
                                              maps::map_type_name(m->first.spec.type) +
                                              ") cannot be mmap'ed: only ring buffers and arrays "
                                              "created with BPF_F_MMAPABLE can");
            }
            uint64_t at = s.extent + sizeof(extent_header) + region->offset;
            if (at % maps::mmap_page_size != 0 || at + region->length > impl_->size) {
                return make_error(EPROTO,
                                  "map " + std::to_string(id) +
                                      ": its mmapable region is not on a page of the segment");
            }
            return store::map_region{at, region->length};
        });
}

int segment::fd() const {
    return impl_->fd;
}

result<link_counters> segment::counters(uint32_t link_id) const {
    return impl_->read_object(link_id, object_kind::link,
                              [&](const slot &, slot *at) -> result<link_counters> {
                                  return link_counters(at->counters, &impl_->hdr()->stats_flags);
                              });
}

void segment::lock_for_test() {
    pthread_mutex_lock(&impl_->hdr()->lock);
}

// --- link programs and per-host link states ---

namespace {

bool process_exists(int32_t pid) {
    return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

} // namespace

result<void> segment::set_link_program(uint32_t link_id, uint32_t prog_id) {
    auto locked = impl_->lock_object(link_id, object_kind::link);
    if (!locked) {
        return locked.err();
    }
    slot *l_slot = locked->s;
    if (auto p = impl_->find_kind(prog_id, object_kind::program); !p) {
        return p.err();
    }
    store_release(l_slot->prog_id, prog_id);
    impl_->bump();
    return {};
}

namespace {} // namespace

result<void> segment::set_link_host_state(uint32_t link_id, const link_host_state &state) {
    auto locked = impl_->lock_object(link_id, object_kind::link);
    if (!locked) {
        return locked.err();
    }
    auto pick = impl_->record_for(*locked->s, state.pid);
    if (!pick) {
        return pick.err();
    }
    auto *rec = static_cast<host_record *>(*pick);
    rec->failed = state.failed ? host_failed : host_running;
    std::memset(rec->why, 0, sizeof rec->why);
    std::memcpy(rec->why, state.why.data(), std::min(state.why.size(), sizeof rec->why - 1));
    return {};
}

result<link_counters> segment::host_counters(uint32_t link_id, int32_t pid) {
    auto locked = impl_->lock_object(link_id, object_kind::link);
    if (!locked) {
        return locked.err();
    }
    auto pick = impl_->record_for(*locked->s, pid);
    if (!pick) {
        return pick.err();
    }
    auto *rec = static_cast<host_record *>(*pick);
    return link_counters(rec->counters, &impl_->hdr()->stats_flags, &rec->decisions, &rec->pid,
                         &rec->owned_key);
}

result<void> segment::set_run_timing(bool on) {
    if (impl_->hdr() == nullptr) {
        return make_error(EINVAL, "segment " + name_ + " is not mapped");
    }
    // Under the lock, so that no record changes hands meanwhile; hosts see the flag at once
    // and each record's key (what their per-run path compares) right after.
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    if (on) {
        __atomic_fetch_or(&impl_->hdr()->stats_flags, detail::stats_timing, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_and(&impl_->hdr()->stats_flags, ~detail::stats_timing, __ATOMIC_RELAXED);
    }
    for (uint32_t i = 0; i < impl_->max_objects(); i++) {
        slot &s = impl_->slots()[i];
        if (s.state != slot_live || s.kind != static_cast<uint32_t>(object_kind::link)) {
            continue;
        }
        if (host_records *r = records_of(impl_->objects(), s)) {
            for (host_record &rec : r->rec) {
                __atomic_store_n(&rec.owned_key, owned_key_of(rec.pid, on), __ATOMIC_RELAXED);
            }
        }
    }
    return {};
}

bool segment::run_timing() const {
    return impl_->timing();
}

result<void *> segment::impl::record_for(slot &s, int32_t pid) {
    host_records *r = records_of(objects(), s);
    if (r == nullptr) {
        auto off = allocate(sizeof(host_records), s.id);
        if (!off) {
            return off.err();
        }
        r = static_cast<host_records *>(payload(*off));
        std::memset(static_cast<void *>(r), 0, sizeof *r);
        r->magic = host_records_magic;
        store_release(s.extent, *off);
    }
    host_record *pick = nullptr;
    for (host_record &rec : r->rec) {
        if (rec.pid == pid) {
            rec.stamp = ++r->next_stamp;
            return &rec;
        }
    }
    for (host_record &rec : r->rec) {
        if (pick == nullptr && (rec.pid == 0 || !process_exists(rec.pid))) {
            pick = &rec;
        }
    }
    if (pick == nullptr) {
        pick = &*std::min_element(
            std::begin(r->rec), std::end(r->rec),
            [](const host_record &a, const host_record &b) { return a.stamp < b.stamp; });
    }
    // Its process (if any is left) stops its unlocked adds first.
    __atomic_store_n(&pick->owned_key, 0, __ATOMIC_RELAXED);
    detail::fold_counters(pick->counters, s.counters);
    std::memset(&pick->decisions, 0, sizeof pick->decisions);
    pick->pid = pid;
    __atomic_store_n(&pick->owned_key, owned_key_of(pid, timing()), __ATOMIC_RELAXED);
    pick->failed = host_attaching; // until the host reports (set_link_host_state)
    std::memset(pick->why, 0, sizeof pick->why);
    pick->stamp = ++r->next_stamp;
    return static_cast<void *>(pick);
}

result<void> segment::clear_link_host_state(uint32_t link_id, int32_t pid) {
    auto locked = impl_->lock_object(link_id, object_kind::link);
    if (!locked) {
        return locked.err();
    }
    slot *l_slot = locked->s;
    if (host_records *r = records_of(impl_->objects(), *l_slot)) {
        for (host_record &rec : r->rec) {
            if (rec.pid == pid) {
                __atomic_store_n(&rec.owned_key, 0, __ATOMIC_RELAXED);
                rec.pid = 0;
            }
        }
    }
    return {};
}

result<std::map<uint32_t, std::vector<link_host_state>>> segment::link_host_states() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    std::map<uint32_t, std::vector<link_host_state>> out;
    for (uint32_t i = 0; i < impl_->max_objects(); i++) {
        const slot &s = impl_->slots()[i];
        if (s.state != slot_live || s.kind != static_cast<uint32_t>(object_kind::link)) {
            continue;
        }
        const host_records *r = records_of(impl_->objects(), s);
        if (r == nullptr) {
            continue;
        }
        std::vector<const host_record *> recs;
        for (const host_record &rec : r->rec) {
            if (rec.pid != 0 && process_exists(rec.pid)) {
                recs.push_back(&rec);
            }
        }
        std::sort(recs.begin(), recs.end(),
                  [](const host_record *a, const host_record *b) { return a->pid < b->pid; });
        for (const host_record *rec : recs) {
            detail::counter_totals t;
            detail::sum_counters(rec->counters, t);
            link_host_state h{rec->pid,
                              rec->failed == host_failed,
                              std::string(rec->why, strnlen(rec->why, sizeof rec->why)),
                              t.runs,
                              t.faults,
                              t.budget_stops,
                              t.run_time_ns,
                              {}};
            detail::sum_decisions(rec->decisions, h.decisions);
            h.attaching = rec->failed == host_attaching;
            out[s.id].push_back(std::move(h));
        }
    }
    return out;
}

// --- check ---

namespace {

// The host table: a free entry is all zero; a used one names a pid once, and has not passed a
// generation the segment has not reached. (Retired slots' extents are checked with the others.)
void check_hosts(const header &h, uint64_t generation, check_report &out) {
    std::set<int32_t> seen;
    for (size_t i = 0; i < max_host_processes; i++) {
        const host_entry &e = h.hosts[i];
        const std::string where = "host entry " + std::to_string(i);
        if (e.pid == 0) {
            if (e.start_time != 0 || e.passed != 0) {
                out.findings.push_back({"hosts", 0, where + " is free but not empty"});
            }
            continue;
        }
        if (e.pid < 0) {
            out.findings.push_back({"hosts", 0, where + " names pid " + std::to_string(e.pid)});
            continue;
        }
        if (!seen.insert(e.pid).second) {
            out.findings.push_back(
                {"hosts", 0, where + " names pid " + std::to_string(e.pid) + " a second time"});
        }
        if (e.passed > generation) {
            out.findings.push_back({"hosts", 0,
                                    where + " (pid " + std::to_string(e.pid) +
                                        ") passed generation " + std::to_string(e.passed) +
                                        ", beyond the segment's " + std::to_string(generation)});
        }
    }
}

} // namespace

result<check_report> segment::check() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    check_report out;
    auto finding = [&](const char *check, uint32_t id, std::string message) {
        out.findings.push_back({check, id, std::move(message)});
    };
    const header &h = *impl_->hdr();
    const geometry &geo = impl_->geo;
    out.max_objects = geo.max_objects;
    out.next_id = load_acquire(h.next_id);
    out.heap_size = geo.heap_end - geo.heap_offset;

    snapshot snap = impl_->read_locked();
    out.generation = snap.generation;
    for (const damaged_object &d : snap.damaged) {
        finding("record", d.id,
                "object " + std::to_string(d.id) + " (slot " + std::to_string(d.slot) +
                    ") is damaged: " + d.why);
    }
    out.programs = static_cast<uint32_t>(snap.programs.size());
    out.maps = static_cast<uint32_t>(snap.maps.size());
    out.targets = static_cast<uint32_t>(snap.targets.size());
    out.links = static_cast<uint32_t>(snap.links.size());

    // Every slot: its state, its id against the next one, and the extents it references.
    struct extent_ref {
        uint64_t offset, size;
        uint32_t id;
    };
    std::vector<extent_ref> extents;
    std::map<uint32_t, object_kind> kinds;
    const detail::heap heap = impl_->objects();
    for (uint32_t i = 0; i < geo.max_objects; i++) {
        slot copy;
        std::memcpy(static_cast<void *>(&copy), &impl_->slots()[i], sizeof copy);
        if (copy.state == slot_free) {
            continue;
        }
        if (copy.state == slot_creating) {
            // The lock is held, and a dead writer's were freed when it was taken.
            finding("table", copy.id,
                    "slot " + std::to_string(i) + " is still being created with the lock free");
            continue;
        }
        if (copy.state == slot_retired) {
            // Destroyed, its storage kept until every host has passed the destroy: the extent
            // still counts as used, and the destroy cannot be newer than the generation.
            out.retired++;
            if (copy.revision > out.generation) {
                finding("retired", copy.id,
                        "retired object " + std::to_string(copy.id) +
                            " was destroyed at generation " + std::to_string(copy.revision) +
                            ", after the segment's " + std::to_string(out.generation));
            }
        } else if (copy.state != slot_live) {
            continue; // a record finding already
        } else {
            out.objects++;
            if (copy.kind >= static_cast<uint32_t>(object_kind::program) &&
                copy.kind <= static_cast<uint32_t>(object_kind::link)) {
                kinds.emplace(copy.id, static_cast<object_kind>(copy.kind));
            }
        }
        if (copy.id >= out.next_id) {
            finding("ids", copy.id,
                    "object " + std::to_string(copy.id) + " has an id not below the next id " +
                        std::to_string(out.next_id));
        }
        const uint64_t refs[2] = {
            copy.extent,
            copy.state == slot_live && copy.pending != copy.extent ? copy.pending : uint64_t{0}};
        for (uint64_t off : refs) {
            if (off == 0) {
                continue;
            }
            auto size = heap.checked_payload_size(off);
            if (!size) {
                finding("extent", copy.id,
                        "object " + std::to_string(copy.id) + ": its extent at " +
                            std::to_string(off) + " is unusable: " + size.err().message);
                continue;
            }
            const extent_header *eh = heap.extent_at(off);
            if (eh->owner != copy.id) {
                finding("extent", copy.id,
                        "object " + std::to_string(copy.id) + ": its extent at " +
                            std::to_string(off) + " says it belongs to object " +
                            std::to_string(eh->owner));
            }
            extents.push_back({off, eh->size, copy.id});
        }
    }
    out.extents = static_cast<uint32_t>(extents.size());

    // No two extents overlap; then the used and free space add up to the heap.
    std::sort(extents.begin(), extents.end(),
              [](const extent_ref &a, const extent_ref &b) { return a.offset < b.offset; });
    uint64_t end = geo.heap_offset, gaps = 0;
    for (size_t i = 0; i < extents.size(); i++) {
        const extent_ref &e = extents[i];
        if (i > 0 && e.offset < extents[i - 1].offset + extents[i - 1].size) {
            finding("overlap", e.id,
                    "object " + std::to_string(e.id) + "'s extent at " + std::to_string(e.offset) +
                        " overlaps object " + std::to_string(extents[i - 1].id) + "'s at " +
                        std::to_string(extents[i - 1].offset) + " (" +
                        std::to_string(extents[i - 1].size) + " bytes)");
        }
        if (e.offset > end) {
            gaps += e.offset - end;
        }
        end = std::max(end, e.offset + e.size);
        out.heap_used += e.size;
    }
    gaps += geo.heap_end > end ? geo.heap_end - end : 0;
    out.heap_free = gaps;
    if (out.heap_used + out.heap_free != out.heap_size) {
        finding("heap", 0,
                "used (" + std::to_string(out.heap_used) + ") and free (" +
                    std::to_string(out.heap_free) + ") bytes do not add up to the heap's " +
                    std::to_string(out.heap_size));
    }

    // Links name a program and a target of those kinds; programs name maps.
    auto names = [&](uint32_t id, object_kind want) -> std::string {
        auto k = kinds.find(id);
        if (k == kinds.end()) {
            return "which does not exist";
        }
        if (k->second != want) {
            return std::string("which is a ") + kind_name(k->second);
        }
        return {};
    };
    for (const link_info &l : snap.links) {
        if (auto why = names(l.prog_id, object_kind::program); !why.empty()) {
            finding("link", l.id,
                    "link " + std::to_string(l.id) + " names program " + std::to_string(l.prog_id) +
                        ", " + why);
        }
        if (auto why = names(l.target_id, object_kind::target); !why.empty()) {
            finding("link", l.id,
                    "link " + std::to_string(l.id) + " names target " +
                        std::to_string(l.target_id) + ", " + why);
        }
    }
    for (const program_info &p : snap.programs) {
        for (uint32_t m : p.map_ids) {
            if (auto why = names(m, object_kind::map); !why.empty()) {
                finding("program", p.id,
                        "program " + std::to_string(p.id) + " names map " + std::to_string(m) +
                            ", " + why);
            }
        }
    }

    // Host records: each names a process or none; those of processes gone are listed.
    for (uint32_t i = 0; i < geo.max_objects; i++) {
        const slot &sl = impl_->slots()[i];
        if (sl.state != slot_live || sl.kind != static_cast<uint32_t>(object_kind::link)) {
            continue;
        }
        const host_records *r = records_of(heap, sl);
        if (r == nullptr) {
            if (sl.extent != 0) {
                finding("host", sl.id,
                        "link " + std::to_string(sl.id) +
                            "'s extent does not hold host records (bad magic or size)");
            }
            continue;
        }
        for (const host_record &rec : r->rec) {
            if (rec.pid < 0) {
                finding("host", sl.id,
                        "link " + std::to_string(sl.id) + " has a host record of pid " +
                            std::to_string(rec.pid));
            } else if (rec.pid == 0) {
                continue;
            } else if (process_exists(rec.pid)) {
                out.live_hosts++;
            } else {
                out.dead_hosts.push_back({sl.id, rec.pid});
            }
        }
    }

    check_hosts(h, out.generation, out);
    if (impl_->damaged()) {
        finding("truncated", 0,
                "segment " + name_ +
                    " was truncated while it was checked (its reads gave zero "
                    "pages)");
    }
    return out;
}

// --- host processes and retired storage ---

result<void> segment::host_passed(uint64_t generation) {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto pid = static_cast<int32_t>(getpid());
    uint64_t now = __atomic_load_n(&impl_->hdr()->generation, __ATOMIC_RELAXED);
    host_entry *mine = nullptr;
    for (host_entry &h : impl_->hdr()->hosts) {
        if (h.pid == pid) {
            mine = &h;
        }
    }
    if (mine == nullptr) {
        (void)impl_->live_hosts(); // frees the places of hosts that are gone
        for (host_entry &h : impl_->hdr()->hosts) {
            if (h.pid == 0 && mine == nullptr) {
                mine = &h;
            }
        }
        if (mine == nullptr) {
            return make_error(ENOSPC, "segment " + name_ + " keeps track of " +
                                          std::to_string(max_host_processes) +
                                          " host processes already (the most it can); end some "
                                          "of them or use another segment for more");
        }
        *mine = host_entry{};
        mine->start_time = process_start_time(pid);
        mine->pid = pid;
    }
    store_release(mine->passed, std::min(generation, now));
    impl_->reclaim();
    return {};
}

result<void> segment::host_leave() {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    auto pid = static_cast<int32_t>(getpid());
    for (host_entry &h : impl_->hdr()->hosts) {
        if (h.pid == pid) {
            h = host_entry{};
        }
    }
    impl_->reclaim();
    return {};
}

result<std::vector<host_process>> segment::hosts() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    std::vector<host_process> out;
    for (const host_entry *h : impl_->live_hosts()) {
        out.push_back({h->pid, h->passed});
    }
    std::sort(out.begin(), out.end(),
              [](const host_process &a, const host_process &b) { return a.pid < b.pid; });
    return out;
}

result<std::vector<retired_object>> segment::retired() const {
    auto g = impl_->lock();
    if (!g) {
        return g.err();
    }
    impl_->reclaim();
    auto hosts = impl_->live_hosts();
    std::vector<retired_object> out;
    for (uint32_t i = 0; i < impl_->max_objects(); i++) {
        const slot &s = impl_->slots()[i];
        if (s.state != slot_retired) {
            continue;
        }
        retired_object r;
        r.id = s.id;
        r.kind = static_cast<object_kind>(s.kind);
        r.name = std::string(s.name, strnlen(s.name, sizeof s.name));
        if (s.extent != 0) {
            if (auto size = impl_->objects().checked_payload_size(s.extent); size) {
                r.bytes = *size + sizeof(extent_header);
            }
        }
        r.generation = s.revision;
        for (const host_entry *h : hosts) {
            if (h->passed < s.revision) {
                r.held_by.push_back(h->pid);
            }
        }
        std::sort(r.held_by.begin(), r.held_by.end());
        out.push_back(std::move(r));
    }
    std::sort(out.begin(), out.end(),
              [](const retired_object &a, const retired_object &b) { return a.id < b.id; });
    return out;
}

} // namespace bpftime::store

// SPDX-License-Identifier: MIT
/// @file
/// The shared-memory object store: one named POSIX segment holding programs, maps, attach
/// targets and attach links, written by controllers and read by any number of hosts.
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/result.hpp>
#include <bpftime/vm/isa.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace bpftime::store {

/// The layout version this build reads and writes. A segment of another version is refused.
inline constexpr uint32_t layout_version = 7;
/// The segment name when neither --shm nor BPFTIME_SHM names one.
inline constexpr const char *default_segment_name = "bpftime";
/// Longest object name, in bytes.
inline constexpr size_t max_name = 63;
/// Most maps one program may use.
inline constexpr size_t max_program_maps = 64;
/// Most maps the programs of a segment may name together: a host process running them all
/// holds a handle for each, and a process holds at most this many (helpers::max_map_handles).
/// create_program and replace_program refuse a program past it.
inline constexpr size_t max_host_maps = 4096;
/// Most host processes a segment keeps track of at once (segment::host_passed); processes
/// that are gone free their place.
inline constexpr size_t max_host_processes = 128;

/// The segment name to use: explicit if not empty, else $BPFTIME_SHM, else the default.
std::string segment_name(const std::string &explicit_name = {});

enum class object_kind : uint32_t { program = 1, map = 2, target = 3, link = 4 };
/// "program", "map", "target", "link".
const char *kind_name(object_kind kind);

struct program_info {
    uint32_t id = 0;
    std::string name;
    uint32_t type = 0;   ///< program type (Linux enum bpf_prog_type numbering)
    std::string section; ///< ELF section it came from
    std::vector<vm::ebpf_inst> insns;
    std::vector<uint32_t> map_ids; ///< maps its lddw pseudo forms name
    uint64_t revision = 0;         ///< bumped when the program is replaced
};

struct map_info {
    uint32_t id = 0;
    std::string name;
    maps::map_spec spec;
    uint32_t ncpus = 1;
    bool read_only = false; ///< programs may not write its values (.rodata)
};

struct target_info {
    uint32_t id = 0;
    std::string name;
    int32_t attach_type = 0;
    std::string args;
};

/// What the nginx URL filter decided through one link (link_counters::count_decision).
struct filter_decisions {
    uint64_t allowed = 0;     ///< requests the link's program let through
    uint64_t fail_open = 0;   ///< requests let through by the fail policy after this link failed
    uint64_t fail_closed = 0; ///< requests refused (503) by the fail policy after it failed
    /// Requests the link's program refused, by status; 0 holds statuses past the dozen a host
    /// record keeps apart.
    std::map<int, uint64_t> refused;
    bool empty() const {
        return allowed == 0 && fail_open == 0 && fail_closed == 0 && refused.empty();
    }
};

struct link_info {
    uint32_t id = 0;
    std::string name;
    uint32_t prog_id = 0;
    uint32_t target_id = 0;
    bool enabled = false;
    uint64_t runs = 0;   ///< program runs through this link, over all host processes
    uint64_t faults = 0; ///< runs that stopped with an error (budget stops included)
    uint64_t cookie = 0; ///< the attach cookie (get_attach_cookie)
    /// Runs stopped by the instruction budget (ETIMEDOUT): a subset of faults.
    uint64_t budget_stops = 0;
    /// Nanoseconds spent in runs while run timing was on (segment::set_run_timing); 0 when it
    /// never was.
    uint64_t run_time_ns = 0;
    /// nginx URL filter decisions, over the host records the link has (a record handed to
    /// another process takes its decisions along; runs and faults stay in the totals).
    filter_decisions decisions;
};

/// How one host process runs a link (segment::link_host_states).
struct link_host_state {
    int32_t pid = 0;
    bool failed = false; ///< false: attached and running in that process
    std::string why;     ///< when failed: the reason
    /// What that process counted (segment::host_counters); link_info's counts include them.
    uint64_t runs = 0, faults = 0, budget_stops = 0, run_time_ns = 0;
    filter_decisions decisions; ///< nginx URL filter hosts
    /// The process took the link but has not yet said whether it attached it (failed is false).
    bool attaching = false;
};
/// Host processes whose state one link records; past this, the oldest record goes.
inline constexpr size_t max_link_hosts = 8;

/// The part of a map's storage a process may mmap (maps::mmapable_region), placed in the
/// segment: offset is the segment file's offset, page-aligned; length whole pages.
struct map_region {
    uint64_t offset = 0;
    uint64_t length = 0;
};

/// An object-table slot whose record failed the checks made when it is read: the segment is
/// shared memory other processes can write, so its contents are untrusted input.
struct damaged_object {
    uint32_t id = 0;   ///< the id the slot holds (may itself be the damage)
    uint32_t slot = 0; ///< its index in the object table
    std::string why;
};

/// A destroyed object whose storage (a map's values, a link's counters) is kept because a host
/// process may still reach it: reused only once every live host has synchronised past the
/// destroy (segment::host_passed).
struct retired_object {
    uint32_t id = 0;
    object_kind kind = object_kind::map;
    std::string name;
    uint64_t bytes = 0;      ///< the extent kept, header included (0 for none)
    uint64_t generation = 0; ///< the generation of the destroy
    /// The live host processes that have not passed it yet (it goes when they do, or die).
    std::vector<int32_t> held_by;
};

/// A host process the segment keeps track of (segment::hosts).
struct host_process {
    int32_t pid = 0;
    uint64_t passed = 0; ///< the generation it has synchronised to
};

/// Every live object, read at one generation.
struct snapshot {
    uint64_t generation = 0;
    std::vector<program_info> programs;
    std::vector<map_info> maps;
    std::vector<target_info> targets;
    std::vector<link_info> links; ///< in creation order
    /// Records refused as damaged; every other object above is usable.
    std::vector<damaged_object> damaged;
};

/// One problem segment::check found: which check (a short name: "record", "table", "ids",
/// "link", "program", "extent", "overlap", "heap", "host", "truncated"), the object it concerns
/// (0 for none) and what is wrong.
struct check_finding {
    std::string check;
    uint32_t id = 0;
    std::string message;
};

/// A host record of a link naming a process that no longer exists (its counts are folded into
/// the link's when the record is taken again).
struct dead_host {
    uint32_t link_id = 0;
    int32_t pid = 0;
};

/// What segment::check found, with the totals it checked.
struct check_report {
    std::vector<check_finding> findings; ///< empty: the segment is consistent
    uint32_t objects = 0, programs = 0, maps = 0, targets = 0, links = 0;
    uint32_t max_objects = 0;
    uint32_t next_id = 0;
    uint64_t heap_size = 0, heap_used = 0, heap_free = 0;
    uint32_t extents = 0;    ///< extents the table references
    uint32_t retired = 0;    ///< destroyed objects whose storage hosts may still hold
    uint32_t live_hosts = 0; ///< host records of running processes
    std::vector<dead_host> dead_hosts;
    uint64_t generation = 0;
};

/// How to open or create a segment.
struct open_options {
    bool create = true;       ///< create the segment when it does not exist
    uint64_t size = 64 << 20; ///< bytes, for a new segment
    uint32_t max_objects = 1024;
    unsigned mode = 0600; ///< permissions of a new segment
    /// The user that must own the segment; unset: root or this process's effective user.
    std::optional<uid_t> owner;
    /// A group allowed to write the segment (its group-write bit is refused otherwise); a new
    /// segment is given to this group (with mode, e.g. 0660). A segment writable by others is
    /// always refused.
    std::optional<gid_t> group;
    /// How long this process may wait for another: for the writer lock and for a segment
    /// another process is creating. Controllers wait (and then fail naming the lock's holder);
    /// hosts use 0 and never wait: a busy lock fails at once with EBUSY, and they retry later.
    uint32_t wait_ms = 5000;
    /// For hosts, when group is unset: also accept a segment its group can write if this
    /// process belongs to that group (its effective or a supplementary group). The process's
    /// groups were chosen by whoever started it (nginx's `user www-data;`), and the owner rule
    /// (root or this user) still holds, so only they can have made the segment so.
    bool member_groups = false;
};

/// Who may open a segment: the owner, group and permission bits of its file.
struct segment_access {
    uid_t owner = 0;
    gid_t group = 0;
    unsigned mode = 0; ///< permission bits (07777)
    uint64_t size = 0; ///< bytes
};

/// The owner, group and mode of segment name (a stat of /dev/shm/NAME: needs no access to the
/// segment itself). ENOENT when there is none.
result<segment_access> access_of_segment(const std::string &name);

/// Gives segment name to group (unset: keeps its group) with permission bits mode. Refused
/// for a segment this process would not trust by its owner (see open_options::owner), for a
/// mode with bits for others or execute bits, or without read and write for the owner; EPERM
/// when this process may not change it (only root, or the owner for a group it is in).
result<void> set_segment_access(const std::string &name, std::optional<gid_t> group, unsigned mode);

/// The name of group gid ("?" when it has none).
std::string group_name(gid_t gid);
/// The name of user uid ("?" when it has none).
std::string user_name(uid_t uid);

namespace detail {
/// The byte offset of the calling thread's counter stripe in host records of its process
/// (below 6 * 64), or one of the values above: not yet given one, none was left. Private to
/// link_counters; here for its inline path.
extern constinit
    __attribute__((tls_model("initial-exec"))) thread_local uint32_t thread_counter_offset;
/// This process's id as host records name it (updated in a forked child); -2 until the
/// process's first count, never a process id nor a record's key.
extern int32_t counting_pid;
/// The key of counters that are not a host record's: never equal to counting_pid.
extern const int32_t no_owned_key;
} // namespace detail

/// Run counters of one link (or of one host process's share of it), in the segment; hosts add
/// to them lock-free.
class link_counters {
public:
    link_counters() = default;
    /// stripes: the counter stripes in the segment; flags: the segment's stats flags;
    /// decisions: a host record's filter decisions (null: not counted); owner: a host record's
    /// pid field (null for a link's own stripes): while it names this process, each of up to
    /// six of its threads adds to a stripe of its own without a lock prefix. owned_key: a host
    /// record's key, its pid while runs are not timed and 0 while they are (kept so by the
    /// segment's writers), so that one compare with this process's id tells the per-run path
    /// both.
    link_counters(void *stripes, const uint32_t *flags, void *decisions = nullptr,
                  const int32_t *owner = nullptr, const int32_t *owned_key = nullptr)
        : stripes_(stripes), flags_(flags), decisions_(decisions), owner_(owner),
          owned_key_(owned_key != nullptr ? owned_key : &detail::no_owned_key) {}
    /// Counts a run, and a fault when fault is set.
    void count(bool fault) const { count(fault ? 1 : 0, 0); }
    /// Whether this process may count an untimed run with count_owned_run: these are its host
    /// record's counters and runs are not timed. One compare of two loads; false for empty
    /// counters.
    bool owned_untimed() const {
        return __atomic_load_n(owned_key_, __ATOMIC_RELAXED) == detail::counting_pid;
    }
    /// Counts a run that did not fail, when owned_untimed() said so: inline, a thread adding
    /// to its own stripe of its process's record with one unlocked add.
    void count_owned_run() const {
        const uint32_t offset = detail::thread_counter_offset;
        if (offset < 6 * 64) [[likely]] {
            // runs is the first counter of the thread's 64-byte stripe; no other thread writes
            // it, and an aligned 8-byte add is seen whole by readers in other processes.
            auto *runs = reinterpret_cast<uint64_t *>(static_cast<char *>(stripes_) + offset);
#if defined(__x86_64__)
            asm volatile("addq $1, %0" : "+m"(*runs));
#else
            __atomic_store_n(runs, __atomic_load_n(runs, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
#endif
            return;
        }
        count(0, 0);
    }
    /// Counts a run that ended with error code error (0: it did not fail; ETIMEDOUT: the
    /// instruction budget stopped it, a fault and a budget stop) and took run_time_ns.
    void count(int error, uint64_t run_time_ns) const;
    /// Whether hosts time runs now (segment::set_run_timing): one relaxed load.
    bool timing() const {
        return flags_ != nullptr && (__atomic_load_n(flags_, __ATOMIC_RELAXED) & 1u) != 0;
    }
    explicit operator bool() const {
        return stripes_ != nullptr;
    }

    /// What a URL filter made of a request through this link.
    enum class decision { allowed, refused, fail_open, fail_closed };
    /// Counts one decision (status: the refusal's HTTP status) in this host's record; nothing
    /// when these counters are not a host's (segment::counters).
    void count_decision(decision d, int status = 0) const;

private:
    void *stripes_ = nullptr;
    const uint32_t *flags_ = nullptr;
    void *decisions_ = nullptr;
    const int32_t *owner_ = nullptr;
    const int32_t *owned_key_ = &detail::no_owned_key;
};

namespace detail {
/// How run_clock_ticks reads the clock: not chosen yet (the first read chooses), the TSC
/// (invariant, its rate measured once per process), or CLOCK_MONOTONIC in ns.
enum run_clock_source : uint32_t { run_clock_unset, run_clock_tsc, run_clock_monotonic };
/// Set once by the first read (run_clock_ticks_slow), never changed after.
extern run_clock_source run_clock;
/// ns per tick of the run clock as a 32.32 fixed-point number (1 << 32 for CLOCK_MONOTONIC).
extern uint64_t run_clock_scale;
} // namespace detail

/// run_clock_ticks' path where the clock is not the TSC or not chosen yet: chooses it on the
/// first call (measuring the TSC's rate, about 200 microseconds), then reads it.
uint64_t run_clock_ticks_slow();

/// The run clock in its own ticks, cheap enough to read around every run: the raw TSC where it
/// is invariant, else CLOCK_MONOTONIC in ns. Only differences of two readings mean anything;
/// run_ticks_to_ns converts one. Inline, so a timed run costs two counter reads and one
/// multiplication rather than two calls and two conversions.
inline uint64_t run_clock_ticks() {
#if defined(__x86_64__)
    if (__atomic_load_n(&detail::run_clock, __ATOMIC_RELAXED) == detail::run_clock_tsc) [[likely]] {
        return __builtin_ia32_rdtsc();
    }
#endif
    return run_clock_ticks_slow();
}

/// A difference of two run_clock_ticks readings in nanoseconds.
inline uint64_t run_ticks_to_ns(uint64_t ticks) {
    return static_cast<uint64_t>(
        (static_cast<unsigned __int128>(ticks) * detail::run_clock_scale) >> 32);
}

/// A monotonic clock in nanoseconds (run_clock_ticks converted; for tests and diagnostics).
uint64_t run_clock_ns();

/// For tests and diagnostics: whether link_counters::count adds without a lock prefix in this
/// process, inside a restartable sequence. True on x86-64 when glibc registered rseq for its
/// threads; false with GLIBC_TUNABLES=glibc.pthread.rseq=0 or a kernel without rseq, where
/// every add is a locked one. (Threads on CPUs 6 and up take the locked add either way.)
bool link_counters_use_rseq();

/// A process's mapping of a segment. Writers serialise on a robust process-shared mutex in
/// the segment; a writer killed mid-update leaves no half-created object behind.
class segment : public std::enable_shared_from_this<segment> {
public:
    ~segment();
    segment(const segment &) = delete;
    segment &operator=(const segment &) = delete;

    /// Opens (and, with opts.create, creates) the segment called name.
    static result<std::shared_ptr<segment>> open(const std::string &name,
                                                 const open_options &opts = {});
    /// Removes the segment's name; processes that mapped it keep their mapping.
    static result<void> remove(const std::string &name);

    const std::string &name() const { return name_; }
    /// Bumped by every change; one relaxed load.
    uint64_t generation() const;
    /// Whether the segment was truncated under this process: the access that found it
    /// (SIGBUS) was given zero pages over the whole mapping instead of killing the process, and
    /// every read since refuses the segment. A host drops it and applies its fail policy.
    bool damaged() const;
    /// Waits until the generation differs from seen or timeout passes, and says whether it
    /// differs. Writers wake the waiters of every process (a shared futex on the generation's
    /// low 32 bits) when they unlock after a change, so a host follows a change at once and
    /// uses no CPU while nothing changes. Returns at once when the generation already moved;
    /// may return false early (a signal).
    bool wait_generation(uint64_t seen, std::chrono::milliseconds timeout) const;
    /// Wakes every wait_generation of this segment, in every process (those finding the
    /// generation unchanged wait again): how a host's own thread stops a waiting follower.
    void wake_generation_waiters() const;
    /// Whether the segment's name still names this mapping: ENOENT when it was removed,
    /// ESTALE when another segment took the name.
    result<void> check_named() const;

    // --- writers ---
    result<uint32_t> create_program(const std::string &name, uint32_t type,
                                    const std::string &section,
                                    const std::vector<vm::ebpf_inst> &insns,
                                    const std::vector<uint32_t> &map_ids);
    /// Replaces a program's instructions; hosts recompile it when they next synchronise.
    result<void> replace_program(uint32_t id, const std::vector<vm::ebpf_inst> &insns,
                                 const std::vector<uint32_t> &map_ids);
    /// Creates a map; initial_value (if any) becomes the value at index 0 of an array.
    result<uint32_t> create_map(const std::string &name, const maps::map_spec &spec,
                                const std::vector<uint8_t> &initial_value = {},
                                bool read_only = false);
    result<uint32_t> create_target(const std::string &name, int32_t attach_type,
                                   const std::string &args);
    /// A link; cookie is what get_attach_cookie gives its program.
    result<uint32_t> create_link(const std::string &name, uint32_t prog_id, uint32_t target_id,
                                 bool enabled, uint64_t cookie = 0);
    result<void> set_link_enabled(uint32_t id, bool enabled);
    /// Destroys any object; refused while another object depends on it (a map while an
    /// array_of_maps or hash_of_maps holds it, naming that map). The object is gone at once;
    /// its storage is reused only after every live host process has synchronised past the
    /// destroy (host_passed), since a host runs what it last instantiated until it does.
    result<void> destroy(uint32_t id);
    /// array_of_maps, hash_of_maps: puts map inner_id at key of map outer_id (flags:
    /// maps::update_any, update_noexist, update_exist), as BPF_MAP_UPDATE_ELEM with an inner
    /// map's fd. EINVAL when inner_id is not a map, is outer_id, or does not match the outer
    /// map's inner template (the message names the field); ENOENT when either map is gone. The
    /// inner map cannot be destroyed while it is held; hosts' programs see the new map at
    /// their next lookup.
    result<void> set_inner_map(uint32_t outer_id, std::span<const uint8_t> key, uint32_t inner_id,
                               uint64_t flags);
    /// The maps that hold map id, as (outer map id, key) pairs.
    result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>> holders(uint32_t id) const;

    // --- readers ---
    // Everything read from the segment is checked before use (offsets, sizes and counts
    // against the mapping); a record that fails is refused with its id and why. read_all takes
    // the writer lock (waiting at most open_options::wait_ms); the single-object reads take
    // none and retry when a writer changes the object under them.
    result<snapshot> read_all() const;
    /// Verifies the whole segment under the writer lock (as read_all, recovering a dead
    /// writer's leftovers first), writing nothing: every record well formed, ids unique and
    /// below the next id, every link's program and target present and of their kinds, every
    /// program's maps present, every extent inside the heap, owned by its slot and overlapping
    /// no other, used + free space adding up to the heap, host records naming processes (dead
    /// ones listed). A failure to take the lock is the error; problems are findings.
    result<check_report> check() const;
    result<program_info> program(uint32_t id) const;
    result<map_info> map(uint32_t id) const;
    result<link_info> link(uint32_t id) const;
    /// A view of a map's storage in this process's mapping.
    result<maps::map_view> map_view(uint32_t id) const;
    /// Where a map's mmapable region (a ring buffer, an array with BPF_F_MMAPABLE) lies in the
    /// segment file, to map it elsewhere with mmap(fd()); ENODEV for other maps.
    result<map_region> map_mmap_region(uint32_t id) const;
    /// The segment's shared-memory fd, open while the segment is (close-on-exec).
    int fd() const;
    /// The counters of a link (valid while the segment stays mapped).
    result<link_counters> counters(uint32_t link_id) const;
    /// The counters of process pid's share of a link: its host record (made when it has none,
    /// like set_link_host_state, in the running state), so `bpftime list` shows what each
    /// process ran; the link's totals include them. Takes the writer lock; EBUSY when it is
    /// held and this process may not wait (a host then counts on counters(link_id)).
    result<link_counters> host_counters(uint32_t link_id, int32_t pid);

    /// Switches run timing on or off for every host of the segment at once, as
    /// kernel.bpf_stats_enabled does for the kernel: hosts then read the clock around each run
    /// and add the time to run_time_ns. Off when a segment is made.
    result<void> set_run_timing(bool on);
    /// Whether run timing is on.
    bool run_timing() const;

    /// For tests: the lock, to simulate a writer that dies holding it.
    void lock_for_test();

    // --- host processes and the storage of destroyed objects ---

    /// A host process (this one) says it holds no storage of objects destroyed at or before
    /// generation (capped at the current one): it has synchronised to it and released what was
    /// gone. The first call registers the process (pass UINT64_MAX before the first read: a
    /// process that has read nothing holds nothing); from then until host_leave or its exit,
    /// storage of objects destroyed after what it passed is not reused. Also frees the storage
    /// every live host has passed. ENOSPC past max_host_processes live hosts; EBUSY when the
    /// lock is held and this process may not wait.
    result<void> host_passed(uint64_t generation);
    /// This process holds no storage of the segment any more (it deinstantiated).
    result<void> host_leave();
    /// The host processes the segment keeps track of that are still alive.
    result<std::vector<host_process>> hosts() const;
    /// Destroyed objects whose storage is still kept, with the hosts that keep it.
    result<std::vector<retired_object>> retired() const;

    // --- link programs and per-host link states ---

    /// Points a link at another program, as BPF_LINK_UPDATE does: each host runs the new
    /// program from its next resync, with no moment where the link runs neither.
    result<void> set_link_program(uint32_t link_id, uint32_t prog_id);
    /// Records how process state.pid runs a link (replacing that process's earlier record).
    /// Records of processes that no longer exist are dropped; past max_link_hosts the oldest
    /// goes. Hosts call this; it does not move the generation.
    result<void> set_link_host_state(uint32_t link_id, const link_host_state &state);
    /// Removes process pid's record of a link (nothing when it has none).
    result<void> clear_link_host_state(uint32_t link_id, int32_t pid);
    /// The records of processes that still exist, by link id (links without any are absent).
    result<std::map<uint32_t, std::vector<link_host_state>>> link_host_states() const;

private:
    segment() = default;
    struct impl;
    std::unique_ptr<impl> impl_;
    std::string name_;
};

} // namespace bpftime::store

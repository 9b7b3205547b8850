// SPDX-License-Identifier: MIT
// Private to interposer/: the fd table and what the interposed entry points share.
//
// Every object handed to the loader is a real fd (memfd_create), so close, dup, fcntl and poll
// keep working on it; the table maps each such fd to an `object` (kind, store id, extra state).
// fds dup'ed from one another share one object (a shared_ptr); objects that hold others (a
// program its maps, a link its program and perf event) hold their shared_ptrs, so an object
// goes when its last fd and its last holder go, as the kernel's refcounts do.
#pragma once

#include <bpftime/maps/maps.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/store/store.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace bpftime::interposer {

/// The libc functions the library replaces, as the next object (libc) defines them.
struct real_functions {
    long (*syscall)(long, long, long, long, long, long, long);
    int (*close)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, void *);
    int (*ioctl)(int, unsigned long, void *);
    void *(*mmap)(void *, size_t, int, int, int, off_t);
    int (*munmap)(void *, size_t);
    int (*epoll_ctl)(int, int, int, void *);
    int (*epoll_wait)(int, void *, int, int);
    int (*epoll_pwait)(int, void *, int, int, const void *);
    int (*unlink)(const char *);
};
/// Resolved once, at load, with dlsym(RTLD_NEXT).
const real_functions &real();

enum class kind { map, prog, link, btf, perf_event };
const char *kind_name(kind k);

/// One object behind one or more fds.
struct object {
    kind k = kind::map;
    /// Store object id (map, program, link); for a BTF object its own id.
    uint32_t id = 0;
    /// Created by this process through the library: destroyed in the store when it goes
    /// (unless pinned). Objects reached by id or by pin are left to their owner.
    bool owned = false;

    // maps
    store::map_info map;
    uint32_t map_flags = 0; ///< as the loader gave them
    uint32_t btf_id = 0, btf_key_type_id = 0, btf_value_type_id = 0;
    std::optional<maps::map_view> view; ///< a map's; a BPF output perf event's ring's
    /// perf_event_array: the perf events its slots name (held as the kernel's map holds them).
    std::map<uint32_t, std::shared_ptr<object>> perf_slots;
    // programs
    uint32_t prog_type = 0, expected_attach_type = 0, insn_count = 0;
    /// A tp_btf program's raw tracepoint (from its attach_btf_id); empty for other programs.
    std::string btf_tracepoint;
    std::vector<uint32_t> map_ids;
    // BTF
    std::vector<uint8_t> btf;
    // perf events (uprobes)
    int32_t attach_type = 0;
    uint32_t target_id = 0;
    std::string target_args;
    bool enabled = true;
    uint32_t ioctl_link_id = 0;     ///< the link PERF_EVENT_IOC_SET_BPF made
    std::vector<uint32_t> link_ids; ///< links made on it (enable/disable follow the event)
    // BPF output perf events (perf_buffer): the ring is a perf_ring map made at mmap, when its
    // size is known, and destroyed with the event.
    bool bpf_output = false;
    int32_t cpu = -1;
    uint32_t wakeup_events = 1;
    uint32_t ring_id = 0;
    uint64_t ring_length = 0; ///< the mapping's length: one page and the data
    // links
    uint32_t link_type = 0;
    bool detached = false;

    /// What this object keeps alive (a program's maps, a link's program and perf event).
    std::vector<std::shared_ptr<object>> holds;

    object() = default;
    object(const object &) = delete;
    object &operator=(const object &) = delete;
    /// Destroys the store object when owned and not pinned (see state::release).
    ~object();
};

/// A ring buffer or perf event in an epoll set of the loader: what epoll_wait checks.
struct epoll_entry {
    int fd;          ///< our ringbuf map fd or BPF output perf event fd
    uint32_t events; ///< EPOLLIN...
    uint64_t data;   ///< the epoll_data the loader gave
    std::shared_ptr<object> obj;
};

/// All of the library's state. One lock: every entry point holds it while it works.
class state {
public:
    static state &get();

    std::recursive_mutex mu;

    /// The segment and provider, opened on first use. nullptr with the error when that failed.
    event_provider_impl *provider();
    store::segment *segment();

    /// fd -> object.
    std::map<int, std::shared_ptr<object>> fds;
    std::shared_ptr<object> find(int fd, std::optional<kind> k = std::nullopt) const;
    /// A new fd for obj (a memfd named after its kind); -1 with errno on failure.
    int add(std::shared_ptr<object> obj);

    /// Ids to destroy once nothing holds them any more (EBUSY when last tried).
    std::set<uint32_t> pending;
    /// Tries to destroy id now, else remembers it; then retries what was pending.
    void release(uint32_t id);
    void retry_pending();

    /// epoll fd -> ringbuf and BPF output perf event fds added to it.
    std::map<int, std::vector<epoll_entry>> epolls;

    /// Frozen maps (BPF_MAP_FREEZE): updates through the syscall are refused.
    std::set<uint32_t> frozen;

    /// Next BTF object id (BTF blobs stay in this process).
    uint32_t next_btf_id = 1;

    /// Called at exit and by the fork child: forget objects (and, at exit, destroy them).
    void shutdown();
    bool owner_process() const;
    void become_child();

    /// Where pins live: a text file beside the segment (see pins.cpp).
    std::string pin_file() const;

private:
    state() = default;
    std::unique_ptr<event_provider_impl> provider_;
    std::shared_ptr<store::segment> seg_;
    bool open_failed_ = false;
    int owner_pid_ = 0;
};

/// Whether the calling thread is inside the library (its own calls pass straight through).
bool inside();
class inside_guard {
public:
    inside_guard();
    ~inside_guard();
    inside_guard(const inside_guard &) = delete;
    inside_guard &operator=(const inside_guard &) = delete;

private:
    bool was_;
};

/// BPFTIME_INTERPOSER_DEBUG=1.
bool debug();
/// "bpftime: <text>" on stderr, each distinct text once.
void say_once(const std::string &text);
/// "bpftime: <command> is not supported in user space", once each; returns -1 with errno.
long unsupported(const std::string &what, int err);
/// Returns -1 with errno = err.
long fail(int err);

/// bpf(cmd, attr, size) on the library's objects.
long do_bpf(int cmd, void *attr, unsigned size);
/// perf_event_open for the uprobe PMU; other types go to the kernel.
long do_perf_event_open(void *attr, long pid, long cpu, long group_fd, long flags);
/// mmap of a BPF output perf event: makes (or maps again) its perf ring.
void *perf_mmap(const std::shared_ptr<object> &pe, void *addr, size_t len, int prot, int flags,
                off_t off);
/// ioctl on a perf event fd of the library.
int perf_ioctl(const std::shared_ptr<object> &obj, unsigned long request, void *arg);
/// PERF_EVENT_IOC_SET_BPF: a link of prog on the perf event pe, held by pe.
long make_perf_link(const std::shared_ptr<object> &prog, const std::shared_ptr<object> &pe);
/// The uprobe PMU's type (from sysfs), -1 when absent.
int uprobe_pmu_type();

// Pins (pins.cpp): path -> object id, shared by every loader on this segment.
result<void> pin_add(const std::string &path, uint32_t id);
result<uint32_t> pin_find(const std::string &path);
bool pin_remove(const std::string &path);
bool is_pinned(uint32_t id);

} // namespace bpftime::interposer

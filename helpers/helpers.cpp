// SPDX-License-Identifier: MIT
// Helpers with Linux ids and semantics. Every pointer a program passes is checked against the
// memory the run may access; a bad one stops the program with an error naming the helper.
#include "internal.hpp"

#include <bpftime/helpers/helpers.hpp>
#include <bpftime/vm/vm.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <span>
#include <string>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <type_traits>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace bpftime::helpers {

struct detail::handle_maker {
    static std::shared_ptr<const map_handle> make(uint64_t value) {
        return std::shared_ptr<const map_handle>(new map_handle(value));
    }
};

namespace {

using vm::run_context;

// --- map handles: a tag in the high bits (a non-canonical address), a generation and a table
// index ---
//
// A slot is reused once the last reference to its handle (held by the compiled programs whose
// code names it) is gone. Its generation moves on, so an old handle value a program kept (in a
// map, say) never reaches the new map. Such a handle may still be decoded on another thread
// while its slot is rewritten; helpers therefore copy the view under the slot's sequence number
// (odd while the slot is free or being written) and use the copy only when the number did not
// move, so a torn view is never used.

constexpr uint64_t handle_tag = 0xb9f0'0000'0000'0000ull;
constexpr uint64_t handle_tag_mask = 0xffff'0000'0000'0000ull;
constexpr unsigned handle_index_bits = 16;
constexpr uint64_t handle_index_mask = (1ull << handle_index_bits) - 1;
constexpr size_t max_handles = max_map_handles; // maps one process uses at once
static_assert(max_handles <= handle_index_mask + 1);
static_assert(std::is_trivially_copyable_v<maps::map_view>);

struct handle_slot {
    std::atomic<uint32_t> seq{1}; // odd: free or being written; even: live, the generation
    maps::map_view view;
    // A map a program reached through an outer map: its values are no region of the program
    // until a lookup hands them out.
    bool inner = false;
};

std::array<handle_slot, max_handles> &handle_table() {
    static auto *table = new std::array<handle_slot, max_handles>();
    return *table;
}

struct handle_pool {
    std::mutex mu;
    std::deque<uint32_t> free; // retired slots, oldest first
    size_t used = 0;           // slots ever handed out (the rest were never used)
    size_t live = 0;
};
handle_pool &pool() {
    static auto *p = new handle_pool();
    return *p;
}

// The slot of a live handle, or null.
handle_slot *slot_of(uint64_t handle, uint32_t &gen) {
    uint64_t index = handle & handle_index_mask;
    gen = static_cast<uint32_t>(handle >> handle_index_bits);
    if ((handle & handle_tag_mask) != handle_tag || index >= max_handles || (gen & 1) != 0) {
        return nullptr;
    }
    return &handle_table()[index];
}

// Copies the view of a live handle into out (and whether it is an inner map's into inner);
// false (the program stopped) when it is not one.
bool decode(uint64_t handle, run_context *ctx, const char *helper, maps::map_view &out,
            bool *inner = nullptr) {
    uint32_t gen = 0;
    handle_slot *s = slot_of(handle, gen);
    if (s != nullptr && s->seq.load(std::memory_order_acquire) == gen) {
        std::memcpy(static_cast<void *>(&out), &s->view, sizeof out);
        if (inner != nullptr) {
            *inner = s->inner;
        }
        std::atomic_thread_fence(std::memory_order_acquire);
        if (s->seq.load(std::memory_order_relaxed) == gen) {
            return true;
        }
    }
    ctx->fail(std::string(helper) + ": r1 is not a map");
    return false;
}

bool readable(run_context *ctx, uint64_t addr, uint64_t len, const char *helper, const char *what) {
    if (len == 0 || ctx->check_access(addr, len, false)) {
        return true;
    }
    ctx->fail(std::string(helper) + ": " + what + " is outside the program's memory");
    return false;
}

bool writable(run_context *ctx, uint64_t addr, uint64_t len, const char *helper, const char *what) {
    if (len == 0 || ctx->check_access(addr, len, true)) {
        return true;
    }
    ctx->fail(std::string(helper) + ": " + what + " is not writable program memory");
    return false;
}

void *ptr(uint64_t v) {
    return reinterpret_cast<void *>(v);
}
uint64_t u64(long v) {
    return static_cast<uint64_t>(v);
}

// --- maps ---

uint64_t inner_map_handle(uint32_t id);

uint64_t map_lookup_elem(uint64_t map, uint64_t key, uint64_t, uint64_t, uint64_t,
                         run_context *ctx) {
    maps::map_view v;
    bool inner = false;
    if (!decode(map, ctx, "map_lookup_elem", v, &inner) ||
        !readable(ctx, key, v.spec().key_size, "map_lookup_elem", "the key")) {
        return 0;
    }
    const maps::map_view *m = &v;
    if (maps::is_map_in_map(m->spec().type)) {
        // As Linux: the inner map, or null for an empty slot; the program passes it to the
        // next map helper.
        uint32_t id = m->inner_map_id(ptr(key));
        return id == 0 ? 0 : inner_map_handle(id);
    }
    // Values lie in the map's value area, which the program's regions already cover; the
    // hint lets the JIT check the accesses that follow against that area first. An inner
    // map's values are handed out as a region of the run (once: the run keeps one copy).
    const void *value = m->lookup(ptr(key));
    if (value != nullptr) {
        if (inner) {
            std::span<uint8_t> area = m->value_area();
            ctx->add_region(area.data(), area.size(), true);
        } else {
            ctx->hint_region(value, m->spec().value_size);
        }
    }
    return reinterpret_cast<uint64_t>(value);
}

uint64_t map_update_elem(uint64_t map, uint64_t key, uint64_t value, uint64_t flags, uint64_t,
                         run_context *ctx) {
    maps::map_view v;
    if (!decode(map, ctx, "map_update_elem", v) ||
        !readable(ctx, key, v.spec().key_size, "map_update_elem", "the key") ||
        !readable(ctx, value, v.spec().value_size, "map_update_elem", "the value")) {
        return 0;
    }
    const maps::map_view *m = &v;
    return u64(m->update(ptr(key), ptr(value), flags));
}

uint64_t map_delete_elem(uint64_t map, uint64_t key, uint64_t, uint64_t, uint64_t,
                         run_context *ctx) {
    maps::map_view v;
    if (!decode(map, ctx, "map_delete_elem", v) ||
        !readable(ctx, key, v.spec().key_size, "map_delete_elem", "the key")) {
        return 0;
    }
    const maps::map_view *m = &v;
    return u64(m->remove(ptr(key)));
}

// long bpf_current_task_under_cgroup(map, index): 1 when this process's cgroup is the map's
// slot or below it, 0 when not, -E2BIG / -EAGAIN for a bad index or an empty slot.
uint64_t current_task_under_cgroup(uint64_t map, uint64_t index, uint64_t, uint64_t, uint64_t,
                                   run_context *ctx) {
    maps::map_view v;
    if (!decode(map, ctx, "current_task_under_cgroup", v)) {
        return 0;
    }
    if (v.spec().type != maps::map_type::cgroup_array) {
        ctx->fail(std::string("current_task_under_cgroup: r1 is a ") +
                  maps::map_type_name(v.spec().type) + " map, not a cgroup_array");
        return 0;
    }
    return u64(v.current_task_under_cgroup(static_cast<uint32_t>(index)));
}

// --- ring buffers ---

struct reservation {
    void *record;
    maps::map_view ring;
};
thread_local std::vector<reservation> reservations;

uint64_t ringbuf_output(uint64_t map, uint64_t data, uint64_t size, uint64_t flags, uint64_t,
                        run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "ringbuf_output", m) ||
        !readable(ctx, data, size, "ringbuf_output", "the data")) {
        return 0;
    }
    return u64(m.ringbuf_output(ptr(data), size, flags));
}

std::mutex resolver_mu;
std::shared_ptr<const map_resolver> resolver;

// --- inner maps: this process's handles of the maps outer maps hold, by store id ---
//
// Filled on first use and kept until the map is gone (release_inner_maps) or the resolver
// changes (another segment, whose ids may be the same numbers). Each thread keeps the handle
// values it used last, valid while the epoch does not move, so a lookup through an outer map
// takes no lock once the thread has seen its inner map.

struct inner_table {
    std::mutex mu;
    std::unordered_map<uint32_t, std::shared_ptr<const map_handle>> by_id;
    std::atomic<uint64_t> epoch{1};
};
inner_table &inner_maps() {
    static auto *t = new inner_table();
    return *t;
}

result<std::shared_ptr<const map_handle>> make_handle(const maps::map_view &view, bool inner);

uint64_t inner_map_handle(uint32_t id) {
    struct cached {
        uint64_t epoch = 0;
        std::array<std::pair<uint32_t, uint64_t>, 8> recent{};
        uint32_t next = 0;
    };
    // On the heap: the library's thread-local block stays small enough for nginx to dlopen it.
    thread_local std::unique_ptr<cached> cache_held;
    if (cache_held == nullptr) {
        cache_held = std::make_unique<cached>();
    }
    cached &cache = *cache_held;
    inner_table &t = inner_maps();
    const uint64_t epoch = t.epoch.load(std::memory_order_acquire);
    if (cache.epoch == epoch) {
        for (const auto &[cached_id, handle] : cache.recent) {
            if (cached_id == id) {
                return handle;
            }
        }
    } else {
        cache = cached{epoch, {}, 0};
    }
    uint64_t handle = 0;
    {
        std::lock_guard lock(t.mu);
        if (auto it = t.by_id.find(id); it != t.by_id.end()) {
            handle = it->second->value();
        } else {
            std::shared_ptr<const map_resolver> find;
            {
                std::lock_guard rlock(resolver_mu);
                find = resolver;
            }
            std::optional<maps::map_view> view;
            if (find != nullptr && *find) {
                view = (*find)(id);
            }
            // A slot naming a map that is gone, or one no map may be (damaged storage): as an
            // empty slot.
            if (!view || maps::is_map_in_map(view->spec().type)) {
                return 0;
            }
            auto h = make_handle(*view, true);
            if (!h) {
                return 0;
            }
            handle = (*h)->value();
            t.by_id.emplace(id, std::move(*h));
        }
    }
    cache.recent[cache.next++ % cache.recent.size()] = {id, handle};
    return handle;
}

// bpf_perf_event_output for tracing programs: flags name the array's slot (BPF_F_CURRENT_CPU or
// an index, nothing else), whose perf ring gets one sample record.
uint64_t perf_event_output(uint64_t, uint64_t map, uint64_t flags, uint64_t data, uint64_t size,
                           run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "perf_event_output", m) ||
        !readable(ctx, data, size, "perf_event_output", "the data")) {
        return 0;
    }
    if (m.spec().type != maps::map_type::perf_event_array) {
        ctx->fail("perf_event_output: r2 is a " + std::string(maps::map_type_name(m.spec().type)) +
                  " map, not a perf event array");
        return 0;
    }
    long id = m.perf_ring_id(flags);
    if (id < 0) {
        return u64(id);
    }
    std::shared_ptr<const map_resolver> find;
    {
        std::lock_guard lock(resolver_mu);
        find = resolver;
    }
    std::optional<maps::map_view> ring;
    if (find != nullptr && *find) {
        ring = (*find)(static_cast<uint32_t>(id));
    }
    // A slot naming a ring that is gone (its perf event was closed): as an empty slot.
    if (!ring || ring->spec().type != maps::map_type::perf_ring) {
        return u64(-ENOENT);
    }
    return u64(ring->perf_output(ptr(data), size));
}

uint64_t ringbuf_reserve(uint64_t map, uint64_t size, uint64_t flags, uint64_t, uint64_t,
                         run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "ringbuf_reserve", m) || flags != 0) {
        return 0;
    }
    void *rec = m.ringbuf_reserve(size);
    if (rec != nullptr) {
        ctx->add_region(rec, size, true);
        reservations.push_back({rec, m});
    }
    return reinterpret_cast<uint64_t>(rec);
}

// Submit and discard take the record pointer back; it must be one this thread reserved.
template <bool submit>
uint64_t ringbuf_finish(uint64_t record, uint64_t flags, uint64_t, uint64_t, uint64_t,
                        run_context *ctx) {
    auto it = std::find_if(reservations.begin(), reservations.end(),
                           [&](const reservation &r) { return r.record == ptr(record); });
    if (it == reservations.end()) {
        ctx->fail(std::string(submit ? "ringbuf_submit" : "ringbuf_discard") +
                  ": the pointer is not a record ringbuf_reserve returned");
        return 0;
    }
    if (submit) {
        it->ring.ringbuf_submit(it->record, flags);
    } else {
        it->ring.ringbuf_discard(it->record, flags);
    }
    reservations.erase(it);
    return 0;
}

// --- time, ids, randomness ---

// The time helpers read the clocks the kernel's do, so times a program takes in user space
// compare with times taken in the kernel and with clock_gettime() in the process.
template <clockid_t Clock>
uint64_t clock_ns(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    timespec ts{};
    ::clock_gettime(Clock, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t get_prandom_u32(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    thread_local uint64_t state = [] {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, 0) != sizeof seed) {
            seed = static_cast<uint64_t>(time(nullptr)) ^ static_cast<uint64_t>(gettid());
        }
        return seed | 1;
    }();
    // xorshift64*
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return static_cast<uint32_t>((state * 0x2545F4914F6CDD1Dull) >> 32);
}

uint64_t get_smp_processor_id(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : static_cast<uint64_t>(cpu);
}

// The calling thread's pid << 32 | tid, read once per thread (two system calls otherwise on every
// call); 0 until then. A forked child's one thread reads them again (pthread_atfork).
thread_local uint64_t current_pid_tgid = 0;

uint64_t get_current_pid_tgid(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    uint64_t v = current_pid_tgid;
    if (v == 0) [[unlikely]] {
        static std::once_flag once;
        std::call_once(once,
                       [] { pthread_atfork(nullptr, nullptr, [] { current_pid_tgid = 0; }); });
        v = current_pid_tgid =
            static_cast<uint64_t>(getpid()) << 32 | static_cast<uint32_t>(gettid());
    }
    return v;
}

uint64_t get_current_uid_gid(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    return static_cast<uint64_t>(getgid()) << 32 | getuid();
}

uint64_t get_current_comm(uint64_t buf, uint64_t size, uint64_t, uint64_t, uint64_t,
                          run_context *ctx) {
    if (size == 0 || !writable(ctx, buf, size, "get_current_comm", "the buffer")) {
        return u64(-EINVAL);
    }
    char comm[17] = {};
    prctl(PR_GET_NAME, comm);
    size_t n = std::min<size_t>(size - 1, strnlen(comm, 16));
    std::memcpy(ptr(buf), comm, n);
    std::memset(static_cast<char *>(ptr(buf)) + n, 0, size - n);
    return 0;
}

// --- probe_read: reads any address of this process without faulting ---

long read_self(void *dst, uint64_t src, uint64_t size) {
    iovec local{dst, size}, remote{ptr(src), size};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    return n == static_cast<ssize_t>(size) ? 0 : -EFAULT;
}

// probe_read_kernel(_str) share these: a user-space process has no kernel memory, so they read
// this process's memory as probe_read_user(_str) do and an address that is not mapped here (a
// kernel address among them) gives -EFAULT and zeroed memory, as the kernel's do for a bad
// address. Tools reach them through BPF_CORE_READ on pointers they got from user space.
template <const char *Name>
uint64_t probe_read(uint64_t dst, uint64_t size, uint64_t src, uint64_t, uint64_t,
                    run_context *ctx) {
    if (!writable(ctx, dst, size, Name, "the destination")) {
        return 0;
    }
    long rc = size == 0 ? 0 : read_self(ptr(dst), src, size);
    if (rc != 0) {
        std::memset(ptr(dst), 0, size);
    }
    return u64(rc);
}

// Copies a NUL-terminated string; returns its length with the NUL, like Linux.
template <const char *Name>
uint64_t probe_read_str(uint64_t dst, uint64_t size, uint64_t src, uint64_t, uint64_t,
                        run_context *ctx) {
    if (size == 0) {
        return 0;
    }
    if (!writable(ctx, dst, size, Name, "the destination")) {
        return 0;
    }
    auto *out = static_cast<char *>(ptr(dst));
    // Page-sized chunks: a string may end just before unmapped memory.
    uint64_t copied = 0;
    while (copied < size - 1) {
        uint64_t page_left = 4096 - ((src + copied) & 4095);
        uint64_t chunk = std::min(page_left, size - 1 - copied);
        if (read_self(out + copied, src + copied, chunk) != 0) {
            if (copied == 0) {
                std::memset(out, 0, size);
                return u64(-EFAULT);
            }
            break;
        }
        if (const void *nul = std::memchr(out + copied, 0, chunk)) {
            return static_cast<uint64_t>(static_cast<const char *>(nul) - out) + 1;
        }
        copied += chunk;
    }
    out[copied] = '\0';
    return copied + 1;
}

constexpr char n_probe_read[] = "probe_read";
constexpr char n_probe_read_str[] = "probe_read_str";
constexpr char n_probe_read_user[] = "probe_read_user";
constexpr char n_probe_read_user_str[] = "probe_read_user_str";
constexpr char n_probe_read_kernel[] = "probe_read_kernel";
constexpr char n_probe_read_kernel_str[] = "probe_read_kernel_str";

// get_current_task(_btf): there is no task_struct in user space. 0 is what a program sees for
// a missing task (it must check it before use); reads through it then fail with -EFAULT.
uint64_t get_current_task(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    return 0;
}

// --- strings and tracing ---

// long bpf_strncmp(const char *s1, u32 s1_sz, const char *s2)
uint64_t strncmp_helper(uint64_t s1, uint64_t s1_sz, uint64_t s2, uint64_t, uint64_t,
                        run_context *ctx) {
    if (!readable(ctx, s1, s1_sz, "strncmp", "s1")) {
        return 0;
    }
    auto *a = static_cast<const unsigned char *>(ptr(s1));
    for (uint64_t i = 0; i < s1_sz; i++) {
        if (!readable(ctx, s2 + i, 1, "strncmp", "s2")) {
            return 0;
        }
        unsigned char b = *static_cast<const unsigned char *>(ptr(s2 + i));
        if (a[i] != b || a[i] == 0) {
            return u64(static_cast<long>(a[i]) - static_cast<long>(b));
        }
    }
    return 0;
}

// The string a %s of trace_printk prints: up to 63 bytes before a NUL of memory the program may
// read (its stack, context, map values), or "(fault)" when the first byte is not such memory.
std::string printable_string(run_context *ctx, uint64_t at) {
    constexpr size_t most = 63;
    std::string s;
    while (s.size() < most && ctx->check_access(at + s.size(), 1, false)) {
        char c = *static_cast<const char *>(ptr(at + s.size()));
        if (c == '\0') {
            return s;
        }
        s += c;
    }
    return s.empty() && !ctx->check_access(at, 1, false) ? "(fault)" : s;
}

// long bpf_trace_printk(const char *fmt, u32 fmt_size, ...): up to three arguments, the
// conversions Linux accepts (%d %i %u %x %X %ld %lu %lx %lld %llu %llx %p %s %c %%).
uint64_t trace_printk(uint64_t fmt, uint64_t fmt_size, uint64_t a1, uint64_t a2, uint64_t a3,
                      run_context *ctx) {
    if (fmt_size == 0 || !readable(ctx, fmt, fmt_size, "trace_printk", "the format")) {
        return u64(-EINVAL);
    }
    std::string_view f(static_cast<const char *>(ptr(fmt)),
                       strnlen(static_cast<const char *>(ptr(fmt)), fmt_size));
    const uint64_t args[3] = {a1, a2, a3};
    size_t next = 0;
    std::string out;
    for (size_t i = 0; i < f.size(); i++) {
        if (f[i] != '%') {
            out += f[i];
            continue;
        }
        size_t j = i + 1;
        int longs = 0;
        while (j < f.size() && f[j] == 'l' && longs < 2) {
            longs++, j++;
        }
        if (j >= f.size()) {
            return u64(-EINVAL);
        }
        char conv = f[j];
        if (conv == '%') {
            out += '%';
            i = j;
            continue;
        }
        if (next == 3) {
            return u64(-EINVAL);
        }
        uint64_t v = args[next++];
        char buf[32];
        switch (conv) {
        case 'd':
        case 'i':
            snprintf(buf, sizeof buf, "%lld",
                     longs ? static_cast<long long>(v)
                           : static_cast<long long>(static_cast<int>(v)));
            break;
        case 'u':
            snprintf(buf, sizeof buf, "%llu",
                     longs ? static_cast<unsigned long long>(v) : static_cast<unsigned>(v));
            break;
        case 'x':
        case 'X':
            snprintf(buf, sizeof buf, conv == 'x' ? "%llx" : "%llX",
                     longs ? static_cast<unsigned long long>(v) : static_cast<unsigned>(v));
            break;
        case 'p':
            snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
            break;
        case 'c':
            snprintf(buf, sizeof buf, "%c", static_cast<char>(v));
            break;
        case 's':
            out += printable_string(ctx, v);
            i = j;
            continue;
        default:
            return u64(-EINVAL);
        }
        out += buf;
        i = j;
    }
    std::fprintf(stderr, "bpftime: trace: %s%s", out.c_str(),
                 out.empty() || out.back() != '\n' ? "\n" : "");
    return out.size();
}

// What the host said about the run: the probed function (0 where no probe runs the program,
// as for programs the kernel runs elsewhere) and the cookie of the link that runs it.
uint64_t get_func_ip(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    return ctx->info().func_ip;
}

uint64_t get_attach_cookie(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    return ctx->info().attach_cookie;
}

// --- stacks ---
//
// The user stack of the probed thread, walked as the kernel's perf_callchain_user walks it on
// x86-64: the probed address, then (at a function's first instruction, where the frame pointer
// is still the caller's) the return address at the top of the stack, then the return address of
// each frame of the rbp chain, until a read fails or max frames. Every read of the stack goes
// through read_self (a fault gives an error, never a signal). There is no kernel stack in user
// space: requests without BPF_F_USER_STACK, and programs run without a probed thread's registers
// (test hooks, nginx), get -EFAULT, as the kernel's helpers do when there is no stack to walk.

// Offsets of rbp, rip and rsp in struct pt_regs, in 8-byte words.
constexpr size_t regs_rbp = 4, regs_rip = 16, regs_rsp = 19;

uint32_t walk_user_stack(const vm::run_info &info, uint64_t *out, uint32_t max) {
    const auto *regs = static_cast<const uint64_t *>(info.user_regs);
    uint32_t n = 0;
    if (regs == nullptr || max == 0) {
        return 0;
    }
    out[n++] = regs[regs_rip];
    if (n < max && info.func_ip == regs[regs_rip]) {
        uint64_t ret = 0;
        if (read_self(&ret, regs[regs_rsp], sizeof ret) == 0) {
            out[n++] = ret;
        }
    }
    for (uint64_t fp = regs[regs_rbp]; n < max;) {
        uint64_t frame[2]; // the saved rbp, then the return address
        if (read_self(frame, fp, sizeof frame) != 0) {
            break;
        }
        out[n++] = frame[1];
        fp = frame[0];
    }
    return n;
}

// How many frames to walk: the ones asked for after skip, at most max_stack_depth in all.
uint32_t walk_depth(uint64_t skip, uint64_t frames) {
    return static_cast<uint32_t>(std::min<uint64_t>(maps::max_stack_depth, skip + frames));
}

// long bpf_get_stackid(ctx, map, flags): the id of the current user stack in a stack trace map.
uint64_t get_stackid(uint64_t, uint64_t map, uint64_t flags, uint64_t, uint64_t, run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "get_stackid", m)) {
        return 0;
    }
    if (m.spec().type != maps::map_type::stack_trace) {
        ctx->fail(std::string("get_stackid: r2 is a ") + maps::map_type_name(m.spec().type) +
                  " map, not a stack_trace map");
        return 0;
    }
    constexpr uint64_t known =
        maps::stack_skip_mask | maps::stack_user | maps::stack_fast_cmp | maps::stack_reuse_id;
    if ((flags & ~known) != 0) {
        return u64(-EINVAL);
    }
    if ((flags & maps::stack_user) == 0 || ctx->info().user_regs == nullptr) {
        return u64(-EFAULT);
    }
    uint64_t skip = flags & maps::stack_skip_mask;
    std::array<uint64_t, maps::max_stack_depth> ips;
    uint32_t n =
        walk_user_stack(ctx->info(), ips.data(), walk_depth(skip, m.spec().value_size / 8));
    if (n <= skip) {
        return u64(-EFAULT);
    }
    return u64(m.stack_put(std::span<const uint64_t>(ips.data() + skip, n - skip),
                           flags & (maps::stack_fast_cmp | maps::stack_reuse_id)));
}

// long bpf_get_stack(ctx, buf, size, flags): the current user stack's return addresses into buf;
// the bytes written, the rest of buf zeroed. Build ids (BPF_F_USER_BUILD_ID) are not supported:
// -EINVAL.
uint64_t get_stack(uint64_t, uint64_t buf, uint64_t size, uint64_t flags, uint64_t,
                   run_context *ctx) {
    if (!writable(ctx, buf, size, "get_stack", "the buffer")) {
        return 0;
    }
    auto *out = static_cast<uint8_t *>(ptr(buf));
    auto clear = [&](long err) {
        std::memset(out, 0, size);
        return u64(err);
    };
    constexpr uint64_t known = maps::stack_skip_mask | maps::stack_user;
    if ((flags & ~known) != 0 || size % 8 != 0) {
        return clear(-EINVAL);
    }
    if ((flags & maps::stack_user) == 0 || ctx->info().user_regs == nullptr) {
        return clear(-EFAULT);
    }
    uint64_t skip = flags & maps::stack_skip_mask;
    std::array<uint64_t, maps::max_stack_depth> ips;
    uint32_t n = walk_user_stack(ctx->info(), ips.data(), walk_depth(skip, size / 8));
    if (n < skip) {
        return clear(-EFAULT);
    }
    uint64_t bytes = std::min<uint64_t>(size, (n - skip) * 8ull);
    std::memcpy(out, ips.data() + skip, bytes);
    std::memset(out + bytes, 0, size - bytes);
    return bytes;
}

// bpf_override_return(regs, rc): the probed function returns rc without running, where the
// host can do that (a uprobe at a function's entry); anywhere else the run fails, as Linux
// refuses the program there.
uint64_t override_return(uint64_t, uint64_t rc, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    vm::return_override *slot = ctx->info().override_return;
    if (slot == nullptr) {
        ctx->fail("override_return works only in a uprobe at a function's entry (not in a "
                  "uretprobe, at an offset inside a function or at other attach types)");
        return 0;
    }
    slot->set = true;
    slot->value = rc;
    return 0;
}

// --- queues, stacks and bloom filters ---

// Which maps the helper takes, as the kernel's verifier allows them.
bool queue_like(run_context *ctx, const maps::map_view &m, const char *helper, bool bloom) {
    auto t = m.spec().type;
    if (t == maps::map_type::queue || t == maps::map_type::stack ||
        (bloom && t == maps::map_type::bloom_filter)) {
        return true;
    }
    ctx->fail(std::string(helper) + ": r1 is a " + maps::map_type_name(t) + " map, not a queue" +
              (bloom ? ", stack or bloom_filter" : " or stack"));
    return false;
}

// long bpf_map_push_elem(map, const void *value, u64 flags)
uint64_t map_push_elem(uint64_t map, uint64_t value, uint64_t flags, uint64_t, uint64_t,
                       run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "map_push_elem", m) || !queue_like(ctx, m, "map_push_elem", true) ||
        !readable(ctx, value, m.spec().value_size, "map_push_elem", "the value")) {
        return 0;
    }
    return u64(m.push_elem(ptr(value), flags));
}

// long bpf_map_pop_elem(map, void *value)
uint64_t map_pop_elem(uint64_t map, uint64_t value, uint64_t, uint64_t, uint64_t,
                      run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "map_pop_elem", m) || !queue_like(ctx, m, "map_pop_elem", false) ||
        !writable(ctx, value, m.spec().value_size, "map_pop_elem", "the value")) {
        return 0;
    }
    return u64(m.pop_elem(ptr(value)));
}

// long bpf_map_peek_elem(map, void *value): a bloom filter reads the value, the others write it.
uint64_t map_peek_elem(uint64_t map, uint64_t value, uint64_t, uint64_t, uint64_t,
                       run_context *ctx) {
    maps::map_view m;
    if (!decode(map, ctx, "map_peek_elem", m) || !queue_like(ctx, m, "map_peek_elem", true)) {
        return 0;
    }
    bool bloom = m.spec().type == maps::map_type::bloom_filter;
    if (!(bloom ? readable : writable)(ctx, value, m.spec().value_size, "map_peek_elem",
                                       "the value")) {
        return 0;
    }
    return u64(m.peek_elem(ptr(value)));
}

// --- signals ---

// bpf_send_signal(sig) and bpf_send_signal_thread(sig): as the kernel's, to this process or
// this thread. 0 sends nothing (a check, as kill() does); 32 and 33 are glibc's own (thread
// cancellation and set*id), which no program may send into a process that runs glibc; the
// kernel refuses pid 1.
template <bool Thread>
uint64_t send_signal(uint64_t sig, uint64_t, uint64_t, uint64_t, uint64_t, run_context *) {
    if (sig > 64 || sig == 32 || sig == 33) {
        return u64(-EINVAL);
    }
    if (getpid() == 1) {
        return u64(-EPERM);
    }
    if (sig == 0) {
        return 0;
    }
    int rc =
        Thread ? static_cast<int>(::syscall(SYS_tgkill, getpid(), gettid(), static_cast<int>(sig)))
               : ::kill(getpid(), static_cast<int>(sig));
    return rc == 0 ? 0 : u64(-errno);
}

// --- bpf_snprintf ---

// The kernel's limits (kernel/bpf/helpers.c): 12 arguments, 512 bytes of copied strings.
constexpr uint64_t snprintf_max_args = 12;
constexpr size_t snprintf_max_strings = 512;

// The format string: a NUL-terminated string the program may read, or nothing.
std::optional<std::string_view> format_string(run_context *ctx, uint64_t fmt) {
    constexpr size_t most = 64 * 1024;
    for (size_t n = 0; n < most; n++) {
        if (!ctx->check_access(fmt + n, 1, false)) {
            return std::nullopt;
        }
        if (*static_cast<const char *>(ptr(fmt + n)) == '\0') {
            return std::string_view(static_cast<const char *>(ptr(fmt)), n);
        }
    }
    return std::nullopt;
}

// A string for %s (program memory only) or %us (this process's memory, as probe_read_user_str
// reads it); "" when the first byte cannot be read, as the kernel's on a fault.
std::string snprintf_string(run_context *ctx, uint64_t at, bool user, size_t room) {
    std::string s;
    while (s.size() + 1 < room) {
        char c = 0;
        if (user ? read_self(&c, at + s.size(), 1) != 0
                 : !ctx->check_access(at + s.size(), 1, false)) {
            break;
        }
        if (!user) {
            c = *static_cast<const char *>(ptr(at + s.size()));
        }
        if (c == '\0') {
            break;
        }
        s += c;
    }
    return s;
}

bool printable_ascii(char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x80 && (std::isprint(u) || std::isspace(u));
}

bool space_or_punct(char c) {
    auto u = static_cast<unsigned char>(c);
    return u == 0 || std::isspace(u) || std::ispunct(u);
}

// One conversion of a bpf_snprintf format, read as the kernel's bpf_bprintf_prepare reads it.
struct conversion {
    enum kind_t { integer, character, string, kernel_or_user_string, pointer, ip };
    kind_t kind = integer;
    std::string_view spec;       // the '%' with its flags and width
    size_t last = 0;             // where the conversion's last character is
    char letter = 0;             // integers: d i u x X; pointers and addresses: after %p
    bool wide = false;           // integers: with l or ll
    bool ip6 = false;            // %pi6, %pI6
    const char *error = nullptr; // why the kernel refuses it; then last + 1 ends what names it
};

constexpr const char *conversions_taken =
    "is not one bpf_snprintf takes (it takes %d %i %u %x %X with l or ll, %c, %s, "
    "%pks, %pus, %pK, %px, %ps, %pS, %pB, %pi4, %pI4, %pi6, %pI6)";
constexpr const char *needs_separator = "must be followed by a space, punctuation or the end";

// The conversion whose '%' is at f[percent] (not "%%").
conversion read_conversion(std::string_view f, size_t percent) {
    auto at = [&](size_t i) { return i < f.size() ? f[i] : '\0'; };
    size_t i = percent + 1;
    while (at(i) == '0' || at(i) == '+' || at(i) == '-' || at(i) == ' ') {
        i++;
    }
    while (at(i) >= '0' && at(i) <= '9') {
        i++;
    }
    conversion c;
    c.spec = f.substr(percent, i - percent);
    auto refuse = [&](size_t last, const char *why) {
        c.last = last;
        c.error = why;
        return c;
    };
    const char p1 = at(i + 1), p2 = at(i + 2);
    switch (at(i)) {
    case 'p':
        c.letter = p1;
        if ((p1 == 'k' || p1 == 'u') && p2 == 's') {
            c.kind = conversion::kernel_or_user_string;
            c.last = i + 2;
            return space_or_punct(at(i + 3)) ? c : refuse(i + 3, needs_separator);
        }
        if (space_or_punct(p1) || p1 == 'K' || p1 == 'x' || p1 == 's' || p1 == 'S' || p1 == 'B') {
            c.kind = conversion::pointer;
            c.last = space_or_punct(p1) ? i : i + 1;
            return c;
        }
        if ((p1 != 'i' && p1 != 'I') || (p2 != '4' && p2 != '6')) {
            return refuse(i + 1, conversions_taken);
        }
        c.kind = conversion::ip;
        c.ip6 = p2 == '6';
        c.last = i + 2;
        return c;
    case 's':
        c.kind = conversion::string;
        c.last = i;
        return space_or_punct(p1) ? c : refuse(i + 1, needs_separator);
    case 'c':
        c.kind = conversion::character;
        c.last = i;
        return c;
    default:
        break;
    }
    for (int longs = 0; at(i) == 'l' && longs < 2; longs++) {
        c.wide = true;
        i++;
    }
    c.letter = at(i);
    c.last = i;
    if (c.letter != 'i' && c.letter != 'd' && c.letter != 'u' && c.letter != 'x' &&
        c.letter != 'X') {
        return refuse(i, conversions_taken);
    }
    return c;
}

// Formats as the kernel's bpf_bprintf_prepare and vsnprintf do; nullopt for a format the
// kernel refuses (-EINVAL).
std::optional<std::string> bpf_format(run_context *ctx, std::string_view f, const uint64_t *args,
                                      uint64_t nargs) {
    std::string out;
    uint64_t next = 0;
    size_t strings_left = snprintf_max_strings;
    for (size_t i = 0; i < f.size(); i++) {
        if (!printable_ascii(f[i])) {
            return std::nullopt;
        }
        if (f[i] != '%') {
            out += f[i];
            continue;
        }
        if (i + 1 < f.size() && f[i + 1] == '%') {
            out += '%';
            i++;
            continue;
        }
        const conversion c = read_conversion(f, i);
        if (c.error != nullptr || next >= nargs) {
            return std::nullopt;
        }
        i = c.last;
        const uint64_t v = args[next++];
        char buf[128];
        // The host's snprintf takes the conversions read_conversion lets through; widths are
        // what the program asked for (the kernel's limit is 2^23 - 1).
        auto emit = [&](const std::string &conv, auto value) {
            std::string one = std::string(c.spec) + conv;
            int n = std::snprintf(nullptr, 0, one.c_str(), value);
            if (n > 0) {
                std::string piece(static_cast<size_t>(n), '\0');
                std::snprintf(piece.data(), piece.size() + 1, one.c_str(), value);
                out += piece;
            }
        };
        auto emit_string = [&](bool user) {
            std::string s = snprintf_string(ctx, v, user, strings_left);
            strings_left -= std::min(strings_left, s.size() + 1);
            emit("s", s.c_str());
        };
        switch (c.kind) {
        case conversion::kernel_or_user_string:
            emit_string(c.letter == 'u');
            break;
        case conversion::string:
            emit_string(false);
            break;
        case conversion::pointer: {
            // Pointers print in full (there is no kernel address to hide in user space), as
            // %px prints them: 16 hex digits; symbols as the kernel prints an address it has
            // no symbol for.
            const bool symbol = c.letter == 's' || c.letter == 'S' || c.letter == 'B';
            std::snprintf(buf, sizeof buf, symbol ? "0x%lx" : "%016lx",
                          static_cast<unsigned long>(v));
            std::string text = buf;
            emit("s", text.c_str());
            break;
        }
        case conversion::ip: {
            uint8_t ip[16] = {};
            const size_t n = c.ip6 ? 16 : 4;
            if (ctx->check_access(v, n, false)) {
                std::memcpy(ip, ptr(v), n);
            }
            std::string text;
            if (!c.ip6) {
                std::snprintf(buf, sizeof buf,
                              c.letter == 'I' ? "%u.%u.%u.%u" : "%03u.%03u.%03u.%03u", ip[0], ip[1],
                              ip[2], ip[3]);
                text = buf;
            } else {
                for (size_t k = 0; k < 16; k += 2) {
                    std::snprintf(buf, sizeof buf, "%02x%02x", ip[k], ip[k + 1]);
                    text += buf;
                    if (c.letter == 'I' && k < 14) {
                        text += ':';
                    }
                }
            }
            emit("s", text.c_str());
            break;
        }
        case conversion::character:
            emit("c", static_cast<int>(static_cast<char>(v)));
            break;
        case conversion::integer: {
            const bool is_signed = c.letter == 'i' || c.letter == 'd';
            if (c.wide) {
                if (is_signed) {
                    emit(std::string("ll") + c.letter, static_cast<long long>(v));
                } else {
                    emit(std::string("ll") + c.letter, static_cast<unsigned long long>(v));
                }
            } else if (is_signed) {
                emit(std::string(1, c.letter), static_cast<int>(v));
            } else {
                emit(std::string(1, c.letter), static_cast<unsigned>(v));
            }
            break;
        }
        }
    }
    return out;
}

// long bpf_snprintf(char *str, u32 str_size, const char *fmt, u64 *data, u32 data_len): the
// bytes the whole text needs with its NUL (the text is cut to str_size - 1 and NUL-terminated),
// -EINVAL for a bad format or argument array (data_len a multiple of 8, 12 arguments at most).
uint64_t snprintf_helper(uint64_t str, uint64_t str_size, uint64_t fmt, uint64_t data,
                         uint64_t data_len, run_context *ctx) {
    str_size = static_cast<uint32_t>(str_size);
    data_len = static_cast<uint32_t>(data_len);
    if (data_len % 8 != 0 || data_len > snprintf_max_args * 8 || (data_len != 0 && data == 0)) {
        return u64(-EINVAL);
    }
    if ((str_size != 0 && !writable(ctx, str, str_size, "snprintf", "the output buffer")) ||
        !readable(ctx, data, data_len, "snprintf", "the argument array")) {
        return 0;
    }
    auto f = format_string(ctx, fmt);
    if (!f) {
        ctx->fail("snprintf: the format is not a NUL-terminated string in the program's memory");
        return 0;
    }
    uint64_t args[snprintf_max_args] = {};
    if (data_len != 0) {
        std::memcpy(args, ptr(data), data_len);
    }
    if (!snprintf_format_problem(*f, data_len / 8).empty()) {
        return u64(-EINVAL);
    }
    auto text = bpf_format(ctx, *f, args, data_len / 8);
    if (!text) {
        return u64(-EINVAL);
    }
    if (str_size != 0) {
        size_t n = std::min<size_t>(text->size(), str_size - 1);
        std::memcpy(ptr(str), text->data(), n);
        static_cast<char *>(ptr(str))[n] = '\0';
    }
    return text->size() + 1;
}

struct helper_row {
    uint32_t id;
    const char *name;
    vm::helper_fn fn;
};

// Linux ids (include/uapi/linux/bpf.h, __BPF_FUNC_MAPPER).
constexpr helper_row rows[] = {
    {1, "map_lookup_elem", map_lookup_elem},
    {2, "map_update_elem", map_update_elem},
    {3, "map_delete_elem", map_delete_elem},
    {4, "probe_read", probe_read<n_probe_read>},
    {5, "ktime_get_ns", clock_ns<CLOCK_MONOTONIC>},
    {6, "trace_printk", trace_printk},
    {7, "get_prandom_u32", get_prandom_u32},
    {8, "get_smp_processor_id", get_smp_processor_id},
    {14, "get_current_pid_tgid", get_current_pid_tgid},
    {15, "get_current_uid_gid", get_current_uid_gid},
    {16, "get_current_comm", get_current_comm},
    {25, "perf_event_output", perf_event_output},
    {35, "get_current_task", get_current_task},
    {37, "current_task_under_cgroup", current_task_under_cgroup},
    {45, "probe_read_str", probe_read_str<n_probe_read_str>},
    {112, "probe_read_user", probe_read<n_probe_read_user>},
    {113, "probe_read_kernel", probe_read<n_probe_read_kernel>},
    {114, "probe_read_user_str", probe_read_str<n_probe_read_user_str>},
    {115, "probe_read_kernel_str", probe_read_str<n_probe_read_kernel_str>},
    {125, "ktime_get_boot_ns", clock_ns<CLOCK_BOOTTIME>},
    {130, "ringbuf_output", ringbuf_output},
    {131, "ringbuf_reserve", ringbuf_reserve},
    {132, "ringbuf_submit", ringbuf_finish<true>},
    {133, "ringbuf_discard", ringbuf_finish<false>},
    {158, "get_current_task_btf", get_current_task},
    {160, "ktime_get_coarse_ns", clock_ns<CLOCK_MONOTONIC_COARSE>},
    {173, "get_func_ip", get_func_ip},
    {174, "get_attach_cookie", get_attach_cookie},
    {182, "strncmp", strncmp_helper},
    {27, "get_stackid", get_stackid},
    {67, "get_stack", get_stack},
    {58, "override_return", override_return},
    {87, "map_push_elem", map_push_elem},
    {88, "map_pop_elem", map_pop_elem},
    {89, "map_peek_elem", map_peek_elem},
    {109, "send_signal", send_signal<false>},
    {117, "send_signal_thread", send_signal<true>},
    {165, "snprintf", snprintf_helper},
};

// The registry's end-of-run step: unsubmitted records are discarded, a spin lock still held is
// released (and the run counts as a failure).
bool end_of_run(std::string &problem) {
    for (const reservation &r : reservations) {
        r.ring.ringbuf_discard(r.record, maps::ringbuf_no_wakeup);
    }
    reservations.clear();
    return release_held_lock(problem);
}

} // namespace

std::string snprintf_format_problem(std::string_view f, uint64_t num_args) {
    auto conv_at = [&](size_t start, size_t end) {
        return "the conversion \"" + std::string(f.substr(start, end - start)) + "\" at offset " +
               std::to_string(start);
    };
    if (num_args > snprintf_max_args) {
        return std::to_string(num_args) + " arguments: bpf_snprintf takes at most " +
               std::to_string(snprintf_max_args);
    }
    uint64_t used = 0;
    for (size_t i = 0; i < f.size(); i++) {
        if (!printable_ascii(f[i])) {
            return "the byte 0x" + std::string(1, "0123456789abcdef"[(f[i] >> 4) & 15]) +
                   std::string(1, "0123456789abcdef"[f[i] & 15]) + " at offset " +
                   std::to_string(i) + " is not printable ASCII";
        }
        if (f[i] != '%') {
            continue;
        }
        if (i + 1 < f.size() && f[i + 1] == '%') {
            i++;
            continue;
        }
        if (used >= num_args) {
            return conv_at(i, std::min(f.size(), i + 2)) +
                   " has no argument: the data array holds " + std::to_string(num_args) +
                   " (data_len / 8)";
        }
        used++;
        const conversion c = read_conversion(f, i);
        if (c.error != nullptr) {
            return conv_at(i, std::min(f.size(), c.last + 1)) + " " + c.error;
        }
        i = c.last;
    }
    return {};
}

bool decode_map_handle(uint64_t handle, vm::run_context *ctx, const char *helper,
                       maps::map_view &out) {
    return decode(handle, ctx, helper, out);
}

void register_all(vm::helper_registry &registry) {
    vm::register_builtin_helpers(registry);
    for (const helper_row &r : rows) {
        registry.replace_helper(r.id, r.name, r.fn);
    }
    for (const helper_entry &r : vmcall_helpers()) {
        registry.replace_helper(r.id, r.name, r.fn);
    }
    // Only these leave anything for it: a record reserved and not handed back, a lock held (a
    // tail call's target runs within its caller's run, so it counts as any of them).
    registry.set_run_end(end_of_run,
                         {12 /* tail_call */, 93 /* spin_lock */, 131 /* ringbuf_reserve */});
}

namespace {

result<std::shared_ptr<const map_handle>> make_handle(const maps::map_view &view, bool inner) {
    handle_pool &p = pool();
    std::lock_guard lock(p.mu);
    uint32_t index = 0;
    if (!p.free.empty()) {
        index = p.free.front();
        p.free.pop_front();
    } else if (p.used < max_handles) {
        index = static_cast<uint32_t>(p.used++);
    } else {
        return make_error(ENOSPC, "this process holds " + std::to_string(max_handles) +
                                      " map handles already, the most one process may (the "
                                      "limit of map handles per process); no map handle is left");
    }
    handle_slot &s = handle_table()[index];
    // The slot is odd (free) here: a reader copying the view meanwhile sees the number move.
    uint32_t seq = s.seq.load(std::memory_order_relaxed);
    s.view = view;
    s.inner = inner;
    s.seq.store(seq + 1, std::memory_order_release);
    p.live++;
    uint64_t value = handle_tag | static_cast<uint64_t>(seq + 1) << handle_index_bits | index;
    return detail::handle_maker::make(value);
}

} // namespace

result<std::shared_ptr<const map_handle>> make_map_handle(const maps::map_view &view) {
    return make_handle(view, false);
}

void release_inner_maps(const std::function<bool(uint32_t id)> &exists) {
    inner_table &t = inner_maps();
    std::vector<std::shared_ptr<const map_handle>> gone; // released outside the lock
    {
        std::lock_guard lock(t.mu);
        for (auto it = t.by_id.begin(); it != t.by_id.end();) {
            if (!exists || !exists(it->first)) {
                gone.push_back(std::move(it->second));
                it = t.by_id.erase(it);
            } else {
                ++it;
            }
        }
        if (!gone.empty()) {
            t.epoch.fetch_add(1, std::memory_order_acq_rel);
        }
    }
}

size_t inner_maps_in_use() {
    inner_table &t = inner_maps();
    std::lock_guard lock(t.mu);
    return t.by_id.size();
}

map_handle::~map_handle() {
    uint32_t gen = 0;
    handle_slot *s = slot_of(value_, gen);
    if (s == nullptr) {
        return;
    }
    handle_pool &p = pool();
    std::lock_guard lock(p.mu);
    s->seq.store(gen + 1, std::memory_order_relaxed);
    // Orders the odd number before the view's next writes (make_map_handle).
    std::atomic_thread_fence(std::memory_order_release);
    p.free.push_back(static_cast<uint32_t>(value_ & handle_index_mask));
    p.live--;
}

size_t map_handles_in_use() {
    handle_pool &p = pool();
    std::lock_guard lock(p.mu);
    return p.live;
}

std::optional<vm::direct_lookup> direct_lookup_of(uint64_t handle) {
    uint32_t gen = 0;
    handle_slot *s = slot_of(handle, gen);
    if (s == nullptr || s->seq.load(std::memory_order_acquire) != gen) {
        return std::nullopt;
    }
    // The caller holds the handle, so the slot keeps this view while compiled code uses it.
    auto plan = s->view.lookup_plan();
    if (!plan) {
        return std::nullopt;
    }
    return vm::direct_lookup{&map_lookup_elem, *plan};
}

void set_map_resolver(map_resolver fn) {
    auto next = fn ? std::make_shared<const map_resolver>(std::move(fn)) : nullptr;
    {
        std::lock_guard lock(resolver_mu);
        resolver = std::move(next);
    }
    // The ids may now be another segment's.
    release_inner_maps(nullptr);
}

} // namespace bpftime::helpers

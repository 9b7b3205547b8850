// SPDX-License-Identifier: MIT
// User-space uprobes and uretprobes: per-site program lists swapped atomically, run from the
// inline hook's handlers. This file is compiled without SSE and MMX (CMakeLists.txt): its plain
// handlers run with no vector register saved.
#include <bpftime/attach/plain_run.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/cpu/vector_state.hpp>
#include <bpftime/hook/inline_hook.hpp>
#include <bpftime/uprobe/uprobe.hpp>
#include <bpftime/vm/vector_state.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <vector>

namespace bpftime {

namespace {

struct probe_program {
    int attach_id;
    std::shared_ptr<const attached_program> prog;
    bool may_override = false; // a uprobe at a function's entry: override_return works
};

constexpr uint32_t helper_override_return = 58;

bool calls_helper(const attached_program &prog, uint32_t id) {
    for (const vm::ebpf_inst &inst : prog.program().program().insns()) {
        if (inst.opcode == vm::op_call && inst.src == vm::call_helper &&
            static_cast<uint32_t>(inst.imm) == id) {
            return true;
        }
    }
    return false;
}

// The one program of a site's uprobes or of its uretprobes when it is alone there, cannot
// override the return and leaves nothing for an end-of-run step (the common case), flattened
// for the per-hit path: its engine and its link's counters held here (no chain of pointers
// through the link and the compiled program), the options of its runs built once (the site's
// address, the link's cookie, the registers read-only). A hit copies the options, points
// user_regs at its frame and calls the engine's direct entry, counted as
// attached_program::run_direct counts a run.
struct single_program {
    vm::engine *engine = nullptr; // null: the list path
    store::link_counters counters;
    vm::run_options opts;
    // Its runs keep the vector state (vm::runs_keep_vector_state): the hook's plain handlers
    // run it without saving that state.
    bool plain = false;

    void prepare(const std::vector<probe_program> &list, uintptr_t address) {
        *this = {}; // a generation starts as a copy of the one before
        const attached_program *one =
            list.size() == 1 && !list.front().may_override ? list.front().prog.get() : nullptr;
        if (one == nullptr || one->program().program().needs_run_end()) {
            return;
        }
        engine = &one->program().engine();
        plain = vm::runs_keep_vector_state(*engine);
        counters = one->counters();
        opts.mem_writable = false; // the registers are the program's to read, not to change
        opts.info.func_ip = address;
        opts.info.attach_cookie = one->cookie();
    }

    // A fault is counted in the link's counters; the probed function goes on regardless.
    [[gnu::always_inline]] void run(const pt_regs *regs) const {
        vm::run_options o = opts;
        o.info.user_regs = regs;
        auto *ctx = const_cast<pt_regs *>(regs);
        (void)run_and_count(counters, [&] { return engine->run_direct(ctx, sizeof(pt_regs), o); });
    }

    // run() from a plain handler, when it can run so: a plain program counted on the thread's
    // own stripe (its engine's direct entry and the add are all this does; a fault is counted
    // with the vector state kept). False (nothing ran) otherwise.
    bool run_plain(const pt_regs *regs) const;
};

// What runs at one address: replaced whole, never changed in place, so the hook's handlers
// read it without a lock.
struct probe_programs {
    std::vector<probe_program> entry; // uprobes, in link order
    std::vector<probe_program> exit;  // uretprobes, in link order
    single_program only_entry;        // entry's one program, when it runs alone
    single_program only_exit;         // exit's one program, when it runs alone
    bool want_return = false;         // uretprobes are attached here

    // Sets what the probe path reads besides the lists, once they are final.
    void seal(uintptr_t address) {
        only_entry.prepare(entry, address);
        only_exit.prepare(exit, address);
        want_return = !exit.empty();
    }
};

// What a site runs before its first programs are published and after its last is detached.
const probe_programs no_programs;

// One hooked address.
struct probe_site {
    uintptr_t address = 0;
    std::atomic<const probe_programs *> programs{&no_programs}; // never null
    // Every set of programs this site has had: a handler may still be reading an old one, so
    // they live as long as the site.
    std::vector<std::unique_ptr<const probe_programs>> generations;
    std::unique_ptr<inline_hook> hook;
};

// Inlined into the handlers: the probe path is one call from the hook to the handler, then one
// per program (attached_program::run_direct).
[[gnu::always_inline]] inline void run_all(const std::vector<probe_program> &progs,
                                           uintptr_t address, const pt_regs *regs) {
    vm::run_options opts;
    opts.mem_writable = false; // the registers are the program's to read, not to change
    opts.info.func_ip = address;
    opts.info.user_regs = regs;
    vm::return_override asked;
    for (const probe_program &p : progs) {
        opts.info.override_return = p.may_override ? &asked : nullptr;
        // A fault is counted in the link's counters; the probed function goes on regardless.
        (void)p.prog->run_direct(const_cast<pt_regs *>(regs), sizeof(pt_regs), opts);
    }
    if (asked.set) {
        // The last program's value wins, as the last bpf_override_return call does in Linux.
        (void)inline_hook::return_early(asked.value);
    }
}

// The entry of a site whose uprobes are not one plain program: several, or one that may
// override the return or needs the end-of-run step. Out of line, so the common path keeps few
// registers.
[[gnu::noinline]] bool on_entry_list(const probe_site *site, const probe_programs *progs,
                                     const pt_regs *regs) {
    run_all(progs->entry, site->address, regs);
    return progs->want_return;
}

bool on_entry(void *user, const pt_regs *regs) {
    // bpftime's own threads and work never get here: they turn the hooks off
    // (inline_hook::set_thread_handlers_off), which the stub's dispatch checks.
    const auto *site = static_cast<const probe_site *>(user);
    const probe_programs *progs = site->programs.load(std::memory_order_acquire);
    if (progs->only_entry.engine != nullptr) [[likely]] {
        progs->only_entry.run(regs);
        return progs->want_return;
    }
    if (progs->entry.empty()) {
        return progs->want_return; // uretprobes only: just the return
    }
    return on_entry_list(site, progs, regs);
}

void on_return(void *user, const pt_regs *regs) {
    auto *site = static_cast<probe_site *>(user);
    const probe_programs *progs = site->programs.load(std::memory_order_acquire);
    if (progs->only_exit.engine != nullptr) [[likely]] {
        progs->only_exit.run(regs);
    } else {
        run_all(progs->exit, site->address, regs);
    }
}

// A fault of a plain run, counted in C++ with the vector state kept.
void count_fault(const store::link_counters *counters, int code) {
    counters->count(code, 0);
}

} // namespace

// The handlers and the fault count with the whole vector state kept, for the plain handlers.
BPFTIME_KEEPING_VECTOR_STATE(bpftime_uprobe_on_entry_keeping, on_entry);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_uprobe_on_return_keeping, on_return);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_uprobe_count_fault_keeping, count_fault);
extern "C" bool bpftime_uprobe_on_entry_keeping(void *user, const pt_regs *regs);
extern "C" void bpftime_uprobe_on_return_keeping(void *user, const pt_regs *regs);
extern "C" void bpftime_uprobe_count_fault_keeping(const store::link_counters *counters, int code);

namespace {

[[gnu::always_inline]] inline bool single_program::run_plain(const pt_regs *regs) const {
    // The options made once, as they are: user_regs is for helpers (the registers a helper
    // reads), and a plain program calls none.
    return plain &&
           run_and_count_plain(
               counters,
               [&] {
                   return engine->run_direct(const_cast<pt_regs *>(regs), sizeof(pt_regs), opts);
               },
               [&](int code) { bpftime_uprobe_count_fault_keeping(&counters, code); });
}

// The hook's plain handlers (inline_hook::set_plain_entry, set_plain_return) of a site whose one
// uprobe or uretprobe program is plain: called with no vector register saved, they run it
// inline, or else the handler above with the vector state kept (the set changed since).
bool on_entry_plain(void *user, const pt_regs *regs) {
    const auto *site = static_cast<const probe_site *>(user);
    const probe_programs *progs = site->programs.load(std::memory_order_acquire);
    if (progs->only_entry.engine != nullptr && progs->only_entry.run_plain(regs)) [[likely]] {
        return progs->want_return;
    }
    return bpftime_uprobe_on_entry_keeping(user, regs);
}

void on_return_plain(void *user, const pt_regs *regs) {
    const auto *site = static_cast<const probe_site *>(user);
    const probe_programs *progs = site->programs.load(std::memory_order_acquire);
    if (progs->only_exit.engine != nullptr && progs->only_exit.run_plain(regs)) [[likely]] {
        return;
    }
    bpftime_uprobe_on_return_keeping(user, regs);
}

} // namespace

class uprobe_host {
public:
    ~uprobe_host() {
        // Unpatch every address; the sites stay until now because handlers may be running.
        for (auto &[address, site] : sites_) {
            site->hook.reset();
        }
        for (auto &[id, where] : where_) {
            if (where.semaphore != nullptr) {
                __atomic_fetch_sub(where.semaphore, 1, __ATOMIC_SEQ_CST);
            }
        }
    }

    // Attach ids come from the host, shared by the uprobe and uretprobe implementations.
    result<int> attach(std::shared_ptr<const attached_program> prog, const std::string &args,
                       bool retprobe) {
        auto loc = resolve_uprobe_target(args);
        if (!loc) {
            return loc.err();
        }
        auto address = runtime_address(*loc);
        if (!address) {
            return make_error(address.err().code, args + ": " + address.err().message);
        }
        const bool overrides = calls_helper(*prog, helper_override_return);
        if (overrides && (retprobe || !loc->function_entry)) {
            return make_error(EINVAL,
                              "program " + std::to_string(prog->program().id()) +
                                  " calls override_return, which works only in a uprobe "
                                  "at a function's entry, not in " +
                                  (retprobe ? "a uretprobe" : "a uprobe inside a function") + " (" +
                                  args + ")");
        }
        uint16_t *semaphore = nullptr;
        if (loc->semaphore != 0) {
            auto sem = runtime_semaphore(*loc);
            if (!sem) {
                return make_error(sem.err().code, args + ": " + sem.err().message);
            }
            semaphore = *sem;
        }
        std::lock_guard lock(mu_);
        int attach_id = next_id_++;
        auto &site = sites_[*address];
        bool fresh = site == nullptr;
        if (fresh) {
            site = std::make_unique<probe_site>();
            site->address = *address;
        }
        probe_programs next(*site->programs.load());
        auto &list = retprobe ? next.exit : next.entry;
        list.push_back({attach_id, std::move(prog), overrides});
        std::stable_sort(list.begin(), list.end(), [](const auto &a, const auto &b) {
            return a.prog->link_id() < b.prog->link_id();
        });
        publish(*site, std::move(next));
        if (site->hook == nullptr) {
            // At a function's entry the calling convention says which registers are live;
            // anywhere else (an offset into a function, a USDT site) every one may be.
            auto hook = inline_hook::install(
                *address, loc->bytes_to_end, on_entry, on_return, site.get(),
                loc->function_entry ? hook_site::function_entry : hook_site::any,
                loc->padding_after);
            if (!hook && hook.err().code != EFAULT) {
                // Where a 5-byte jump does not fit (too short a function, a branch into its
                // first bytes, a neighbouring probe), an int3, as the kernel's uprobes use.
                auto trap = inline_hook::install_trap(*address, loc->bytes_to_end, on_entry,
                                                      on_return, site.get());
                if (!trap) {
                    publish(*site, {});
                    return make_error(hook.err().code,
                                      args + ": " + hook.err().message +
                                          "; and as a trap probe: " + trap.err().message);
                }
                hook = std::move(trap);
            }
            if (!hook) {
                publish(*site, {});
                return make_error(hook.err().code, args + ": " + hook.err().message);
            }
            site->hook = std::move(*hook);
            site->hook->set_return_only(return_only(*site->programs.load()));
            set_plain_handlers(*site, *site->programs.load());
        }
        if (semaphore != nullptr) {
            // The probed program tests the counter before it prepares a probe's arguments; the
            // kernel counts its uprobes in it the same way.
            __atomic_fetch_add(semaphore, 1, __ATOMIC_SEQ_CST);
        }
        where_[attach_id] = {*address, semaphore};
        return attach_id;
    }

    result<void> detach(int attach_id) {
        std::lock_guard lock(mu_);
        auto at = where_.find(attach_id);
        if (at == where_.end()) {
            return make_error(ENOENT, "no uprobe attach " + std::to_string(attach_id));
        }
        probe_site &site = *sites_.at(at->second.address);
        if (uint16_t *semaphore = at->second.semaphore) {
            __atomic_fetch_sub(semaphore, 1, __ATOMIC_SEQ_CST);
        }
        where_.erase(at);
        probe_programs next = *site.programs.load();
        auto drop = [&](std::vector<probe_program> &list) {
            std::erase_if(list, [&](const probe_program &p) { return p.attach_id == attach_id; });
        };
        drop(next.entry);
        drop(next.exit);
        bool empty = next.entry.empty() && next.exit.empty();
        publish(site, std::move(next));
        if (empty) {
            // Restores the original bytes; the site stays for handlers still running.
            site.hook.reset();
        }
        return {};
    }

private:
    // A site with uretprobes only has its hook skip the entry handler (inline_hook::
    // set_return_only): nothing runs on entry but the return hook's bookkeeping.
    static bool return_only(const probe_programs &p) { return p.entry.empty() && !p.exit.empty(); }

    static void publish(probe_site &site, probe_programs next) {
        next.seal(site.address);
        const bool only_returns = return_only(next);
        // The entry handler is back before a set with uprobes is seen, and goes only after a
        // set without them is: no call misses a uprobe published before it.
        if (site.hook != nullptr && !only_returns) {
            site.hook->set_return_only(false);
        }
        auto owned = std::make_unique<const probe_programs>(std::move(next));
        const probe_programs &now = *owned;
        site.programs.store(owned.get(), std::memory_order_release);
        site.generations.push_back(std::move(owned));
        if (site.hook != nullptr && only_returns) {
            site.hook->set_return_only(true);
        }
        set_plain_handlers(site, now);
    }

    // The plain handlers while the site's one uprobe (or uretprobe) program is plain; they
    // check again at each call, so a set published before this runs is served either way.
    static void set_plain_handlers(probe_site &site, const probe_programs &p) {
        if (site.hook != nullptr) {
            site.hook->set_plain_entry(p.only_entry.plain ? &on_entry_plain : nullptr);
            site.hook->set_plain_return(p.only_exit.plain ? &on_return_plain : nullptr);
        }
    }

    std::mutex mu_;
    std::map<uintptr_t, std::unique_ptr<probe_site>> sites_;
    struct placed {
        uintptr_t address;
        uint16_t *semaphore; // counted up while attached; null without one
    };
    std::map<int, placed> where_; // attach id -> where

    int next_id_ = 1;
};

void mark_probes_internal_thread() {
    (void)inline_hook::set_thread_handlers_off(true);
}

probes_internal_scope::probes_internal_scope() : was_(inline_hook::set_thread_handlers_off(true)) {}

probes_internal_scope::~probes_internal_scope() {
    (void)inline_hook::set_thread_handlers_off(was_);
}

std::shared_ptr<uprobe_host> make_uprobe_host() {
    return std::make_shared<uprobe_host>();
}

uprobe_attach_impl::uprobe_attach_impl(std::shared_ptr<uprobe_host> host, bool retprobe)
    : host_(std::move(host)), retprobe_(retprobe) {}

uprobe_attach_impl::~uprobe_attach_impl() = default;

result<int> uprobe_attach_impl::create_attach(std::shared_ptr<const attached_program> prog,
                                              const std::string &args) {
    return host_->attach(std::move(prog), args, retprobe_);
}

result<void> uprobe_attach_impl::detach(int attach_id) {
    return host_->detach(attach_id);
}

attach_impl_set make_uprobe_attach_impls() {
    auto host = make_uprobe_host();
    attach_impl_set impls;
    impls.emplace_back(attach_type_uprobe, std::make_unique<uprobe_attach_impl>(host, false));
    impls.emplace_back(attach_type_uretprobe, std::make_unique<uprobe_attach_impl>(host, true));
    return impls;
}

} // namespace bpftime

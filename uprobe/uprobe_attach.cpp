// SPDX-License-Identifier: MIT
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/hook/inline_hook.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <vector>

namespace bpftime {

namespace {

// Set on bpftime's own threads and around its own work. Initial-exec: the probe path reads it
// with one load relative to the thread pointer, no call (the agent is loaded at start-up, so
// its thread-local block is part of every thread's static one).
__attribute__((tls_model("initial-exec"))) thread_local bool internal_thread = false;

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

// What runs at one address: replaced whole, never changed in place, so the hook's handlers
// read it without a lock.
struct probe_programs {
    std::vector<probe_program> entry; // uprobes, in link order
    std::vector<probe_program> exit;  // uretprobes, in link order
    // The one uprobe of a site that has exactly one, which cannot override the return (the
    // common case): its run needs no loop and no override record. Null otherwise.
    const attached_program *only_entry = nullptr;
    bool want_return = false; // uretprobes are attached here

    // Sets what the probe path reads besides the lists, once they are final.
    void seal() {
        only_entry =
            entry.size() == 1 && !entry.front().may_override ? entry.front().prog.get() : nullptr;
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

// The entry of a site whose uprobes are not one plain program: several, one that may
// override the return, or none (uretprobes only). Out of line, so the common path keeps few
// registers.
[[gnu::noinline]] bool on_entry_list(const probe_site *site, const probe_programs *progs,
                                     const pt_regs *regs) {
    if (!progs->entry.empty()) {
        // A site with uretprobes only just asks for the return.
        run_all(progs->entry, site->address, regs);
    }
    return progs->want_return;
}

bool on_entry(void *user, const pt_regs *regs) {
    if (internal_thread) {
        return false; // bpftime's own call: neither the uprobes nor the uretprobes see it
    }
    const auto *site = static_cast<const probe_site *>(user);
    const probe_programs *progs = site->programs.load(std::memory_order_acquire);
    const attached_program *one = progs->only_entry;
    if (one == nullptr) [[unlikely]] {
        return on_entry_list(site, progs, regs);
    }
    // One link: its run straight away, with options that depend only on the site and the call.
    vm::run_options opts;
    opts.mem_writable = false; // the registers are the program's to read, not to change
    opts.info.func_ip = site->address;
    opts.info.user_regs = regs;
    // A fault is counted in the link's counters; the probed function goes on regardless.
    (void)one->run_direct(const_cast<pt_regs *>(regs), sizeof(pt_regs), opts);
    return progs->want_return;
}

void on_return(void *user, const pt_regs *regs) {
    auto *site = static_cast<probe_site *>(user);
    const probe_programs *progs = site->programs.load(std::memory_order_acquire);
    if (progs->exit.size() == 1) [[likely]] {
        vm::run_options opts;
        opts.mem_writable = false;
        opts.info.func_ip = site->address;
        opts.info.user_regs = regs;
        (void)progs->exit.front().prog->run_direct(const_cast<pt_regs *>(regs), sizeof(pt_regs),
                                                   opts);
    } else {
        run_all(progs->exit, site->address, regs);
    }
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
    static void publish(probe_site &site, probe_programs next) {
        next.seal();
        auto owned = std::make_unique<const probe_programs>(std::move(next));
        site.programs.store(owned.get(), std::memory_order_release);
        site.generations.push_back(std::move(owned));
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
    internal_thread = true;
}

probes_internal_scope::probes_internal_scope() : was_(internal_thread) {
    internal_thread = true;
}

probes_internal_scope::~probes_internal_scope() {
    internal_thread = was_;
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

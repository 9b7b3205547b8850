// SPDX-License-Identifier: MIT
// System call tracepoints in user space: per-number program lists swapped atomically (the
// handlers take no lock), the kernel's contexts built per call (for a number with enter
// programs only, by the rewritten site's short stub, from the registers), interception armed
// while any link is attached. This file is compiled for the general-purpose registers only
// (CMakeLists.txt): the plain short path runs its handler without the vector state saved.
#include <bpftime/attach/plain_run.hpp>
#include <bpftime/attach/probe_target.hpp>
#include <bpftime/attach/syscalls.hpp>
#include <bpftime/hook/syscall_intercept.hpp>
#include <bpftime/syscall/syscall_tracepoint.hpp>
#include <bpftime/vm/vector_state.hpp>

#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace bpftime {
namespace {

namespace si = syscall_intercept;

struct tp_program {
    int attach_id;
    std::shared_ptr<const attached_program> prog;
    vm::run_options opts; // the context read-only, the link's attach cookie: made once
    // Its runs keep the vector state (vm::runs_keep_vector_state) and need no end-of-run step:
    // the plain short path calls it without saving that state, through the engine and a copy
    // of the link's counters held here (no chain of pointers through the link and the
    // compiled program per call).
    bool plain = false;
    vm::engine *engine = nullptr;
    store::link_counters counters;
};

vm::run_options run_options_of(const attached_program &prog) {
    vm::run_options opts;
    opts.mem_writable = false; // the context is the program's to read
    opts.info.attach_cookie = prog.cookie();
    return opts;
}

// What runs for one event: replaced whole, never changed in place.
struct tp_list {
    uint16_t common_type = 0; // the event's tracefs id
    std::vector<tp_program> progs;
};

constexpr size_t n_numbers = si::table_size;

// The calling thread's id, as common_pid; forgotten in a fork child.
__attribute__((tls_model("initial-exec"))) thread_local int32_t t_tid = 0;

int32_t current_tid() {
    if (t_tid == 0) {
        t_tid = static_cast<int32_t>(si::raw_syscall(SYS_gettid));
    }
    return t_tid;
}

// Whether an exit is a child's return from clone, clone3, fork or vfork.
bool child_return(uint64_t nr, uint64_t ret) {
    return ret == 0 && (nr == SYS_clone || nr == SYS_clone3 || nr == SYS_fork || nr == SYS_vfork);
}

// The thread id for an exit: a child's own, never cached there (a fork child holds a copy of
// the parent's cache; a vfork or CLONE_VM child without its own TLS shares the parent's).
int32_t exit_tid(uint64_t nr, uint64_t ret) {
    if (child_return(nr, ret)) {
        t_tid = 0;
        return static_cast<int32_t>(si::raw_syscall(SYS_gettid));
    }
    return current_tid();
}

class syscall_host {
public:
    syscall_host() {
        for (auto &e : enter_)
            e.store(nullptr);
        for (auto &e : exit_)
            e.store(nullptr);
    }

    result<void> start() {
        return si::start({on_enter, on_exit, this, on_enter_record, on_enter_record_plain});
    }

    result<int> attach(std::shared_ptr<const attached_program> prog, const std::string &args,
                       bool raw) {
        bool exit = false, all = false;
        uint32_t nr = 0;
        uint16_t common_type = 0;
        if (raw) {
            auto r = parse_raw_syscall_tracepoint(args);
            if (!r) {
                return r.err();
            }
            exit = *r;
        } else {
            auto tp = parse_syscall_tracepoint(args);
            if (!tp) {
                return tp.err();
            }
            exit = tp->exit;
            all = tp->all;
            nr = tp->nr;
            if (!all && nr >= n_numbers) {
                return make_error(ERANGE, args + ": system call " + std::to_string(nr) +
                                              " is beyond what this host intercepts");
            }
            // The kernel's event id when tracefs can say it (root); 0 otherwise.
            if (auto id = tracepoint_id(args)) {
                common_type = static_cast<uint16_t>(*id);
            }
        }
        if (auto s = start(); !s) {
            return make_error(s.err().code, args + ": " + s.err().message);
        }
        std::lock_guard lock(mu_);
        const int id = next_id_++;
        auto &slot = slot_of({raw, exit, nr, all});
        tp_list next;
        if (const tp_list *now = slot.load()) {
            next = *now;
        }
        next.common_type = common_type;
        vm::run_options opts = run_options_of(*prog);
        const compiled_program &code = prog->program();
        const bool plain =
            vm::runs_keep_vector_state(code.engine()) && !code.program().needs_run_end();
        store::link_counters counters = prog->counters();
        next.progs.push_back({id, std::move(prog), opts, plain, &code.engine(), counters});
        std::stable_sort(next.progs.begin(), next.progs.end(), [](const auto &a, const auto &b) {
            return a.prog->link_id() < b.prog->link_id();
        });
        publish(slot, std::move(next));
        where_[id] = {raw, exit, nr, all};
        update_wanted();
        // Every attach arms again: objects loaded since the last one are rewritten, and
        // whether Syscall User Dispatch is needed is decided afresh.
        auto armed = si::arm();
        if (!armed) {
            // The sites stay as they were; Syscall User Dispatch covers what they miss.
            last_arm_error_ = armed.err().message;
        }
        return id;
    }

    result<void> detach(int attach_id) {
        std::lock_guard lock(mu_);
        auto at = where_.find(attach_id);
        if (at == where_.end()) {
            return make_error(ENOENT, "no syscall tracepoint attach " + std::to_string(attach_id));
        }
        const place p = at->second;
        where_.erase(at);
        auto &slot = slot_of(p);
        tp_list next = *slot.load();
        std::erase_if(next.progs, [&](const tp_program &t) { return t.attach_id == attach_id; });
        publish(slot, std::move(next));
        update_wanted();
        if (where_.empty()) {
            // Nothing left: the original bytes go back and nothing traps.
            return si::disarm();
        }
        return {};
    }

private:
    struct place {
        bool raw;
        bool exit;
        uint32_t nr;
        bool all; // raw_syscalls:sys_enter/sys_exit
    };

    std::atomic<const tp_list *> &slot_of(const place &p) {
        if (p.raw) {
            return p.exit ? raw_exit_ : raw_enter_;
        }
        if (p.all) {
            return p.exit ? all_exit_ : all_enter_;
        }
        return p.exit ? exit_[p.nr] : enter_[p.nr];
    }

    void publish(std::atomic<const tp_list *> &slot, tp_list next) {
        const tp_list *stored = nullptr;
        if (!next.progs.empty()) {
            auto owned = std::make_unique<const tp_list>(std::move(next));
            stored = owned.get();
            generations_.push_back(std::move(owned)); // a handler may still read an old list
        }
        slot.store(stored, std::memory_order_release);
    }

    // A number with enter programs only (its own, raw_syscalls:sys_enter's) takes the short
    // path, its plain form when every one of them is plain; one with an exit program, or any
    // with a raw sys_enter program (which is given the registers), the full one.
    void update_wanted() {
        const bool all_exits = raw_exit_.load() != nullptr || all_exit_.load() != nullptr;
        const bool regs = raw_enter_.load() != nullptr;
        const bool all = all_exits || regs || all_enter_.load() != nullptr;
        auto plain = [](const tp_list *list) {
            return list == nullptr || std::all_of(list->progs.begin(), list->progs.end(),
                                                  [](const tp_program &p) { return p.plain; });
        };
        const bool all_plain = plain(all_enter_.load());
        for (uint32_t nr = 0; nr < n_numbers; ++nr) {
            const bool exit = all_exits || exit_[nr].load() != nullptr;
            si::set_wanted(nr, all || exit || enter_[nr].load() != nullptr, exit, regs,
                           all_plain && plain(enter_[nr].load()));
        }
        si::set_wanted_above(all);
    }

    // Each program's direct entry with the options made at attach, counted as
    // attached_program::run_direct counts a run. A fault is counted in the link's counters; the
    // system call goes on regardless.
    static void run(const tp_list &list, void *ctx, size_t len) {
        for (const tp_program &p : list.progs) {
            const compiled_program &code = p.prog->program();
            (void)run_and_count(p.prog->counters(),
                                [&] { return code.run_direct(ctx, len, p.opts); });
        }
    }

    // The six arguments of a system call, in the order of its tracepoint formats.
    static void syscall_args(const pt_regs &regs, uint64_t (&args)[6]) {
        args[0] = regs.rdi;
        args[1] = regs.rsi;
        args[2] = regs.rdx;
        args[3] = regs.r10;
        args[4] = regs.r8;
        args[5] = regs.r9;
    }

    static void on_enter(void *user, const pt_regs *regs) {
        auto *host = static_cast<syscall_host *>(user);
        const uint64_t nr = regs->orig_rax;
        if (const tp_list *raw = host->raw_enter_.load(std::memory_order_acquire)) {
            uint64_t args[2] = {reinterpret_cast<uintptr_t>(regs), nr};
            run(*raw, args, sizeof args);
        }
        if (const tp_list *list = host->all_enter_.load(std::memory_order_acquire)) {
            raw_syscalls_enter_context ctx{};
            ctx.common_type = list->common_type;
            ctx.common_pid = current_tid();
            ctx.id = static_cast<int64_t>(nr);
            syscall_args(*regs, ctx.args);
            run(*list, &ctx, sizeof ctx);
        }
        if (nr >= n_numbers) {
            return;
        }
        if (const tp_list *list = host->enter_[nr].load(std::memory_order_acquire)) {
            syscall_enter_context ctx{};
            ctx.common_type = list->common_type;
            ctx.common_pid = current_tid();
            ctx.syscall_nr = static_cast<int32_t>(nr);
            syscall_args(*regs, ctx.args);
            run(*list, &ctx, sizeof ctx);
        }
    }

    // The short path: the record is the kernel's context for both raw_syscalls:sys_enter
    // (`long id` at 8) and syscalls:sys_enter_* (`int __syscall_nr` at 8, then padding that is
    // zero below n_numbers); only the common fields differ.
    static void on_enter_record(void *user, si::enter_record *rec) {
        static_assert(sizeof(si::enter_record) == sizeof(syscall_enter_context) &&
                      sizeof(si::enter_record) == sizeof(raw_syscalls_enter_context));
        static_assert(offsetof(syscall_enter_context, syscall_nr) ==
                      offsetof(si::enter_record, nr));
        static_assert(offsetof(syscall_enter_context, args) == offsetof(si::enter_record, args));
        static_assert(offsetof(raw_syscalls_enter_context, id) == offsetof(si::enter_record, nr));
        static_assert(offsetof(raw_syscalls_enter_context, args) ==
                      offsetof(si::enter_record, args));
        auto *host = static_cast<syscall_host *>(user);
        const uint64_t nr = rec->nr;
        auto common = [](const tp_list &list) {
            return uint64_t{list.common_type} | uint64_t{static_cast<uint32_t>(current_tid())}
                                                    << 32;
        };
        if (const tp_list *list = host->all_enter_.load(std::memory_order_acquire)) {
            rec->common = common(*list);
            run(*list, rec, sizeof *rec);
        }
        if (nr >= n_numbers) {
            return;
        }
        if (const tp_list *list = host->enter_[nr].load(std::memory_order_acquire)) {
            rec->common = common(*list);
            run(*list, rec, sizeof *rec);
        }
    }

    // on_enter_record for the numbers whose programs are all plain, called without the vector
    // state saved: a program that is not plain (the list changed since the thread's stub was
    // chosen), a run counted out of line and a fault's count run with the state kept, and so
    // does the whole call while the thread's id is not known yet (a system call finds it).
    static void on_enter_record_plain(void *user, si::enter_record *rec) {
        // The common case first, in a frame of its own (the general case's loops would make
        // it save and restore registers it does not use): a thread that knows its id, the
        // number's own list holding one program, no raw_syscalls:sys_enter list.
        auto *host = static_cast<syscall_host *>(user);
        const uint64_t nr = rec->nr;
        const tp_list *list =
            nr < n_numbers ? host->enter_[nr].load(std::memory_order_acquire) : nullptr;
        if (t_tid != 0 && list != nullptr && list->progs.size() == 1 &&
            host->all_enter_.load(std::memory_order_acquire) == nullptr) [[likely]] {
            rec->common = list->common_type | uint64_t{static_cast<uint32_t>(t_tid)} << 32;
            run_plain_one(list->progs.front(), rec);
            return;
        }
        enter_record_plain_lists(user, rec);
    }

    [[gnu::noinline]] static void enter_record_plain_lists(void *user, si::enter_record *rec) {
        if (t_tid == 0) [[unlikely]] {
            si::call_keeping_vector_state(&on_enter_record, user, rec);
            return;
        }
        auto *host = static_cast<syscall_host *>(user);
        const uint64_t nr = rec->nr;
        const uint64_t pid = uint64_t{static_cast<uint32_t>(t_tid)} << 32;
        if (const tp_list *list = host->all_enter_.load(std::memory_order_acquire)) {
            rec->common = list->common_type | pid;
            run_plain(*list, rec);
        }
        if (nr >= n_numbers) {
            return;
        }
        if (const tp_list *list = host->enter_[nr].load(std::memory_order_acquire)) {
            rec->common = list->common_type | pid;
            run_plain(*list, rec);
        }
    }

    // What run() does for one program, and for a fault of a plain run its count, as handlers
    // call_keeping_vector_state can call.
    struct plain_fault {
        const tp_program *p;
        int code;
    };
    static void run_one(void *p, si::enter_record *rec) {
        const auto &t = *static_cast<const tp_program *>(p);
        const compiled_program &code = t.prog->program();
        (void)run_and_count(t.prog->counters(),
                            [&] { return code.run_direct(rec, sizeof *rec, t.opts); });
    }
    static void count_fault(void *f, si::enter_record *) {
        const auto &fault = *static_cast<const plain_fault *>(f);
        fault.p->prog->counters().count(fault.code, 0);
    }

    // run() without the vector state saved: a plain program counted on the thread's own stripe
    // runs inline (its engine's direct entry and the add are all this does); anything else
    // with the state kept.
    static void run_plain(const tp_list &list, si::enter_record *rec) {
        for (const tp_program &p : list.progs) {
            run_plain_one(p, rec);
        }
    }

    [[gnu::always_inline]] static void run_plain_one(const tp_program &p, si::enter_record *rec) {
        const bool ran =
            p.plain &&
            run_and_count_plain(
                p.counters, [&] { return p.engine->run_direct(rec, sizeof *rec, p.opts); },
                [&](int code) {
                    plain_fault f{&p, code};
                    si::call_keeping_vector_state(&count_fault, &f, rec);
                });
        if (!ran) [[unlikely]] {
            si::call_keeping_vector_state(&run_one, const_cast<tp_program *>(&p), rec);
        }
    }

    static void on_exit(void *user, const pt_regs *regs) {
        auto *host = static_cast<syscall_host *>(user);
        const uint64_t nr = regs->orig_rax;
        if (nr < n_numbers) {
            if (const tp_list *list = host->exit_[nr].load(std::memory_order_acquire)) {
                syscall_exit_context ctx{};
                ctx.common_type = list->common_type;
                ctx.common_pid = exit_tid(nr, regs->rax);
                ctx.syscall_nr = static_cast<int32_t>(nr);
                ctx.ret = static_cast<int64_t>(regs->rax);
                run(*list, &ctx, sizeof ctx);
            }
        }
        if (const tp_list *list = host->all_exit_.load(std::memory_order_acquire)) {
            raw_syscalls_exit_context ctx{};
            ctx.common_type = list->common_type;
            ctx.common_pid = exit_tid(nr, regs->rax);
            ctx.id = static_cast<int64_t>(nr);
            ctx.ret = static_cast<int64_t>(regs->rax);
            run(*list, &ctx, sizeof ctx);
        }
        if (const tp_list *raw = host->raw_exit_.load(std::memory_order_acquire)) {
            uint64_t args[2] = {reinterpret_cast<uintptr_t>(regs), regs->rax};
            run(*raw, args, sizeof args);
        }
    }

    std::array<std::atomic<const tp_list *>, n_numbers> enter_, exit_;
    std::atomic<const tp_list *> raw_enter_{nullptr}, raw_exit_{nullptr};
    std::atomic<const tp_list *> all_enter_{nullptr}, all_exit_{nullptr}; // raw_syscalls:*
    std::mutex mu_;
    std::vector<std::unique_ptr<const tp_list>> generations_;
    std::map<int, place> where_;
    int next_id_ = 1;
    std::string last_arm_error_;
};

// One per process, never destroyed: handlers may run until the process ends.
syscall_host &host() {
    static auto *h = new syscall_host;
    return *h;
}

class syscall_tracepoint_attach_impl final : public base_attach_impl {
public:
    explicit syscall_tracepoint_attach_impl(bool raw) : raw_(raw) {}
    result<int> create_attach(std::shared_ptr<const attached_program> prog,
                              const std::string &args) override {
        return host().attach(std::move(prog), args, raw_);
    }
    result<void> detach(int attach_id) override { return host().detach(attach_id); }

private:
    bool raw_;
};

} // namespace

result<void> start_syscall_tracepoints() {
    return host().start();
}

void enable_syscall_tracepoints_thread() {
    (void)si::enable_thread();
}

void disable_syscall_tracepoints_thread() {
    si::disable_thread();
}

void syscall_tracepoints_forked_child() {
    t_tid = 0;
    (void)si::enable_thread();
}

attach_impl_set make_syscall_attach_impls() {
    attach_impl_set impls;
    impls.emplace_back(attach_type_tracepoint,
                       std::make_unique<syscall_tracepoint_attach_impl>(false));
    impls.emplace_back(attach_type_raw_tracepoint,
                       std::make_unique<syscall_tracepoint_attach_impl>(true));
    return impls;
}

} // namespace bpftime

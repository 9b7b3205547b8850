// SPDX-License-Identifier: MIT
// The attach type table, running a link's program, and the callable test hooks.
#include <bpftime/attach/attach.hpp>

#include <algorithm>
#include <mutex>

namespace bpftime {
namespace {

std::mutex types_mu;

// What a request filter may call: maps (1-3), time (5, 125, 160: the kernel gives every
// program type these clocks), trace_printk (6), randomness (7), the CPU (8), ring buffers
// (130-133), its link's cookie (174), strncmp (182), queue, stack and bloom filter values
// (87-89). Nothing that reads or writes the host's
// memory (probe_read*, probe_write_user) and nothing about the host process (pid, uid, comm):
// the filter sees the request it is given and no more.
const std::vector<uint32_t> request_filter_helpers{1,   2,   3,   5,   6,   7,   8,  125, 130,
                                                   131, 132, 133, 160, 174, 182, 87, 88,  89};

// Never destroyed: the agent's follower thread may still look attach types up while the host
// process exits and runs its static destructors.
std::vector<attach_type_info> &types() {
    static auto *const table = new std::vector<attach_type_info>{
        {attach_type_test, "test", "HOOK: a named hook that the host triggers by hand", true,
         false},
        {attach_type_nginx_url, "nginx-url", "none: every request of the nginx URL filter", true,
         false, false, request_filter_helpers},
        {attach_type_uprobe, "uprobe", "BINARY:SYMBOL[+OFFSET] or BINARY:ADDRESS", true, true},
        {attach_type_uretprobe, "uretprobe", "BINARY:SYMBOL[+OFFSET] or BINARY:ADDRESS", true,
         true},
        {attach_type_tracepoint, "tracepoint",
         "CATEGORY:NAME, a kernel tracepoint; in user space syscalls:sys_enter_NAME or "
         "syscalls:sys_exit_NAME",
         true, true},
        {attach_type_raw_tracepoint, "raw_tracepoint", "sys_enter or sys_exit", true, false},
        {attach_type_kprobe, "kprobe", "FUNCTION[+OFFSET], a kernel function", false, true},
        {attach_type_kretprobe, "kretprobe", "FUNCTION, a kernel function", false, true},
        {attach_type_fentry, "fentry", "FUNCTION, the kernel function the program was loaded for",
         false, true},
        {attach_type_fexit, "fexit", "FUNCTION, the kernel function the program was loaded for",
         false, true},
        {attach_type_tp_btf, "tp_btf", "NAME, the raw tracepoint the program was loaded for", false,
         true},
    };
    return *table;
}

} // namespace

std::vector<attach_type_info> attach_types() {
    std::lock_guard lock(types_mu);
    return types();
}

result<void> register_attach_type(attach_type_info info) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.type == info.type || t.name == info.name) {
            return make_error(EEXIST, "attach type " + std::to_string(info.type) + " (" +
                                          info.name + ") clashes with " + std::to_string(t.type) +
                                          " (" + t.name + ")");
        }
    }
    types().push_back(std::move(info));
    return {};
}

result<attach_type_info> find_attach_type(int32_t type) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.type == type) {
            return t;
        }
    }
    return make_error(EINVAL, "unknown attach type " + std::to_string(type));
}

std::optional<int32_t> parse_attach_type(std::string_view name) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.name == name) {
            return t.type;
        }
    }
    return std::nullopt;
}

std::string attach_type_name(int32_t type) {
    std::lock_guard lock(types_mu);
    for (const attach_type_info &t : types()) {
        if (t.type == type) {
            return t.name;
        }
    }
    return std::to_string(type);
}

bool allows_helper(const attach_type_info &t, uint32_t helper_id) {
    return t.all_helpers ||
           std::find(t.helpers.begin(), t.helpers.end(), helper_id) != t.helpers.end();
}

result<void> register_attach_helper(int32_t type, uint32_t helper_id) {
    std::lock_guard lock(types_mu);
    for (attach_type_info &t : types()) {
        if (t.type == type) {
            if (!allows_helper(t, helper_id)) {
                t.helpers.push_back(helper_id);
            }
            return {};
        }
    }
    return make_error(EINVAL, "unknown attach type " + std::to_string(type));
}

result<void> check_program_helpers(std::span<const vm::ebpf_inst> insns, uint32_t prog_id,
                                   int32_t attach_type) {
    auto t = find_attach_type(attach_type);
    if (!t) {
        return t.err();
    }
    if (t->all_helpers) {
        return {};
    }
    for (const vm::ebpf_inst &inst : insns) {
        if (inst.opcode != vm::op_call || inst.src != vm::call_helper) {
            continue;
        }
        auto id = static_cast<uint32_t>(inst.imm);
        if (allows_helper(*t, id)) {
            continue;
        }
        const vm::helper_info *h = vm::helper_registry::global().find(id);
        return make_error(EPERM, "program " + std::to_string(prog_id) + " calls " +
                                     (h != nullptr ? h->name : "helper") + " (" +
                                     std::to_string(id) + "), which " + t->name +
                                     " programs may not use");
    }
    return {};
}

namespace {

// Linux's enum bpf_prog_type, the values tracepoint programs meet.
std::string prog_type_text(uint32_t type) {
    switch (type) {
    case 1:
        return "socket_filter";
    case 2:
        return "kprobe";
    case 5:
        return "tracepoint";
    case 7:
        return "perf_event";
    case 17:
        return "raw_tracepoint";
    case 26:
        return "tracing";
    default:
        return "type " + std::to_string(type);
    }
}

} // namespace

result<void> check_program_type(uint32_t prog_id, uint32_t prog_type, int32_t attach_type) {
    uint32_t wanted = 0;
    if (attach_type == attach_type_tracepoint) {
        wanted = 5;
    } else if (attach_type == attach_type_raw_tracepoint) {
        wanted = 17;
    }
    if (wanted == 0 || prog_type == 0 || prog_type == wanted) {
        return {};
    }
    return make_error(EINVAL, "program " + std::to_string(prog_id) + " is a " +
                                  prog_type_text(prog_type) + " program; " +
                                  attach_type_name(attach_type) + " targets take " +
                                  prog_type_text(wanted) + " programs");
}

result<std::shared_ptr<const vm::helper_registry>> helpers_for(int32_t attach_type,
                                                               const vm::helper_registry &from) {
    auto t = find_attach_type(attach_type);
    if (!t) {
        return t.err();
    }
    if (t->all_helpers) {
        // Not owned: the caller's registry outlives what it loads.
        return std::shared_ptr<const vm::helper_registry>(std::shared_ptr<void>(), &from);
    }
    auto subset = std::make_shared<vm::helper_registry>();
    for (const vm::helper_info &h : from.list()) {
        if (allows_helper(*t, h.id)) {
            (void)subset->register_helper(h.id, h.name, h.fn);
        }
    }
    subset->set_run_end(from.run_end(), from.run_end_helpers());
    return std::shared_ptr<const vm::helper_registry>(std::move(subset));
}

result<std::shared_ptr<compiled_program>>
compiled_program::create(uint32_t id, uint64_t revision, std::string name, vm::program prog,
                         vm::engine_kind engine, const vm::engine_options &opts,
                         std::vector<std::shared_ptr<const void>> keep) {
    std::shared_ptr<compiled_program> c(
        new compiled_program(id, revision, std::move(name), std::move(prog)));
    c->keep_ = std::move(keep);
    auto eng = vm::make_engine(engine, c->prog_, opts);
    if (!eng) {
        return eng.err();
    }
    c->engine_ = std::move(*eng);
    c->run_end_from_ = c->prog_.needs_run_end() ? &c->prog_.helpers() : nullptr;
    return c;
}

result<uint64_t> compiled_program::run(void *ctx, uint64_t ctx_len,
                                       const vm::run_options &opts) const {
    vm::run_status st = run_direct(ctx, ctx_len, opts);
    if (st.ok()) {
        return st.r0;
    }
    return *st.fault;
}

vm::run_status compiled_program::end_run(vm::run_status st) const {
    vm::run_end_fn end = run_end_from_->run_end();
    std::string problem;
    if (end != nullptr && !end(problem) && st.ok()) {
        return vm::failed_status(make_error(vm::fault_helper, problem));
    }
    return st;
}

namespace {

// attached_program's run, whichever way its result goes back.
[[gnu::always_inline]] inline vm::run_status run_counted(const compiled_program &prog,
                                                         const store::link_counters &counters,
                                                         uint64_t cookie, void *ctx,
                                                         uint64_t ctx_len, vm::run_options &opts) {
    opts.info.attach_cookie = cookie;
    return run_and_count(counters, [&] { return prog.run_direct(ctx, ctx_len, opts); });
}

} // namespace

vm::run_status attached_program::run_direct(void *ctx, uint64_t ctx_len,
                                            vm::run_options &opts) const {
    return run_counted(*prog_, counters_, cookie_, ctx, ctx_len, opts);
}

result<uint64_t> attached_program::run(void *ctx, uint64_t ctx_len, vm::run_options &opts) const {
    const vm::run_status st = run_counted(*prog_, counters_, cookie_, ctx, ctx_len, opts);
    if (st.ok()) {
        return st.r0;
    }
    return *st.fault;
}

result<int> base_attach_impl::replace_attach(int attach_id,
                                             std::shared_ptr<const attached_program> prog,
                                             const std::string &args) {
    auto id = create_attach(std::move(prog), args);
    if (!id) {
        return id;
    }
    (void)detach(attach_id);
    return id;
}

result<int> callable_attach_impl::replace_attach(int attach_id,
                                                 std::shared_ptr<const attached_program> prog,
                                                 const std::string &args) {
    std::unique_lock lock(mu_);
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const entry &e) { return e.attach_id == attach_id; });
    if (it == entries_.end() || it->hook != args || it->prog->link_id() != prog->link_id()) {
        lock.unlock();
        return base_attach_impl::replace_attach(attach_id, std::move(prog), args);
    }
    it->prog = std::move(prog);
    return attach_id;
}

result<int> callable_attach_impl::create_attach(std::shared_ptr<const attached_program> prog,
                                                const std::string &args) {
    if (args.empty()) {
        return make_error(EINVAL, "a test attach needs a hook name");
    }
    int id = allocate_attach_id();
    std::unique_lock lock(mu_);
    auto at =
        std::upper_bound(entries_.begin(), entries_.end(), prog->link_id(),
                         [](uint32_t link, const entry &e) { return link < e.prog->link_id(); });
    entries_.insert(at, entry{id, args, std::move(prog)});
    return id;
}

result<void> callable_attach_impl::detach(int attach_id) {
    std::unique_lock lock(mu_);
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const entry &e) { return e.attach_id == attach_id; });
    if (it == entries_.end()) {
        return make_error(ENOENT, "no test attach with id " + std::to_string(attach_id));
    }
    entries_.erase(it);
    return {};
}

std::vector<result<uint64_t>> callable_attach_impl::trigger(std::string_view hook, void *ctx,
                                                            uint64_t ctx_len) {
    std::vector<std::shared_ptr<const attached_program>> progs;
    {
        std::shared_lock lock(mu_);
        for (const entry &e : entries_) {
            if (e.hook == hook) {
                progs.push_back(e.prog);
            }
        }
    }
    std::vector<result<uint64_t>> out;
    for (const auto &p : progs) {
        out.push_back(p->run(ctx, ctx_len));
    }
    return out;
}

size_t callable_attach_impl::attached(std::string_view hook) const {
    std::shared_lock lock(mu_);
    return static_cast<size_t>(std::count_if(entries_.begin(), entries_.end(),
                                             [&](const entry &e) { return e.hook == hook; }));
}

} // namespace bpftime

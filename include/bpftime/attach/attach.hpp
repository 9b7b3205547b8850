// SPDX-License-Identifier: MIT
/// @file
/// Attach types, compiled programs as hooks see them, and base_attach_impl.
#pragma once

#include <bpftime/result.hpp>
#include <bpftime/store/store.hpp>
#include <bpftime/vm/vm.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bpftime {

/// Attach types known to this build (the integer type of an attach target).
inline constexpr int32_t attach_type_test = 1;      ///< callable hooks for tests
inline constexpr int32_t attach_type_nginx_url = 2; ///< the nginx URL filter
inline constexpr int32_t attach_type_uprobe = 3;
inline constexpr int32_t attach_type_uretprobe = 4;
/// Tracepoints: syscalls:sys_enter_NAME / sys_exit_NAME in user space (the agent), every
/// category in the kernel.
inline constexpr int32_t attach_type_tracepoint = 5;
/// Raw tracepoints: sys_enter and sys_exit in user space.
inline constexpr int32_t attach_type_raw_tracepoint = 9;
/// Kernel functions, attached by the kernel only: kprobes and kretprobes (FUNCTION[+OFFSET]),
/// fentry and fexit programs (FUNCTION, the one the program was loaded for) and BTF-typed
/// raw tracepoints (NAME, the one the program was loaded for).
inline constexpr int32_t attach_type_kprobe = 20;
inline constexpr int32_t attach_type_kretprobe = 21;
inline constexpr int32_t attach_type_fentry = 22;
inline constexpr int32_t attach_type_fexit = 23;
inline constexpr int32_t attach_type_tp_btf = 24;

/// One row of the attach type table.
struct attach_type_info {
    int32_t type;
    std::string name;      ///< as the command line spells it ("test", "nginx-url", ...)
    std::string args_help; ///< what its arguments are
    bool user = true;      ///< hosts in user space can attach it (event_provider_impl takes it)
    bool kernel = false;   ///< the kernel attaches it (kernel_event_provider takes it)
    /// Programs attached at this type may call every helper (tracing: probe_read* included).
    bool all_helpers = true;
    /// Otherwise, the helpers (Linux ids) they may call, as the kernel sets them per program
    /// type.
    std::vector<uint32_t> helpers;
};

/// Every attach type, built-in and registered.
std::vector<attach_type_info> attach_types();
/// Adds an attach type (for plugins). Fails when the number or the name is taken.
result<void> register_attach_type(attach_type_info info);
/// The type with this number; EINVAL "unknown attach type N" when there is none.
result<attach_type_info> find_attach_type(int32_t type);
/// The type with this name.
std::optional<int32_t> parse_attach_type(std::string_view name);
/// The name of a type, or its number as text.
std::string attach_type_name(int32_t type);

/// Whether programs attached at type t may call a helper.
bool allows_helper(const attach_type_info &t, uint32_t helper_id);
/// Adds a helper to an attach type's set (for plugins that bring helpers of their own).
/// EINVAL for an unknown type; nothing changes for a type that allows every helper.
result<void> register_attach_helper(int32_t type, uint32_t helper_id);
/// Refuses (EPERM) a program that calls a helper its attach type's set lacks, naming both:
/// "program 3 calls probe_read_user (112), which nginx-url programs may not use".
result<void> check_program_helpers(std::span<const vm::ebpf_inst> insns, uint32_t prog_id,
                                   int32_t attach_type);
/// Refuses (EINVAL) a program whose type (Linux numbering) does not fit a user-space attach
/// type, as the kernel refuses it: tracepoint targets take tracepoint programs, raw_tracepoint
/// targets raw_tracepoint programs ("program 3 is a kprobe program; tracepoint targets take
/// tracepoint programs"). Programs of no type (0: assembled) and other attach types pass.
result<void> check_program_type(uint32_t prog_id, uint32_t prog_type, int32_t attach_type);
/// The registry programs of an attach type are loaded against: `from` itself when the type
/// allows every helper, else a copy of it holding only the type's set (so that a helper called
/// through a register at run time is refused as well).
result<std::shared_ptr<const vm::helper_registry>>
helpers_for(int32_t attach_type, const vm::helper_registry &from = vm::helper_registry::global());

/// A validated, compiled program of the store, ready to run in this process.
class compiled_program {
public:
    /// Compiles a validated program for an engine. keep holds what the program's code refers
    /// to (its map handles, its helper registry); the compiled program keeps it alive.
    static result<std::shared_ptr<compiled_program>>
    create(uint32_t id, uint64_t revision, std::string name, vm::program prog,
           vm::engine_kind engine, const vm::engine_options &opts = {},
           std::vector<std::shared_ptr<const void>> keep = {});

    uint32_t id() const { return id_; }
    uint64_t revision() const { return revision_; }
    const std::string &name() const { return name_; }
    const vm::program &program() const { return prog_; }
    /// The engine the program was compiled for (a tail call runs it directly, within the run
    /// of the program that called it).
    vm::engine &engine() const { return *engine_; }
    /// Runs the program on a context, then the end-of-run step of the program's helper
    /// registry; safe from several threads at once.
    result<uint64_t> run(void *ctx, uint64_t ctx_len, const vm::run_options &opts = {}) const;
    /// The same run without a result on the way back (vm::run_status): the engine's direct
    /// entry, the fastest call.
    vm::run_status run_direct(void *ctx, uint64_t ctx_len,
                              const vm::run_options &opts = vm::default_run_options) const {
        vm::run_status st = engine_->run_direct(ctx, ctx_len, opts);
        if (run_end_from_ != nullptr) [[unlikely]] {
            return end_run(st);
        }
        return st;
    }

private:
    compiled_program(uint32_t id, uint64_t revision, std::string name, vm::program prog)
        : id_(id), revision_(revision), name_(std::move(name)), prog_(std::move(prog)) {}

    // Declared first, so destroyed last: the code names these until it is gone.
    std::vector<std::shared_ptr<const void>> keep_;
    uint32_t id_;
    uint64_t revision_;
    std::string name_;
    vm::program prog_;
    std::unique_ptr<vm::engine> engine_; // refers to prog_
    // The registry whose end-of-run step follows each run, for a program that calls helpers
    // (only they leave anything for it: ring buffer records, spin locks); null otherwise.
    const vm::helper_registry *run_end_from_ = nullptr;

    vm::run_status end_run(vm::run_status st) const;
};

/// How every run of a link is counted (attached_program::run_direct, and hosts that keep a
/// link's run options themselves): run() runs the program. What hosts meet on every run, their
/// own record of the link with runs not timed, is decided by one compare and counted inline on
/// the thread's own stripe; timed runs read the clock's raw ticks around the run and convert the
/// difference once; everything else (faults, a record that is not this process's, the link's own
/// stripes) takes count().
template <class Run>
[[gnu::always_inline]] inline vm::run_status run_and_count(const store::link_counters &counters,
                                                           Run run) {
    const bool owned = counters.owned_untimed();
    const bool timed = !owned && counters && counters.timing();
    const uint64_t start = timed ? store::run_clock_ticks() : 0;
    const vm::run_status st = run();
    if (owned && st.ok()) [[likely]] {
        counters.count_owned_run();
    } else if (counters) {
        const uint64_t took =
            timed ? std::max<uint64_t>(store::run_ticks_to_ns(store::run_clock_ticks() - start), 1)
                  : 0;
        counters.count(st.ok() ? 0 : st.fault->code, took);
    }
    return st;
}

/// What an attach implementation hooks in: a link's compiled program and its run counters.
class attached_program {
public:
    attached_program(uint32_t link_id, std::shared_ptr<const compiled_program> prog,
                     store::link_counters counters, uint64_t cookie = 0)
        : link_id_(link_id), prog_(std::move(prog)), counters_(counters), cookie_(cookie) {}

    uint32_t link_id() const { return link_id_; }
    /// The link's attach cookie, for get_attach_cookie.
    uint64_t cookie() const { return cookie_; }
    const compiled_program &program() const { return *prog_; }
    /// The link's counters in the segment (empty when the host has none).
    const store::link_counters &counters() const { return counters_; }
    /// Runs the program with the link's attach cookie in opts.info (set there, so a host that
    /// runs several links reuses one opts) and counts the run (and a fault) in the link's
    /// counters.
    result<uint64_t> run(void *ctx, uint64_t ctx_len, vm::run_options &opts) const;
    result<uint64_t> run(void *ctx, uint64_t ctx_len) const {
        vm::run_options opts;
        return run(ctx, ctx_len, opts);
    }
    /// The same run and counting as run() without a result on the way back (vm::run_status):
    /// the fastest call.
    vm::run_status run_direct(void *ctx, uint64_t ctx_len, vm::run_options &opts) const;

private:
    uint32_t link_id_;
    std::shared_ptr<const compiled_program> prog_;
    store::link_counters counters_;
    uint64_t cookie_ = 0;
};

/// An attach implementation: turns a compiled program plus target arguments into a live
/// hook. Detaching happens by id, and every attach is detached when the object dies.
class base_attach_impl {
public:
    virtual ~base_attach_impl() = default;
    /// Hooks prog at the target args describe; returns the attach id.
    virtual result<int> create_attach(std::shared_ptr<const attached_program> prog,
                                      const std::string &args) = 0;
    /// Removes one attach.
    virtual result<void> detach(int attach_id) = 0;
    /// Runs prog instead of what attach attach_id runs (a link whose program changed) and
    /// returns the attach id that now runs it. By default the new attach is made before the old
    /// one goes, so no event finds the hook empty (one may run both); implementations that can
    /// swap in place do so.
    virtual result<int> replace_attach(int attach_id, std::shared_ptr<const attached_program> prog,
                                       const std::string &args);

protected:
    /// A new attach id, unique in this implementation.
    int allocate_attach_id() { return next_attach_id_.fetch_add(1); }

private:
    std::atomic<int> next_attach_id_{1};
};

/// Attach implementations by attach type, as a component offers them to a host process.
using attach_impl_set = std::vector<std::pair<int32_t, std::unique_ptr<base_attach_impl>>>;

/// The test attach type: named hooks that tests (or any host) trigger by hand. Arguments are
/// the hook name. Programs on one hook run in link order.
class callable_attach_impl final : public base_attach_impl {
public:
    result<int> create_attach(std::shared_ptr<const attached_program> prog,
                              const std::string &args) override;
    result<void> detach(int attach_id) override;
    /// Swaps the program in place: a trigger runs either the old program or the new one.
    result<int> replace_attach(int attach_id, std::shared_ptr<const attached_program> prog,
                               const std::string &args) override;

    /// Runs every program attached at hook on ctx; returns their results in link order.
    std::vector<result<uint64_t>> trigger(std::string_view hook, void *ctx, uint64_t ctx_len);
    /// Programs attached at hook now.
    size_t attached(std::string_view hook) const;

private:
    struct entry {
        int attach_id;
        std::string hook;
        std::shared_ptr<const attached_program> prog;
    };
    mutable std::shared_mutex mu_;
    std::vector<entry> entries_; // sorted by link id
};

} // namespace bpftime

// SPDX-License-Identifier: MIT
/// @file
/// Programs, validation and execution engines.
#pragma once

#include <bpftime/result.hpp>
#include <bpftime/vm/helper_registry.hpp>
#include <bpftime/vm/isa.hpp>
#include <bpftime/vm/map_lookup_plan.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bpftime::vm {

/// A range of host memory a program may access.
struct memory_region {
    uint64_t start = 0;
    uint64_t size = 0;
    bool writable = false;

    bool contains(uint64_t addr, uint64_t len) const {
        return addr >= start && len <= size && addr - start <= size - len;
    }
};

/// How compiled code may do a helper's map lookup (map_lookup_elem) on one map without calling
/// the helper, as Linux's JIT does, when r1 holds the map's handle (from an lddw) and the key
/// lies in the frame: the map's plan (an indexed table looked up inline, or a direct call of
/// find, what the helper does once it has decoded the handle and checked the key). Either way
/// r0 is the helper's.
struct direct_lookup {
    helper_fn replaces = nullptr; ///< the only helper whose calls may be replaced
    map_lookup_plan plan;         ///< how the map is looked up instead
};

/// What an lddw pseudo instruction (src 1..6) resolves to.
struct resolved_lddw {
    uint64_t value = 0; ///< the 64-bit value the destination register receives
    /// Memory the program may access through that value (a map's value area, global data).
    std::optional<memory_region> region;
    /// For a reference to a map: how compiled code may look it up without the helper call.
    std::optional<direct_lookup> lookup;
};

/// Resolves an lddw pseudo instruction: kind is its src field (pseudo_map_fd, ...), imm
/// its first immediate and next_imm the second. Loaders of ELF objects provide one.
using lddw_resolver =
    std::function<result<resolved_lddw>(uint8_t kind, int32_t imm, int32_t next_imm)>;

/// Options of program loading.
struct load_options {
    /// Largest accepted program, in instruction slots (the kernel's limit by default).
    size_t max_instructions = 1'000'000;
    /// Helpers that calls may name; the global registry when null.
    const helper_registry *helpers = nullptr;
    /// Resolves lddw pseudo forms; without it they are refused.
    lddw_resolver resolver;
};

/// Error codes of a run that stopped before its exit instruction (error::code):
/// EFAULT a load or store outside every memory region; ETIMEDOUT more instructions than the
/// run's budget; EOVERFLOW more than max_call_depth nested frames; ENOSYS callx named an
/// unknown helper; ECANCELED a helper stopped the program (run_context::fail).
inline constexpr int fault_out_of_bounds = EFAULT;
inline constexpr int fault_budget = ETIMEDOUT;
inline constexpr int fault_call_depth = EOVERFLOW;
inline constexpr int fault_bad_helper = ENOSYS;
inline constexpr int fault_helper = ECANCELED;

class engine;
class program;
class run_context;

/// How an engine runs a subprogram for run_context::call: the subprogram at pc with r1..r5 =
/// args, its frame pointer fp (its frame is [fp - stack_frame_size, fp), zeroed) at call depth
/// depth. Returns its r0, or the fault that stopped it (naming its instruction).
using subprogram_runner = result<uint64_t> (*)(void *engine_run, size_t pc,
                                               const uint64_t (&args)[5], uint64_t fp,
                                               size_t depth);

/// What a host tells the helpers about one run.
/// What bpf_override_return asked for in one run: the probed function is to return value to its
/// caller without running.
struct return_override {
    bool set = false;
    uint64_t value = 0;
};

struct run_info {
    /// The attach cookie of the link the program runs through (get_attach_cookie), 0 when it
    /// runs through none.
    uint64_t attach_cookie = 0;
    /// The address of the probed function (get_func_ip) when a probe runs the program, else 0.
    uint64_t func_ip = 0;
    /// The probed thread's registers in the layout of Linux's x86-64 struct pt_regs, when a
    /// probe in this process runs the program (bpf_get_stackid / bpf_get_stack walk the user
    /// stack from them); null elsewhere (test hooks, nginx).
    const void *user_regs = nullptr;
    /// Where override_return records its request, given by a host that can make the probed
    /// function return early (a uprobe at a function's entry); null elsewhere, and
    /// override_return then fails the run.
    return_override *override_return = nullptr;
};

/// The memory and state of one run that helpers may use.
class run_context {
public:
    /// Lets the program access [ptr, ptr + len) until the run ends (for example a map value
    /// returned by map_lookup_elem). Fails the run when too many regions were added.
    void add_region(const void *ptr, uint64_t len, bool writable);
    /// True when [addr, addr + len) lies inside one region the program may access.
    bool check_access(uint64_t addr, uint64_t len, bool write) const;
    /// Tells the engine that the program is about to use [ptr, ptr + len), memory it may
    /// already access (for example a map value inside the map's value area): an engine that
    /// keeps a cache of regions may put the region holding it there. No effect when no
    /// region of the run holds it.
    void hint_region(const void *ptr, uint64_t len);
    /// Stops the program after the current helper returns; the run fails with the message.
    void fail(std::string message);
    /// What the host said about this run (run_options::info).
    const run_info &info() const { return *info_; }

    /// Calls the program's subprogram at a code address (what an lddw of a code address loaded
    /// into a register: the callback of bpf_loop, for_each_map_elem) with r1..r5, in a new frame
    /// below the current one that counts in the call depth, on the run's instruction budget.
    /// Returns the subprogram's r0. Nothing when it could not run or faulted: the run has then
    /// failed with that fault (a fault inside the callback names the callback's instruction) and
    /// the helper must return at once.
    std::optional<uint64_t> call(uint64_t code_address, uint64_t r1 = 0, uint64_t r2 = 0,
                                 uint64_t r3 = 0, uint64_t r4 = 0, uint64_t r5 = 0);
    /// Ends the program when the current helper returns, and runs target in its place with the
    /// same input memory (r1, r2) and regions, a fresh stack and what is left of the budget: its
    /// r0 is the run's (bpf_tail_call). keep is held until then (what owns target). False, with
    /// nothing done, when the program is not in its entry function (a subprogram or a callback).
    bool tail_call(engine &target, std::shared_ptr<const void> keep);
    /// The program running (its helpers, its callbacks), or null outside an engine's run.
    const program *running_program() const { return program_; }
    /// Tail calls made so far in this run, across the programs it went through.
    uint32_t tail_calls() const { return tail_calls_; }
    /// The tail call a helper asked for (tail_call), if any: the engines run it.
    engine *tail_target() const { return tail_target_; }
    /// Whether the failure of the run is a fault that already names its instruction (one
    /// inside a callback) rather than a message the engine puts after the helper call's.
    bool failure_is_positioned() const { return failure_positioned_; }
    /// The error code of the failure: fault_helper for fail(), the callback's fault's code.
    int failure_code() const { return failure_code_; }

    // Used by the engines.
    // Inline: engines build one per run, and an out-of-line call passed the two regions
    // through memory that had just been written field by field (a store-forwarding stall).
    run_context(memory_region stack_region, memory_region input,
                std::span<const memory_region> program_regions,
                std::span<const memory_region> extra_regions, const run_info &info)
        : stack(stack_region), input_(input), program_regions_(program_regions),
          extra_regions_(extra_regions), info_(&info) {}
    /// Starts another run in a context an engine keeps from run to run (the constructor's
    /// arguments): the regions helpers handed out in the last run are gone. A run that failed
    /// must have been ended with clear_failure().
    void restart(memory_region stack_region, memory_region input,
                 std::span<const memory_region> program_regions,
                 std::span<const memory_region> extra_regions, const run_info &info) {
        stack = stack_region;
        input_ = input;
        program_regions_ = program_regions;
        extra_regions_ = extra_regions;
        info_ = &info;
        dynamic_.clear();
    }
    /// Forgets a failure and a tail call (and releases what the tail call kept), as a newly
    /// built context is.
    void clear_failure();
    bool failed() const { return failed_; }
    /// Where failed() is kept, for compiled code that tests it after each helper call.
    const bool *failed_flag() const { return &failed_; }
    /// From now on add_region() writes each region it is given, and hint_region() the region
    /// that holds the hinted memory, to *sink (the JIT puts the region a helper handed out in
    /// its fastest check).
    void set_region_sink(memory_region *sink) { sink_ = sink; }
    const std::string &failure() const { return failure_; }
    /// Lets call() run subprograms through the engine's runner, with tail_calls calls made
    /// before this run (run_options::tail_calls).
    void set_subprogram_runner(subprogram_runner runner, void *engine_run, const program &prog) {
        runner_ = runner;
        runner_state_ = engine_run;
        program_ = &prog;
    }
    void set_tail_calls(uint32_t n) { tail_calls_ = n; }
    /// The slow path of an access check: the region other than the stack that allows the
    /// access, or null.
    const memory_region *find_region(uint64_t addr, uint64_t len, bool write) const;

    /// Regions add_region() accepts in one run before it fails the run.
    static constexpr size_t max_dynamic_regions = 4096;

    /// The stack the program may access now: the current frame and its callers'.
    memory_region stack;

private:
    memory_region input_;
    std::span<const memory_region> program_regions_;
    std::span<const memory_region> extra_regions_;
    std::vector<memory_region> dynamic_;
    memory_region *sink_ = nullptr;
    const run_info *info_;
    std::string failure_;
    bool failed_ = false;
    int failure_code_ = fault_helper;
    bool failure_positioned_ = false;
    subprogram_runner runner_ = nullptr;
    const program *program_ = nullptr;
    void *runner_state_ = nullptr;
    engine *tail_target_ = nullptr;
    std::shared_ptr<const void> tail_keep_;
    uint32_t tail_calls_ = 0;
};

/// Options of one run.
struct run_options {
    /// Instructions a run may execute before it is stopped (a runaway loop guard).
    uint64_t instruction_budget = 100'000'000;
    /// The input memory (r1, r2) may be written.
    bool mem_writable = true;
    /// More memory the program may access (global data, maps, a context's pointees).
    std::span<const memory_region> regions;
    /// What helpers may ask about the run (run_context::info()).
    run_info info;
    /// When set, receives the number of instructions the run executed.
    uint64_t *executed = nullptr;
    /// Tail calls already made in this run: an engine that runs a tail call's target sets it
    /// (the limit, max_tail_calls, counts across the chain).
    uint32_t tail_calls = 0;
    /// The budget a budget fault names when it is not instruction_budget: a tail call's target
    /// runs on what is left of the first program's budget, and names the whole run's.
    uint64_t named_budget = 0;
};

/// Tail calls one run may make (Linux's MAX_TAIL_CALL_CNT).
inline constexpr uint32_t max_tail_calls = 33;

/// A validated program with its helper calls bound. Engines compile and run it.
class program {
public:
    /// Validates the instructions, resolves lddw pseudo forms and binds helper calls.
    /// Every refusal names the instruction index and the reason.
    static result<program> load(std::vector<ebpf_inst> insns, const load_options &opts = {});

    std::span<const ebpf_inst> insns() const { return insns_; }
    /// Memory the resolved lddw pseudo forms refer to.
    std::span<const memory_region> regions() const { return regions_; }
    /// The helper function a call instruction at pc binds to (null for other instructions).
    helper_fn helper_at(size_t pc) const { return pc < bound_.size() ? bound_[pc] : nullptr; }
    /// The registry callx resolves its register against at run time.
    const helper_registry &helpers() const { return *helpers_; }
    /// The bytes at the top of the entry frame the program can reach, directly or through
    /// helpers (16 to stack_frame_size): engines zero at most these before a run and let the
    /// program access only these.
    size_t entry_frame_reach() const { return entry_frame_reach_; }
    /// The 8-byte words at the top of the entry frame that a run zeroes before the program
    /// starts: bit w stands for the bytes [-(w + 1) * 8, -w * 8) below r10. Those of the
    /// reachable part that the program (or a helper it passes a frame pointer) may read before
    /// writing them; every word of the reach when that cannot be followed. The interpreter
    /// zeroes the whole reach; the JIT only these.
    uint64_t entry_frame_zeroed_words() const { return entry_frame_zeroed_; }
    /// Whether any instruction calls a helper (by id or callx).
    bool calls_helpers() const { return calls_helpers_; }
    /// Whether a run may leave something for the registry's end-of-run step
    /// (helper_registry::run_end): the program calls a helper the registry names for it
    /// (helper_registry::leaves_for_run_end) or calls through a register. Other runs skip it.
    bool needs_run_end() const { return needs_run_end_; }
    /// How the map an lddw resolved to this value refers to may be looked up directly, or
    /// null.
    /// The first instructions of the subprograms an lddw takes the code address of (callbacks),
    /// in ascending order.
    std::span<const size_t> callbacks() const { return callbacks_; }
    /// Whether pc is the first instruction of a callback.
    bool is_callback(size_t pc) const {
        return std::binary_search(callbacks_.begin(), callbacks_.end(), pc);
    }
    const direct_lookup *direct_lookup_of(uint64_t value) const {
        for (const auto &[v, a] : lookups_) {
            if (v == value) {
                return &a;
            }
        }
        return nullptr;
    }

private:
    std::vector<ebpf_inst> insns_;
    std::vector<helper_fn> bound_;
    std::vector<memory_region> regions_;
    const helper_registry *helpers_ = nullptr;
    size_t entry_frame_reach_ = stack_frame_size;
    uint64_t entry_frame_zeroed_ = ~uint64_t{0};
    bool calls_helpers_ = false;
    bool needs_run_end_ = false;
    std::vector<std::pair<uint64_t, direct_lookup>> lookups_;
    std::vector<size_t> callbacks_;
};

/// Checks a program against the opcode table and the control-flow rules without loading
/// it: unknown opcodes, bad registers, writes to r10, jumps out of range or into an lddw,
/// falling off the end, unknown helpers, bad local-call targets, too many instructions.
result<void> validate(std::span<const ebpf_inst> insns, const load_options &opts = {});

/// The execution engines.
enum class engine_kind { interpreter, jit };

/// "interp" or "jit".
const char *engine_name(engine_kind kind);
/// Parses "interp"/"interpreter" or "jit".
std::optional<engine_kind> parse_engine_name(std::string_view name);
/// The engines this build has, fastest first.
std::vector<engine_kind> available_engines();

/// Options of a run that sets none (engine::run_direct's default).
inline constexpr run_options default_run_options{};

/// What engine::run_direct returns, in two registers: r0 when fault is null, else the error
/// that stopped the run. The error belongs to the calling thread and stays valid until that
/// thread's next failed direct run.
struct run_status {
    uint64_t r0 = 0;
    const error *fault = nullptr;
    bool ok() const { return fault == nullptr; }
};

/// The status of a run that failed with e: e is kept for the calling thread (see run_status).
run_status failed_status(error e);

/// An engine bound to one program: compiled once, run many times, from one thread at a time.
class engine {
public:
    virtual ~engine() = default;
    /// Runs the program with r1 = mem and r2 = mem_len. Returns r0, or the error that stopped
    /// the program (a fault names the instruction and the reason).
    virtual result<uint64_t> run(void *mem, uint64_t mem_len, const run_options &opts = {}) = 0;
    virtual engine_kind kind() const = 0;
    /// The same run as run(), through the engine's direct entry and without a result on the
    /// way back: the fastest way to run a program (the JIT's entry is a plain function that
    /// sets up only what the program's code cannot find lazily).
    run_status run_direct(void *mem, uint64_t mem_len,
                          const run_options &opts = default_run_options) {
        return direct_.load(std::memory_order_acquire)(*this, mem, mem_len, opts);
    }

protected:
    /// A direct entry: what run_direct calls.
    using direct_entry = run_status (*)(engine &, void *mem, uint64_t mem_len,
                                        const run_options &opts);
    /// Engines with a faster way in than run() set their own (the JIT changes it when its
    /// optimised code is ready).
    std::atomic<direct_entry> direct_{&run_through_result};

private:
    static run_status run_through_result(engine &e, void *mem, uint64_t mem_len,
                                         const run_options &opts);
};

/// How the JIT trades compile time for code speed.
enum class jit_tier {
    /// Quickly compiled code runs at once; optimised code replaces it when a background
    /// thread has compiled it (milliseconds later). The default.
    tiered,
    /// Only the quickly compiled code.
    baseline,
    /// Optimised code, compiled before make_engine() returns.
    optimised,
};

/// "tiered", "baseline" or "optimised".
const char *jit_tier_name(jit_tier tier);
/// Parses a tier name.
std::optional<jit_tier> parse_jit_tier(std::string_view name);

/// How an engine compiles a program.
struct engine_options {
    /// Trusted programs only: the JIT leaves out the memory checks and the instruction budget,
    /// so a bad access crashes the host instead of failing the run. The interpreter always
    /// checks.
    bool unchecked = false;
    /// The JIT's tiers (the interpreter has none).
    jit_tier tier = jit_tier::tiered;
};

/// Sets a function that every thread the engines start (the JIT's background compiles) calls
/// first, on that thread: a host marks its own threads with it (the agent keeps its uprobes
/// from counting the compiler's calls). Null for none; threads started later see the change.
void set_engine_thread_start(void (*fn)());

/// Makes an engine of this kind for a loaded program (which must outlive it).
result<std::unique_ptr<engine>> make_engine(engine_kind kind, const program &prog,
                                            const engine_options &opts = {});

/// The runs in progress on the other threads of this process at one moment: each thread's run
/// sequence (odd while one of its runs is in progress), taken by take_run_census().
struct run_census {
    struct running {
        uint64_t thread; ///< the thread's registration number
        uint32_t seq;    ///< its run sequence when the census was taken
    };
    std::vector<running> runs;
};

/// Which engine runs are in progress on the other threads of this process now. It starts with
/// a barrier on every thread of the process (membarrier, where the kernel has it), so a run
/// that starts after it sees everything the caller wrote before calling it. A host calls it
/// once what it destroyed is unreachable for new runs (handles released); what the runs in the
/// census may still hold is safe to reuse once runs_ended() says they are over.
run_census take_run_census();

/// Drops from census the runs that have ended since it was taken (their thread left that run,
/// whether or not it started another, or exited); true when none is left.
bool runs_ended(run_census &census);

} // namespace bpftime::vm

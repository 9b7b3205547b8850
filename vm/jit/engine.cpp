// SPDX-License-Identifier: MIT
// The JIT engine: a program's translation compiled by a tier and loaded into the process's
// LLJIT, the optimised tier compiled in the background, and runs of the loaded code.
// Code pages are written before they are made executable and never both (ORC's memory
// managers map them read-write, then read-execute).
#include "host.hpp"
#include "jit.hpp"
#include "runtime.hpp"
#include "translator.hpp"

#include "../run_census.hpp"
#include "../run_setup.hpp"

#include <bpftime/cpu/vector_state.hpp>

#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/Object/ObjectFile.h>
#include <llvm/Support/raw_ostream.h>

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <thread>

namespace bpftime::vm {
namespace jit {
namespace {

#if !defined(__x86_64__)
#error "the JIT's direct entry reads its thread-local through %fs (x86-64)"
#endif

// A run on the calling thread's state (translator::emit_direct_entry).
using direct_fn = run_status (*)(engine &, void *mem, uint64_t mem_len, const run_options &);
using callback_fn = uint64_t (*)(jit_state *, uint64_t pc, uint64_t, uint64_t, uint64_t, uint64_t,
                                 uint64_t, uint64_t fp, uint64_t depth);

// Loaded code of one tier; freed with the engine.
struct loaded_code {
    llvm::orc::ResourceTrackerSP tracker;
    direct_fn direct = nullptr;
    callback_fn callback = nullptr; // runs a callback (run_context::call)
    size_t blocks = 0;              // basic blocks of the program's translation
    bool vector_free = false;       // translator::vector_free, compiled so
};

// The code a jit_engine runs now (defined with the engine).
const loaded_code &current_code(const void *engine);
// The program a jit_engine runs (defined with the engine).
const program &program_of(const void *engine);
// Where the emitted entries find a thread's state (defined with the thread states).
const direct_layout &the_direct_layout();

// The error of a run whose state recorded a fault.
error fault_error(const program &prog, const jit_state &s, const run_context &rc,
                  const run_options &opts) {
    auto at = [&](int code, const std::string &why) {
        return fault_at(prog.insns(), s.fault_pc, code, why);
    };
    switch (s.fault) {
    case fault_access:
        return at(fault_out_of_bounds,
                  outside_message(s.fault_write != 0, s.fault_len, s.fault_addr));
    case fault_misaligned:
        return at(fault_out_of_bounds, misaligned_message(s.fault_addr, s.fault_len));
    case fault_exhausted:
        return at(fault_budget, budget_message(named_budget(opts)));
    case fault_depth:
        return at(fault_call_depth, call_depth_message());
    case fault_unknown_helper:
        return at(fault_bad_helper, unknown_helper_message(s.fault_addr));
    default:
        return helper_failure(prog.insns(), s.fault_pc, rc);
    }
}

// Runs a callback for run_context::call: run is the run's jit_state, whose code and options
// say the rest.
result<uint64_t> run_callback(void *run, size_t pc, const uint64_t (&args)[5], uint64_t fp,
                              size_t depth) {
    auto &s = *static_cast<jit_state *>(run);
    const loaded_code &code = current_code(s.engine);
    uint64_t r0 = code.callback(&s, pc, args[0], args[1], args[2], args[3], args[4], fp, depth);
    if (s.fault != no_fault) {
        error e = fault_error(*s.prog, s, *s.rc, *s.opts);
        s.fault = no_fault; // the helper that called it returns, and the run stops there
        return e;
    }
    return r0;
}

} // namespace

void rt_prepare(jit_state *s) {
    // The run entry stores only what changes from run to run of one engine; what follows from
    // the engine is found here, before anything reads it (a constant stored on every run would
    // also keep its neighbours, the runtime's addresses, in a register through the run).
    s->prog = &program_of(s->engine);
    const program &prog = *s->prog;
    const run_options &opts = *s->opts;
    const size_t reach = prog.entry_frame_reach();
    const memory_region input{reinterpret_cast<uint64_t>(s->mem),
                              s->mem == nullptr ? 0 : s->mem_len, opts.mem_writable};
    run_context &rc = *s->rc;
    rc.restart({s->stack_top - reach, reach, true}, input, prog.regions(), opts.regions, opts.info);
    rc.set_subprogram_runner(&run_callback, s, prog);
    rc.set_tail_calls(opts.tail_calls);
    // The far caches start where the run entry started the near ones (which it passed to the
    // code in registers): on the input, or on the entry frame when the input is too small.
    const bool on_input = input.size >= max_access;
    const bool write_input = on_input && input.writable;
    const uint64_t frame_lo = s->stack_top - reach;
    s->read_lo = on_input ? input.start : frame_lo;
    s->read_span = on_input ? input.size : reach;
    s->write_lo = write_input ? input.start : frame_lo;
    s->write_span = write_input ? input.size : reach;
    s->rc_ready = 1;
}

namespace {

// The largest program (in basic blocks of its translation, access checks included) the
// optimised tier compiles; larger ones keep the baseline code. Some passes and the register
// allocator grow faster than the program, so beyond this size a background compile would take
// seconds (BENCHMARKS.md has the figures).
constexpr size_t max_optimised_blocks = 2500;

// Whether an object file refers to a symbol it does not define: a library call LLVM made of
// something (memset for a large frame), which may use vector registers.
bool refers_outside(const llvm::MemoryBuffer &object) {
    auto file = llvm::object::ObjectFile::createObjectFile(object.getMemBufferRef());
    if (!file) {
        llvm::consumeError(file.takeError());
        return true;
    }
    for (const llvm::object::SymbolRef &sym : (*file)->symbols()) {
        auto flags = sym.getFlags();
        if (!flags) {
            llvm::consumeError(flags.takeError());
            return true;
        }
        if ((*flags & llvm::object::SymbolRef::SF_Undefined) != 0) {
            return true;
        }
    }
    return false;
}

// Whether a program may compile to code that keeps the vector state (translator::vector_free
// decides): no backward jump, no callx and no helper call but map_lookup_elem, which the JIT
// may inline. Spares every other program a translation that would only be dropped.
bool may_keep_vector_state(const program &prog) {
    constexpr int32_t map_lookup_elem = 1;
    const std::span<const ebpf_inst> insns = prog.insns();
    for (size_t pc = 0; pc < insns.size(); pc++) {
        const ebpf_inst &inst = insns[pc];
        if (inst.opcode == op_callx ||
            (inst.opcode == op_call && inst.src == call_helper && inst.imm != map_lookup_elem)) {
            return false;
        }
        const opcode_info *info = find_opcode(inst.opcode);
        const bool jump =
            info != nullptr && (info->kind == op_kind::ja || info->kind == op_kind::jcond);
        if (jump && jump_target(inst, pc) <= static_cast<int64_t>(pc)) {
            return false;
        }
    }
    return true;
}

// vector_free: code that keeps the vector state when the program allows
// (translator::vector_free); otherwise, or when the object calls a library function, the
// program is compiled again without.
result<loaded_code> compile(jit_host &host, const program &prog, bool checked, bool optimised,
                            bool vector_free) {
    static std::atomic<uint64_t> next_id{0};
    const std::string name = "bpftime_program_" + std::to_string(next_id++);
    llvm::orc::LLJIT &jit = host.jit();
    auto ctx = std::make_unique<llvm::LLVMContext>();
    auto mod = std::make_unique<llvm::Module>(name, *ctx);
    mod->setDataLayout(jit.getDataLayout());
    mod->setTargetTriple(jit.getTargetTriple().str());
    translator t(prog, checked, vector_free, *ctx, *mod);
    if (auto err = t.translate(name, the_direct_layout()); !err.empty()) {
        return make_error(EINVAL, err);
    }
    if (vector_free && !t.vector_free()) {
        return compile(host, prog, checked, optimised, false);
    }
    if (vector_free) {
        host.general_registers_only(*mod);
    }
    size_t blocks = 0;
    for (const llvm::Function &f : *mod) {
        blocks += f.size();
    }
    optimised = optimised && blocks <= max_optimised_blocks;
    auto object = host.emit(*mod, optimised);
    if (std::getenv("BPFTIME_JIT_DUMP") != nullptr) {
        // The IR as compiled (after the tier's passes), for looking at what the checks became.
        mod->print(llvm::errs(), nullptr);
    }
    if (!object) {
        return make_error(EINVAL, "the jit cannot compile the program: " +
                                      llvm_message(object.takeError()));
    }
    if (vector_free && refers_outside(**object)) {
        return compile(host, prog, checked, optimised, false);
    }
    loaded_code code;
    code.tracker = jit.getMainJITDylib().createResourceTracker();
    if (auto e = jit.addObjectFile(code.tracker, std::move(*object))) {
        return make_error(EINVAL, "the jit cannot load the program: " + llvm_message(std::move(e)));
    }
    for (const std::string &suffix :
         {std::string(direct_entry_suffix), std::string(callback_entry_suffix)}) {
        auto sym = jit.lookup(name + suffix);
        if (!sym) {
            std::string why = llvm_message(sym.takeError());
            llvm::consumeError(code.tracker->remove());
            return make_error(EINVAL, "the jit cannot link the program: " + why);
        }
        if (suffix == direct_entry_suffix) {
            code.direct = sym->toPtr<direct_fn>();
        } else {
            code.callback = sym->toPtr<callback_fn>();
        }
    }
    code.blocks = blocks;
    code.vector_free = vector_free;
    return code;
}

// Background compiles still running in this process. A process that exits while one runs
// would destroy LLVM's static objects under it, so exit waits for them (boundedly) first, and
// no new one starts. A forked child has none of its parent's threads.
class background_compiles {
public:
    static background_compiles &get() {
        static auto *bg = [] {
            auto *b = new background_compiles(); // never destroyed: threads may outlive exit
            std::atexit([] { get().wait_at_exit(); });
            pthread_atfork(nullptr, nullptr, [] { get().running_ = 0; });
            return b;
        }();
        return *bg;
    }

    bool begin() {
        std::lock_guard lock(mu_);
        if (exiting_) {
            return false;
        }
        running_++;
        return true;
    }

    void end() {
        std::lock_guard lock(mu_);
        running_--;
        cv_.notify_all();
    }

private:
    void wait_at_exit() {
        std::unique_lock lock(mu_);
        exiting_ = true;
        cv_.wait_for(lock, std::chrono::seconds(5), [this] { return running_ == 0; });
    }

    std::mutex mu_;
    std::condition_variable cv_;
    int running_ = 0;
    bool exiting_ = false;
};

// What the runs of one thread keep from run to run: the stack, the run context and the JIT
// state, with what is the same for every run (where the stack is, where the state finds the
// context) set once. A run sets only what it changes, a few words rather than the whole of
// both, and zeroes the part of the frame the program may read before writing it.
struct thread_run {
    thread_run() : rc({}, {}, {}, {}, no_info) {
        s.stack_top = top();
        s.rc = &rc;
        s.helper_failed = rc.failed_flag();
        s.rc_stack = &rc.stack;
        s.handed = {};
        s.fault = no_fault;
        s.rc_ready = 0;
        rc.set_region_sink(&s.handed);
    }
    thread_run(const thread_run &) = delete;
    thread_run &operator=(const thread_run &) = delete;

    uint64_t top() const { return reinterpret_cast<uint64_t>(&stack[0]) + stack_size; }

    alignas(16) uint8_t stack[stack_size];
    run_context rc;
    jit_state s;
    // Odd while a run of this thread is using it; read by other threads (take_run_census).
    detail::run_seq seq{0};
    static constexpr run_info no_info{};
};

// This thread's state (null until its first run): one initial-exec load per run. The thread's
// exit frees it and leaves always_busy() here.
constinit __attribute__((tls_model("initial-exec"))) thread_local thread_run *this_thread_run =
    nullptr;

// A state that is always busy, so that runs meeting it take a state of their own: the one a
// thread's runs find while its own is being made (a run the allocation itself meets, through a
// probe or a system call tracepoint) and after its exit freed it. Made at its first use (a
// library's constructor may run programs before this file's static initialisers ran), without
// the heap, and never destroyed: threads may exit after the process's destructors.
thread_run *always_busy() {
    alignas(thread_run) static unsigned char storage[sizeof(thread_run)];
    static thread_run *const busy = [] {
        auto *b = new (storage) thread_run();
        b->seq.store(1, std::memory_order_relaxed);
        return b;
    }();
    return busy;
}

thread_run *first_thread_run() {
    struct owner {
        std::unique_ptr<thread_run> run = std::make_unique<thread_run>();
        owner() { detail::register_run_seq(&run->seq); }
        ~owner() {
            detail::unregister_run_seq(&run->seq);
            this_thread_run = always_busy();
        }
    };
    this_thread_run = always_busy();
    thread_local owner mine;
    this_thread_run = mine.run.get();
    return this_thread_run;
}

class jit_engine final : public engine {
public:
    jit_engine(const program &prog, bool checked, jit_host &host, loaded_code first)
        : prog_(prog), checked_(checked), host_(host), first_(std::move(first)), code_(&first_) {
        direct_.store(first_.direct, std::memory_order_release);
    }

    ~jit_engine() override {
        if (worker_.joinable()) {
            worker_.join();
        }
        for (loaded_code *c : {&first_, &second_}) {
            if (c->tracker) {
                llvm::consumeError(c->tracker->remove());
            }
        }
    }

    // Compiles the optimised tier on a thread of its own and switches to it when it is ready;
    // runs keep using the baseline code until then.
    void optimise_in_background() {
        background_compiles &bg = background_compiles::get(); // registers the exit wait now
        worker_ = std::thread([this, &bg] {
            engine_thread_started();
            if (!bg.begin()) {
                return; // the process is exiting: the baseline code stays
            }
            auto code = compile(host_, prog_, checked_, true, first_.vector_free);
            if (code && code->vector_free == first_.vector_free) {
                second_ = std::move(*code);
                code_.store(&second_, std::memory_order_release);
                direct_.store(second_.direct, std::memory_order_release);
            }
            bg.end();
        });
    }

    engine_kind kind() const override { return engine_kind::jit; }

    // Fixed at the first tier: the optimised one replaces it only when it is the same.
    bool vector_free() const { return first_.vector_free; }

    result<uint64_t> run(void *mem, uint64_t mem_len, const run_options &opts) override {
        const run_status st = elsewhere(*this, mem, mem_len, opts);
        if (st.ok()) {
            return st.r0;
        }
        return *st.fault;
    }

    const loaded_code &code() const { return *code_.load(std::memory_order_acquire); }
    const program &program_run() const { return prog_; }

    // The emitted direct entry's way out when the thread's own state cannot be used, and
    // run()'s way in: the thread's state, made on its first run, or one of its own on the
    // stack for a run inside a run on this thread (a probe a helper met, a tail call's target,
    // a signal handler) or on a thread past its exit. Either way the direct entry runs the
    // program, on the state the thread's pointer then names (the code has one copy of the run,
    // there).
    static run_status elsewhere(engine &e, void *mem, uint64_t mem_len, const run_options &opts) {
        auto &self = static_cast<jit_engine &>(e);
        thread_run *t = this_thread_run;
        if (t == nullptr) [[unlikely]] {
            t = first_thread_run();
        }
        if (t->seq.load(std::memory_order_relaxed) & 1) [[unlikely]] {
            return self.run_nested(mem, mem_len, opts);
        }
        return self.code().direct(e, mem, mem_len, opts);
    }

    // The emitted run's way out after a fault: the run's error (or the result of the tail
    // call a helper asked for), with the state left as the next run expects to find it, and
    // free.
    static run_status faulted(engine &e, void *mem, uint64_t mem_len, const run_options &opts,
                              uint64_t state) {
        auto &self = static_cast<jit_engine &>(e);
        auto &t = *reinterpret_cast<thread_run *>(state);
        auto r = self.finish_fault(t, mem, mem_len, opts);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        t.seq.store(t.seq.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        return r ? run_status{*r, nullptr} : failed_status(std::move(r).err());
    }

private:
    // The thread's pointer names a state of the run's own while it runs: runs nested in it
    // (a signal handler's) find that one busy and take one of their own in turn, and the
    // pointer is the outer run's again when it ends.
    [[gnu::noinline]] run_status run_nested(void *mem, uint64_t mem_len, const run_options &opts) {
        thread_run own;
        thread_run *const outer = this_thread_run;
        std::atomic_signal_fence(std::memory_order_seq_cst); // own is whole before it is named
        this_thread_run = &own;
        const run_status r = code().direct(*this, mem, mem_len, opts);
        this_thread_run = outer;
        std::atomic_signal_fence(std::memory_order_seq_cst); // and named no more before it goes
        return r;
    }

    [[gnu::noinline, gnu::cold]] result<uint64_t>
    finish_fault(thread_run &t, void *mem, uint64_t mem_len, const run_options &opts) {
        jit_state &s = t.s;
        if (s.rc_ready == 0) {
            rt_prepare(&s);
        }
        run_context &rc = t.rc;
        const uint64_t budget =
            std::min<uint64_t>(opts.instruction_budget, static_cast<uint64_t>(INT64_MAX));
        const uint64_t used = checked_ ? budget - static_cast<uint64_t>(s.budget) : 0;
        result<uint64_t> r = rc.tail_target() != nullptr
                                 ? run_tail_call(rc, mem, mem_len, opts, used)
                                 : result<uint64_t>(fault_error(prog_, s, rc, opts));
        rc.clear_failure();
        s.fault = no_fault;
        s.handed = {};
        return r;
    }

    const program &prog_;
    bool checked_;
    jit_host &host_;
    loaded_code first_;
    loaded_code second_; // the optimised tier, when it came later
    std::atomic<const loaded_code *> code_;
    std::thread worker_;
};

BPFTIME_KEEPING_VECTOR_STATE(bpftime_jit_elsewhere_keeping, jit_engine::elsewhere);
BPFTIME_KEEPING_VECTOR_STATE(bpftime_jit_faulted_keeping, jit_engine::faulted);
extern "C" void bpftime_jit_elsewhere_keeping();
extern "C" void bpftime_jit_faulted_keeping();

const loaded_code &current_code(const void *engine) {
    return static_cast<const jit_engine *>(engine)->code();
}

const program &program_of(const void *engine) {
    return static_cast<const jit_engine *>(engine)->program_run();
}

const direct_layout &the_direct_layout() {
    static const direct_layout layout = [] {
        direct_layout l;
        uint64_t tp = 0;
        asm("mov %%fs:0, %0" : "=r"(tp)); // the thread pointer (the TCB's self pointer)
        l.tls_offset = static_cast<int64_t>(reinterpret_cast<uint64_t>(&this_thread_run) - tp);
        const thread_run &any = *always_busy();
        const auto base = reinterpret_cast<uint64_t>(&any);
        l.seq = reinterpret_cast<uint64_t>(&any.seq) - base;
        l.stack_top = any.top() - base;
        l.state = reinterpret_cast<uint64_t>(&any.s) - base;
        l.elsewhere = address_of(&jit_engine::elsewhere);
        l.faulted = address_of(&jit_engine::faulted);
        l.elsewhere_keeping = address_of(&bpftime_jit_elsewhere_keeping);
        l.faulted_keeping = address_of(&bpftime_jit_faulted_keeping);
        return l;
    }();
    return layout;
}

} // namespace
} // namespace jit

result<std::unique_ptr<engine>> make_jit(const program &prog, const engine_options &opts) {
    auto host = jit::jit_host::get();
    if (!host) {
        return std::move(host).err();
    }
    const bool checked = !opts.unchecked;
    const bool optimised_first = opts.tier == jit_tier::optimised;
    auto code =
        jit::compile(**host, prog, checked, optimised_first, jit::may_keep_vector_state(prog));
    if (!code) {
        return std::move(code).err();
    }
    const bool worth_optimising = code->blocks <= jit::max_optimised_blocks;
    auto eng = std::make_unique<jit::jit_engine>(prog, checked, **host, std::move(*code));
    if (opts.tier == jit_tier::tiered && worth_optimising) {
        eng->optimise_in_background();
    }
    return std::unique_ptr<engine>(std::move(eng));
}

bool jit_runs_keep_vector_state(const engine &e) {
    return static_cast<const jit::jit_engine &>(e).vector_free();
}

} // namespace bpftime::vm

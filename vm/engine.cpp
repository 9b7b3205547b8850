// SPDX-License-Identifier: MIT
#include "interpreter.hpp"

#include <bpftime/vm/vector_state.hpp>
#ifdef BPFTIME_HAVE_JIT
#include "jit/jit.hpp"
#endif

#include <atomic>

namespace bpftime::vm {

namespace {

std::atomic<void (*)()> thread_start{nullptr};

} // namespace

run_status failed_status(error e) {
    // General-dynamic TLS (the library's default): nothing in the static TLS block of a host
    // that dlopens the library.
    static thread_local error last;
    last = std::move(e);
    return {0, &last};
}

run_status engine::run_through_result(engine &e, void *mem, uint64_t mem_len,
                                      const run_options &opts) {
    auto r = e.run(mem, mem_len, opts);
    if (r) {
        return {*r, nullptr};
    }
    return failed_status(std::move(r).err());
}

void set_engine_thread_start(void (*fn)()) {
    thread_start.store(fn, std::memory_order_release);
}

#ifdef BPFTIME_HAVE_JIT
void engine_thread_started() {
    if (void (*fn)() = thread_start.load(std::memory_order_acquire)) {
        fn();
    }
}
#endif

const char *engine_name(engine_kind kind) {
    switch (kind) {
    case engine_kind::interpreter:
        return "interp";
    case engine_kind::jit:
        return "jit";
    }
    return "unknown";
}

std::optional<engine_kind> parse_engine_name(std::string_view name) {
    if (name == "interp" || name == "interpreter") {
        return engine_kind::interpreter;
    }
    if (name == "jit") {
        return engine_kind::jit;
    }
    return std::nullopt;
}

const char *jit_tier_name(jit_tier tier) {
    switch (tier) {
    case jit_tier::tiered:
        return "tiered";
    case jit_tier::baseline:
        return "baseline";
    case jit_tier::optimised:
        return "optimised";
    }
    return "unknown";
}

std::optional<jit_tier> parse_jit_tier(std::string_view name) {
    for (jit_tier t : {jit_tier::tiered, jit_tier::baseline, jit_tier::optimised}) {
        if (name == jit_tier_name(t)) {
            return t;
        }
    }
    return std::nullopt;
}

std::vector<engine_kind> available_engines() {
#ifdef BPFTIME_HAVE_JIT
    return {engine_kind::jit, engine_kind::interpreter};
#else
    return {engine_kind::interpreter};
#endif
}

result<std::unique_ptr<engine>> make_engine(engine_kind kind, const program &prog,
                                            const engine_options &opts) {
    switch (kind) {
    case engine_kind::interpreter:
        return std::unique_ptr<engine>(std::make_unique<interpreter>(prog));
    case engine_kind::jit:
#ifdef BPFTIME_HAVE_JIT
        return make_jit(prog, opts);
#else
        (void)opts;
        break;
#endif
    }
    return make_error(ENOTSUP, "this build has no jit engine (it was configured with "
                               "BPFTIME_ENABLE_JIT=OFF); the interpreter is available");
}

bool runs_keep_vector_state(const engine &e) {
#ifdef BPFTIME_HAVE_JIT
    return e.kind() == engine_kind::jit && jit_runs_keep_vector_state(e);
#else
    (void)e;
    return false;
#endif
}

} // namespace bpftime::vm

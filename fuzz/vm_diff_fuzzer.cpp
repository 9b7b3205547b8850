// SPDX-License-Identifier: MIT
// Differential fuzzer: the interpreter against the JIT.
//
// generator/program_generator.hpp turns the input bytes into a valid program and its inputs.
// Each program runs on the interpreter and on every JIT tier with the same input memory,
// helper buffer and caller region; results, fault codes, instruction counts and memory must
// agree (see compare()). Any difference prints both results and the program and traps, so
// libFuzzer keeps the input (and the replay driver names the file).
//
// Without a JIT in the build (make_engine fails with ENOTSUP) the interpreter runs against
// itself, its second run at another stack depth, which still catches generator mistakes.
//
// BPFTIME_DIFF_VERBOSE=1 prints each program and both results (to replay a crash file, with
// this fuzzer or its replay driver).
#include "generator/program_generator.hpp"

#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/vm.hpp>

#include <algorithm>
#include <alloca.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

using namespace bpftime;
using namespace bpftime::fuzz;
using namespace bpftime::vm;

namespace {

// ---------------------------------------------------------------------------------------------
// Running and comparing.

struct outcome {
    bool ok = false;
    uint64_t r0 = 0;
    int code = 0;
    std::string message;
    uint64_t executed = 0;
    std::vector<uint8_t> mem, buf, extra;
};

// counted: with a pointer for the count of instructions run (run_options::executed), which the
// optimised JIT runs elsewhere than runs without one (see bound_budget).
__attribute__((noinline)) outcome run_once(engine &e, const run_inputs &in, uint8_t *mem,
                                           bool counted) {
    if (!in.mem.empty()) {
        std::memcpy(mem, in.mem.data(), in.mem.size());
    }
    std::memcpy(helper_buf, in.buf.data(), helper_buf_size);
    std::memcpy(extra_buf, in.extra.data(), extra_size);
    const memory_region regions[] = {
        {reinterpret_cast<uint64_t>(extra_buf), extra_size, in.extra_writable}};
    outcome o;
    run_options ro;
    ro.instruction_budget = in.budget;
    ro.mem_writable = in.mem_writable;
    ro.regions = regions;
    ro.executed = counted ? &o.executed : nullptr;
    auto r = e.run(in.mem.empty() ? nullptr : mem, in.mem.size(), ro);
    if (r) {
        o.ok = true;
        o.r0 = *r;
    } else {
        o.code = r.err().code;
        o.message = r.err().message;
    }
    o.mem.assign(mem, mem + in.mem.size());
    o.buf.assign(helper_buf, helper_buf + helper_buf_size);
    o.extra.assign(extra_buf, extra_buf + extra_size);
    return o;
}

// Runs with the engine's stack `pad` bytes deeper, so stack addresses differ between runs.
__attribute__((noinline)) outcome run_padded(engine &e, const run_inputs &in, uint8_t *mem,
                                             size_t pad, bool counted = true) {
    auto *p = static_cast<volatile uint8_t *>(alloca(pad));
    p[0] = 0;
    return run_once(e, in, mem, counted);
}

const char *code_name(int code) {
    switch (code) {
    case EFAULT:
        return "EFAULT";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case EOVERFLOW:
        return "EOVERFLOW";
    case ENOSYS:
        return "ENOSYS";
    case ECANCELED:
        return "ECANCELED";
    default:
        return "other";
    }
}

std::string describe(const outcome &o) {
    char line[128];
    if (o.ok) {
        std::snprintf(line, sizeof line, "r0 = 0x%llx, %llu instructions",
                      static_cast<unsigned long long>(o.r0),
                      static_cast<unsigned long long>(o.executed));
        return line;
    }
    std::snprintf(line, sizeof line, "error %d (%s): ", o.code, code_name(o.code));
    return line + o.message;
}

std::string first_difference(const char *what, const std::vector<uint8_t> &a,
                             const std::vector<uint8_t> &b) {
    for (size_t i = 0; i < a.size(); i++) {
        if (a[i] != b[i]) {
            char line[128];
            std::snprintf(line, sizeof line, "%s differs first at byte %zu: 0x%02x vs 0x%02x", what,
                          i, a[i], b[i]);
            return line;
        }
    }
    return "";
}

// Empty when the outcomes agree, else what differs. The JIT tests its budget only at backward
// jumps, calls and exits, so an interpreter stop for budget allows any JIT error (it may reach
// a fault first) and memory is then not compared.
std::string compare(const outcome &in, const outcome &jit) {
    if (!in.ok && in.code == fault_budget) {
        return jit.ok ? "the interpreter ran out of budget, the jit completed" : "";
    }
    if (!jit.ok && jit.code == fault_budget) {
        return "the jit ran out of budget, the interpreter did not";
    }
    if (in.ok != jit.ok) {
        return "one engine completed, the other failed";
    }
    if (in.ok && in.r0 != jit.r0) {
        return "r0 differs";
    }
    if (in.ok && in.executed != jit.executed) {
        return "the instruction counts differ";
    }
    if (!in.ok && in.code != jit.code) {
        return "the error codes differ";
    }
    for (auto d : {first_difference("input memory", in.mem, jit.mem),
                   first_difference("helper buffer", in.buf, jit.buf),
                   first_difference("caller region", in.extra, jit.extra)}) {
        if (!d.empty()) {
            return d;
        }
    }
    return "";
}

// The unchecked JIT counts no instructions, nor does a run without a pointer for the count;
// the rest must agree.
std::string compare_uncounted(const outcome &in, outcome jit) {
    jit.executed = in.executed;
    return compare(in, jit);
}

// ---------------------------------------------------------------------------------------------
// Statistics, printed at exit: how many programs loaded and how runs ended.

struct statistics {
    uint64_t programs = 0;
    uint64_t loaded = 0;
    uint64_t slots = 0;
    uint64_t runs = 0;
    uint64_t unchecked_runs = 0;
    uint64_t ok = 0;
    std::map<int, uint64_t> errors;
    std::string first_refusal;
    bool jit_absent = false;
};

statistics stats;
bool verbose = false;
bool no_jit = false; // BPFTIME_DIFF_NO_JIT: the interpreter against itself, to test the fuzzer
// BPFTIME_DIFF_ASM: a program (assembler text) that replaces the generated one, to cut a
// difference down by hand; memory, buffers and flags still come from the input.
std::vector<ebpf_inst> replay;
// BPFTIME_DIFF_AVOID: known differences the generator leaves out (see generator_options).
generator_options options;

void print_stats() {
    if (stats.programs == 0) {
        return;
    }
    std::string ends = "ok " + std::to_string(stats.ok);
    for (auto [code, n] : stats.errors) {
        ends += std::string(", ") + code_name(code) + " " + std::to_string(n);
    }
    std::fprintf(stderr,
                 "vm_diff_fuzzer: %llu programs, %llu loaded (%.1f%%), %.1f slots on average; "
                 "%llu interpreter runs: %s; %llu unchecked jit runs%s\n",
                 static_cast<unsigned long long>(stats.programs),
                 static_cast<unsigned long long>(stats.loaded),
                 100.0 * static_cast<double>(stats.loaded) / static_cast<double>(stats.programs),
                 static_cast<double>(stats.slots) / static_cast<double>(stats.programs),
                 static_cast<unsigned long long>(stats.runs), ends.c_str(),
                 static_cast<unsigned long long>(stats.unchecked_runs),
                 stats.jit_absent ? "; jit absent, interpreter against itself" : "");
    if (!stats.first_refusal.empty()) {
        std::fprintf(stderr, "vm_diff_fuzzer: first refusal: %s\n", stats.first_refusal.c_str());
    }
}

[[noreturn]] void report(const std::vector<ebpf_inst> &insns, const run_inputs &in,
                         const std::string &what, const outcome *interp, const outcome *jit) {
    std::fprintf(stderr, "\n==== vm_diff_fuzzer: %s\n", what.c_str());
    if (interp != nullptr) {
        std::fprintf(stderr, "interpreter: %s\n", describe(*interp).c_str());
    }
    if (jit != nullptr) {
        std::fprintf(stderr, "other:       %s\n", describe(*jit).c_str());
    }
    std::string hexmem;
    for (uint8_t b : in.mem) {
        char h[4];
        std::snprintf(h, sizeof h, "%02x", b);
        hexmem += h;
    }
    std::fprintf(stderr, "budget %llu\n", static_cast<unsigned long long>(in.budget));
    std::fprintf(stderr, "input memory (%zu bytes%s): %s\ncaller region %s at %p\n", in.mem.size(),
                 in.mem_writable ? "" : ", read-only", hexmem.c_str(),
                 in.extra_writable ? "writable" : "read-only", static_cast<void *>(extra_buf));
    std::fprintf(stderr, "helper buffer at %p\nprogram:\n%s\n", static_cast<void *>(helper_buf),
                 disassemble(insns, true).c_str());
    __builtin_trap();
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *v = std::getenv("BPFTIME_DIFF_VERBOSE");
    verbose = v != nullptr && *v != '\0' && *v != '0';
    const char *n = std::getenv("BPFTIME_DIFF_NO_JIT");
    no_jit = n != nullptr && *n != '\0' && *n != '0';
    if (const char *a = std::getenv("BPFTIME_DIFF_AVOID")) {
        options.helper_stack_in_call = std::strstr(a, "helper-stack-in-call") == nullptr;
    }
    if (const char *path = std::getenv("BPFTIME_DIFF_ASM")) {
        std::string text;
        if (FILE *f = std::fopen(path, "r")) {
            char chunk[4096];
            for (size_t got; (got = std::fread(chunk, 1, sizeof chunk, f)) > 0;) {
                text.append(chunk, got);
            }
            std::fclose(f);
        }
        auto insns = assemble(text);
        if (!insns || insns->empty()) {
            std::fprintf(stderr, "BPFTIME_DIFF_ASM=%s: %s\n", path,
                         insns ? "no program" : insns.err().message.c_str());
            std::exit(1);
        }
        replay = std::move(*insns);
    }
    std::atexit(print_stats);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    generated_case c = generate_case(data, size, options);
    const uint8_t flags = c.flags;
    const uint32_t seed = c.seed;
    const run_inputs &in = c.inputs;
    std::vector<ebpf_inst> &insns = c.program;
    if (!replay.empty()) {
        insns = replay;
    }

    stats.programs++;
    stats.slots += insns.size();
    load_options lo;
    lo.helpers = &fuzz_helpers();
    auto prog = program::load(insns, lo);
    if (!prog) {
        if (stats.first_refusal.empty()) {
            stats.first_refusal = prog.err().message;
        }
        if (verbose) {
            std::fprintf(stderr, "refused: %s\n%s\n", prog.err().message.c_str(),
                         disassemble(insns, true).c_str());
        }
        return 0;
    }
    stats.loaded++;

    auto interp = make_engine(engine_kind::interpreter, *prog);
    if (!interp) {
        report(insns, in, "the interpreter refused: " + interp.err().message, nullptr, nullptr);
    }
    // The JIT's tiers explicitly: the default (tiered) runs baseline code until the optimised
    // code is ready, which short runs would seldom reach. One program in eight also runs tiered.
    struct other {
        std::string name;
        std::unique_ptr<engine> eng;
    };
    std::vector<other> others;
    if (!no_jit) {
        std::vector<std::pair<const char *, jit_tier>> tiers = {
            {"jit (baseline)", jit_tier::baseline}, {"jit (optimised)", jit_tier::optimised}};
        if (seed % 8 == 1) {
            tiers.push_back({"jit (tiered)", jit_tier::tiered});
        }
        for (auto [name, tier] : tiers) {
            engine_options eo;
            eo.tier = tier;
            auto e = make_engine(engine_kind::jit, *prog, eo);
            if (!e) {
                if (e.err().code != ENOTSUP) {
                    report(insns, in,
                           std::string(name) + " refused a valid program: " + e.err().message,
                           nullptr, nullptr);
                }
                if (!stats.jit_absent) {
                    std::fprintf(stderr,
                                 "vm_diff_fuzzer: the jit engine is absent (%s); comparing the "
                                 "interpreter with itself\n",
                                 e.err().message.c_str());
                    stats.jit_absent = true;
                }
                others.clear();
                break;
            }
            others.push_back({name, std::move(*e)});
        }
    }
    if (others.empty()) {
        auto again = make_engine(engine_kind::interpreter, *prog);
        others.push_back({"interpreter again", std::move(*again)});
    }

    if (verbose) {
        std::fprintf(stderr, "program:\n%s\n", disassemble(insns, true).c_str());
    }
    // Compiling costs the JIT far more than running, so each program runs on a few memory
    // contents: the input's, zeros, ones, and bytes from the seed; then, when the first run
    // completed after n instructions, on the input's again with budgets of exactly n (must
    // complete), n - 1 and less (must fail).
    uint64_t n = 0;
    for (int variant = 0; variant < 7; variant++) {
        run_inputs v = in;
        if (variant >= 4) {
            if (n == 0) {
                break;
            }
            v.budget = variant == 4 ? n : variant == 5 ? n - 1 : seed % n;
        } else if (variant > 0) {
            fill_bytes(v.mem, seed + static_cast<uint32_t>(variant) * 7919);
            fill_bytes(v.buf, seed + static_cast<uint32_t>(variant) * 104729);
            if (variant < 3) {
                std::fill(v.mem.begin(), v.mem.end(), variant == 1 ? 0x00 : 0xff);
            }
        }
        // One input memory for all runs: its address is part of what programs see.
        std::vector<uint8_t> mem(v.mem.size());
        const outcome a = run_padded(**interp, v, mem.data(), 16);
        if (variant == 0 && a.ok) {
            n = a.executed;
        }
        stats.runs++;
        if (a.ok) {
            stats.ok++;
        } else {
            stats.errors[a.code]++;
        }
        if (verbose) {
            std::fprintf(stderr, "interpreter: %s\n", describe(a).c_str());
        }
        for (other &o : others) {
            const size_t pad = 16 + 64 * (1 + (flags >> 6));
            const outcome b = run_padded(*o.eng, v, mem.data(), pad);
            if (verbose) {
                std::fprintf(stderr, "%s: %s\n", o.name.c_str(), describe(b).c_str());
            }
            if (std::string d = compare(a, b); !d.empty()) {
                report(insns, v, o.name + ": " + d, &a, &b);
            }
            // Again without counting: the same outcome, whatever way the engine took.
            const outcome u = run_padded(*o.eng, v, mem.data(), pad, false);
            if (std::string d = compare_uncounted(a, u); !d.empty()) {
                report(insns, v, o.name + " (not counted): " + d, &a, &u);
            }
        }
    }

    // A quarter of the programs that completed also run on the unchecked JIT (no access checks,
    // no budget), which must give the same result and memory: the interpreter saw every access
    // succeed, so none may crash.
    if (n > 0 && !stats.jit_absent && !no_jit && seed % 4 == 0) {
        engine_options eo;
        eo.unchecked = true;
        eo.tier = (seed & 4) != 0 ? jit_tier::optimised : jit_tier::baseline;
        auto unchecked = make_engine(engine_kind::jit, *prog, eo);
        if (!unchecked) {
            report(insns, in,
                   "the unchecked jit refused a valid program: " + unchecked.err().message, nullptr,
                   nullptr);
        }
        std::vector<uint8_t> mem(in.mem.size());
        const outcome a = run_padded(**interp, in, mem.data(), 16);
        const outcome b = run_padded(**unchecked, in, mem.data(), 128);
        stats.unchecked_runs++;
        if (verbose) {
            std::fprintf(stderr, "unchecked jit (%s): %s\n", jit_tier_name(eo.tier),
                         describe(b).c_str());
        }
        if (std::string d = compare_uncounted(a, b); !d.empty()) {
            report(insns, in, std::string("unchecked jit (") + jit_tier_name(eo.tier) + "): " + d,
                   &a, &b);
        }
    }
    return 0;
}

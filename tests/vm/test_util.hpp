// SPDX-License-Identifier: MIT
// Small helpers shared by the VM tests.
#pragma once

#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/vm.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

namespace bpftime::vm::test {

inline ebpf_inst insn(uint8_t opcode, uint8_t dst = 0, uint8_t src = 0, int16_t offset = 0,
                      int32_t imm = 0) {
    ebpf_inst i;
    i.opcode = opcode;
    i.dst = dst & 0xf;
    i.src = src & 0xf;
    i.offset = offset;
    i.imm = imm;
    return i;
}

inline ebpf_inst exit_insn() {
    return insn(op_exit);
}
inline ebpf_inst mov64_imm(uint8_t dst, int32_t imm) {
    return insn(cls_alu64 | src_k | alu_mov, dst, 0, 0, imm);
}

/// An engine and how it compiles.
struct engine_variant {
    engine_kind kind = engine_kind::interpreter;
    engine_options opts;
};

/// Every engine of this build; the JIT once per tier that compiles before the first run.
inline std::vector<engine_variant> engine_variants() {
    std::vector<engine_variant> out;
    for (engine_kind kind : available_engines()) {
        if (kind == engine_kind::jit) {
            out.push_back({kind, {.tier = jit_tier::baseline}});
            out.push_back({kind, {.tier = jit_tier::optimised}});
        } else {
            out.push_back({kind, {}});
        }
    }
    return out;
}

/// The engine run_insns() uses; engine tests set it for each variant.
inline engine_variant &engine_under_test() {
    static engine_variant v;
    return v;
}

/// Engine tests: each runs once per engine variant.
struct Engine : ::testing::TestWithParam<engine_variant> {
    void SetUp() override { engine_under_test() = GetParam(); }
};

inline std::string engine_test_name(const ::testing::TestParamInfo<engine_variant> &info) {
    std::string name = engine_name(info.param.kind);
    if (info.param.kind == engine_kind::jit) {
        name += std::string("_") + jit_tier_name(info.param.opts.tier);
    }
    return name;
}

/// Loads and runs instructions on the engine under test with optional memory.
inline result<uint64_t> run_insns(std::vector<ebpf_inst> insns, std::vector<uint8_t> *mem = nullptr,
                                  const run_options &ro = {}, const load_options &lo = {}) {
    auto prog = program::load(std::move(insns), lo);
    if (!prog) {
        return prog.err();
    }
    auto eng = make_engine(engine_under_test().kind, *prog, engine_under_test().opts);
    if (!eng) {
        return eng.err();
    }
    void *p = mem != nullptr && !mem->empty() ? mem->data() : nullptr;
    return (*eng)->run(p, mem != nullptr ? mem->size() : 0, ro);
}

/// Assembles and loads text (a failure fails the test).
inline program assembled(std::string_view text) {
    auto insns = assemble(text);
    EXPECT_TRUE(insns.ok()) << text << ": " << (insns.ok() ? "" : insns.err().message);
    auto prog = program::load(insns.ok() ? *insns : std::vector<ebpf_inst>{});
    EXPECT_TRUE(prog.ok()) << text << ": " << (prog.ok() ? "" : prog.err().message);
    return std::move(*prog);
}

/// The sum of the input's bytes (a loop).
inline constexpr const char *input_byte_sum = R"(
    mov %r6, %r1
    mov %r7, %r2
    mov %r0, 0
loop:
    jeq %r7, 0, done
    ldxb %r1, [%r6]
    add %r0, %r1
    add %r6, 1
    sub %r7, 1
    ja loop
done:
    exit
)";

/// Reads 8 bytes 4 KiB past the input: a fault on any small input.
inline constexpr const char *past_input_read = R"(
    ldxdw %r0, [%r1+4096]
    exit
)";

/// What a run of assembly text gave: r0 or the error, and the instructions it counted.
struct outcome {
    bool ok = false;
    uint64_t r0 = 0;
    std::string error;
    uint64_t executed = 0;
};

/// Assembles text and runs it on v with mem and an instruction budget; counted: with a pointer
/// for the count of instructions run (run_options::executed).
inline outcome run_text(const engine_variant &v, std::string_view text, std::vector<uint8_t> &mem,
                        uint64_t budget, bool counted = true) {
    const program prog = assembled(text);
    auto eng = make_engine(v.kind, prog, v.opts);
    EXPECT_TRUE(eng.ok());
    outcome o;
    run_options ro;
    ro.instruction_budget = budget;
    ro.executed = counted ? &o.executed : nullptr;
    auto r = (*eng)->run(mem.data(), mem.size(), ro);
    o.ok = r.ok();
    if (r.ok()) {
        o.r0 = *r;
    } else {
        o.error = r.err().message;
        o.executed = 0; // only a completed run reports a count
    }
    return o;
}

/// Runs text on the engine under test and on the interpreter, with the same input (at the
/// same address, which fault messages name) and budget, and expects the same outcome and the
/// same memory after it, counted and not (the optimised JIT runs a program whose loops have a
/// largest trip count without budget tests when the budget covers the most it can need and the
/// run is not counted). The JIT tests the budget at loop heads, so a run that exhausts it may
/// stop up to one iteration later than the interpreter's, at another instruction.
inline outcome same_as_interpreter(std::string_view text, const std::vector<uint8_t> &mem,
                                   uint64_t budget = 1'000'000) {
    std::vector<uint8_t> buf = mem;
    outcome want = run_text({engine_kind::interpreter, {}}, text, buf, budget);
    const std::vector<uint8_t> want_mem = buf;
    const std::string exhausted = "the instruction budget of " + std::to_string(budget);
    for (bool counted : {true, false}) {
        std::copy(mem.begin(), mem.end(), buf.begin());
        outcome got = run_text(engine_under_test(), text, buf, budget, counted);
        const std::string how = counted ? "counted" : "not counted";
        if (want.ok) {
            EXPECT_EQ(buf, want_mem) << how << "\n" << text;
        }
        EXPECT_EQ(got.ok, want.ok) << how << "\n"
                                   << text << "\n"
                                   << got.error << "\n"
                                   << want.error;
        EXPECT_EQ(got.r0, want.r0) << how << "\n" << text;
        if (want.error.find(exhausted) != std::string::npos) {
            EXPECT_NE(got.error.find(exhausted), std::string::npos) << how << "\n" << got.error;
        } else {
            EXPECT_EQ(got.error, want.error) << how << "\n" << text;
        }
        if (counted) {
            EXPECT_EQ(got.executed, want.executed) << text;
        }
    }
    return want;
}

/// The IR the JIT's optimised tier compiled for a program (BPFTIME_JIT_DUMP prints it).
inline std::string optimised_ir(const program &prog) {
    ::setenv("BPFTIME_JIT_DUMP", "1", 1);
    ::testing::internal::CaptureStderr();
    auto eng = make_engine(engine_kind::jit, prog, {.tier = jit_tier::optimised});
    std::string ir = ::testing::internal::GetCapturedStderr();
    ::unsetenv("BPFTIME_JIT_DUMP");
    EXPECT_TRUE(eng.ok());
    return ir;
}

/// The same for assembly text.
inline std::string optimised_ir(std::string_view text) {
    return optimised_ir(assembled(text));
}

/// The same with mem_len bytes of memory holding 1, 2, 3, ...
inline outcome same_as_interpreter(std::string_view text, size_t mem_len,
                                   uint64_t budget = 1'000'000) {
    std::vector<uint8_t> mem(mem_len);
    std::iota(mem.begin(), mem.end(), uint8_t{1});
    return same_as_interpreter(text, mem, budget);
}

} // namespace bpftime::vm::test

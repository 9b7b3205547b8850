// SPDX-License-Identifier: MIT
// Small helpers shared by the VM tests.
#pragma once

#include <bpftime/vm/vm.hpp>

#include <gtest/gtest.h>

#include <string>
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

} // namespace bpftime::vm::test

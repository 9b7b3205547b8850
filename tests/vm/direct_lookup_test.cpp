// SPDX-License-Identifier: MIT
// Array map lookups that compiled code does inline (direct_array): the same results, faults and
// memory as the helper call they replace, which the interpreter always makes.
#include "test_util.hpp"

#include <bpftime/vm/isa.hpp>

#include <array>
#include <cstring>

namespace bpftime::vm::test {
namespace {

constexpr uint64_t handle = 0xb9f0'0000'0000'0007ull;
std::array<uint64_t, 4> values;
int helper_calls = 0;

// What a map_lookup_elem helper does for this array: the value of a key below 4, else 0, after
// checking that the key is readable and hinting the value area.
uint64_t lookup(uint64_t map, uint64_t key, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    helper_calls++;
    if (map != handle || !ctx->check_access(key, 4, false)) {
        ctx->fail("lookup: bad map or key");
        return 0;
    }
    uint32_t idx;
    std::memcpy(&idx, reinterpret_cast<const void *>(key), sizeof idx);
    if (idx >= values.size()) {
        return 0;
    }
    ctx->hint_region(&values[idx], sizeof values[idx]);
    return reinterpret_cast<uint64_t>(&values[idx]);
}

struct DirectArray : Engine {
    helper_registry reg;
    load_options lo;
    void SetUp() override {
        Engine::SetUp();
        ASSERT_TRUE(reg.register_helper(1, "lookup", lookup).ok());
        lo.helpers = &reg;
        lo.resolver = [](uint8_t kind, int32_t imm, int32_t) -> result<resolved_lddw> {
            if (kind != pseudo_map_fd || imm != 7) {
                return make_error(ENOENT, "no such map");
            }
            const auto start = reinterpret_cast<uint64_t>(values.data());
            return resolved_lddw{handle, memory_region{start, sizeof values, true},
                                 direct_array{start, sizeof values[0], values.size(), lookup}};
        };
        values = {10, 20, 30, 40};
        helper_calls = 0;
    }
    bool compiled() const { return engine_under_test().kind == engine_kind::jit; }

    // *(u32 *)(r10 - 4) = key; r0 = lookup(map, r10 - 4); if found: *r0 += 1 and r0 = *r0
    // (or the 8 bytes at r0 + read_at), else 99.
    result<uint64_t> bump(int32_t key, int16_t read_at = 0) {
        return run_insns({insn(cls_st | mode_mem | size_w, 10, 0, -4, key),
                          insn(op_lddw, 1, pseudo_map_fd, 0, 7), insn(0),
                          insn(cls_alu64 | src_x | alu_mov, 2, 10),
                          insn(cls_alu64 | src_k | alu_add, 2, 0, 0, -4), insn(op_call, 0, 0, 0, 1),
                          insn(cls_jmp | jmp_jeq | src_k, 0, 0, 5, 0),
                          insn(cls_ldx | mode_mem | size_dw, 1, 0, 0),
                          insn(cls_alu64 | src_k | alu_add, 1, 0, 0, 1),
                          insn(cls_stx | mode_mem | size_dw, 0, 1, 0),
                          insn(cls_ldx | mode_mem | size_dw, 0, 0, read_at), exit_insn(),
                          mov64_imm(0, 99), exit_insn()},
                         nullptr, {}, lo);
    }
};

TEST_P(DirectArray, LookupsGiveTheHelpersResults) {
    for (int32_t key : {0, 3}) {
        auto r = bump(key);
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, values[static_cast<size_t>(key)]);
    }
    EXPECT_EQ(values, (std::array<uint64_t, 4>{11, 20, 30, 41}));
    for (int32_t key : {4, -1}) {
        auto r = bump(key);
        ASSERT_TRUE(r.ok()) << r.err().message;
        EXPECT_EQ(*r, 99u) << "key " << key;
    }
    // Compiled code does these lookups inline; the interpreter calls the helper.
    EXPECT_EQ(helper_calls, compiled() ? 0 : 4);
}

TEST_P(DirectArray, TheValueAreaEndsWhereTheMapDoes) {
    auto inside = bump(0, 24); // values[3], through the value found
    ASSERT_TRUE(inside.ok()) << inside.err().message;
    EXPECT_EQ(*inside, 40u);
    auto past = bump(0, 32);
    ASSERT_FALSE(past.ok());
    EXPECT_EQ(past.err().code, fault_out_of_bounds);
}

TEST_P(DirectArray, AKeyOutsideTheFrameGoesThroughTheHelper) {
    // The key is in the input memory: the helper checks and reads it.
    std::vector<uint8_t> mem(4, 0);
    mem[0] = 2;
    auto r = run_insns({insn(cls_alu64 | src_x | alu_mov, 2, 1),
                        insn(op_lddw, 1, pseudo_map_fd, 0, 7), insn(0), insn(op_call, 0, 0, 0, 1),
                        insn(cls_ldx | mode_mem | size_dw, 0, 0, 0), exit_insn()},
                       &mem, {}, lo);
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(*r, 30u);
    EXPECT_EQ(helper_calls, 1);
}

TEST_P(DirectArray, AnotherHelperBoundToTheIdIsCalled) {
    // A registry whose helper 1 is not the one the map names: no inline lookup.
    helper_registry other;
    ASSERT_TRUE(other
                    .register_helper(1, "other",
                                     [](uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                                        run_context *) -> uint64_t { return 5; })
                    .ok());
    lo.helpers = &other;
    // Its 5 is no pointer: the program faults on every engine, reading through it.
    auto r = bump(0);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().code, fault_out_of_bounds);
    EXPECT_EQ(values[0], 10u);
}

INSTANTIATE_TEST_SUITE_P(All, DirectArray, ::testing::ValuesIn(engine_variants()),
                         engine_test_name);

} // namespace
} // namespace bpftime::vm::test

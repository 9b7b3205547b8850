// SPDX-License-Identifier: MIT
// Map lookups that compiled code does without the helper call (direct_lookup), inline for an
// indexed table and through the map's own find for a find call: the same results, faults and
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
int find_calls = 0;

// The map's own lookup: the value of a key below 4, else null.
void *find(const void *map, const void *key) {
    find_calls++;
    uint32_t idx;
    std::memcpy(&idx, key, sizeof idx);
    return map == &values && idx < values.size() ? &values[idx] : nullptr;
}

// What a map_lookup_elem helper does for this array: the value of a key below 4, else 0, after
// checking that the key is readable and hinting the value area.
uint64_t lookup(uint64_t map, uint64_t key, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    helper_calls++;
    if (map != handle || !ctx->check_access(key, 4, false)) {
        ctx->fail("lookup: bad map or key");
        return 0;
    }
    void *value = find(&values, reinterpret_cast<const void *>(key));
    find_calls--; // counts direct calls only
    if (value != nullptr) {
        ctx->hint_region(value, sizeof values[0]);
    }
    return reinterpret_cast<uint64_t>(value);
}

// Runs once as an indexed table (an array, looked up inline) and once as a find call.
struct DirectLookup : Engine {
    helper_registry reg;
    load_options lo;
    void SetUp() override {
        Engine::SetUp();
        ASSERT_TRUE(reg.register_helper(1, "lookup", lookup).ok());
        lo.helpers = &reg;
        values = {10, 20, 30, 40};
        helper_calls = 0;
        find_calls = 0;
    }
    void resolve_as(bool array, bool writable = true) {
        lo.resolver = [array, writable](uint8_t kind, int32_t imm,
                                        int32_t) -> result<resolved_lddw> {
            if (kind != pseudo_map_fd || imm != 7) {
                return make_error(ENOENT, "no such map");
            }
            map_lookup_plan plan;
            plan.key_size = 4;
            plan.value_size = sizeof values[0];
            plan.value_area = reinterpret_cast<uint64_t>(values.data());
            if (array) {
                plan.method = indexed_table{plan.value_area, sizeof values[0], values.size()};
            } else {
                plan.method = find_call{find, &values};
            }
            return resolved_lddw{handle, memory_region{plan.value_area, sizeof values, writable},
                                 direct_lookup{lookup, plan}};
        };
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

TEST_P(DirectLookup, LookupsGiveTheHelpersResults) {
    for (bool array : {true, false}) {
        SCOPED_TRACE(array ? "array" : "find");
        resolve_as(array);
        values = {10, 20, 30, 40};
        helper_calls = find_calls = 0;
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
        // Compiled code does these lookups inline or through find; the interpreter calls the
        // helper.
        EXPECT_EQ(helper_calls, compiled() ? 0 : 4);
        EXPECT_EQ(find_calls, compiled() && !array ? 4 : 0);
    }
}

TEST_P(DirectLookup, TheValueAreaEndsWhereTheMapDoes) {
    for (bool array : {true, false}) {
        SCOPED_TRACE(array ? "array" : "find");
        resolve_as(array);
        auto inside = bump(0, 24); // values[3], through the value found
        ASSERT_TRUE(inside.ok()) << inside.err().message;
        EXPECT_EQ(*inside, 40u);
        auto past = bump(0, 32);
        ASSERT_FALSE(past.ok());
        EXPECT_EQ(past.err().code, fault_out_of_bounds);
    }
}

// Compiled code skips the check of an access inside the value a lookup found, once a test
// against 0 has shown the pointer is not null: accesses on the null way, before the test, past
// the value or writes to a read-only map are still checked.
TEST_P(DirectLookup, OnlyAccessesInsideAFoundValueGoUnchecked) {
    // *(u32 *)(r10 - 4) = key; r0 = lookup(map, r10 - 4); r6 = r0; then `tail`.
    auto run = [&](int32_t key, std::vector<ebpf_inst> tail) {
        std::vector<ebpf_inst> p{insn(cls_st | mode_mem | size_w, 10, 0, -4, key),
                                 insn(op_lddw, 1, pseudo_map_fd, 0, 7),
                                 insn(0),
                                 insn(cls_alu64 | src_x | alu_mov, 2, 10),
                                 insn(cls_alu64 | src_k | alu_add, 2, 0, 0, -4),
                                 insn(op_call, 0, 0, 0, 1),
                                 insn(cls_alu64 | src_x | alu_mov, 6, 0)};
        p.insert(p.end(), tail.begin(), tail.end());
        return run_insns(p, nullptr, {}, lo);
    };
    const ebpf_inst read_r6 = insn(cls_ldx | mode_mem | size_dw, 0, 6, 0);
    const ebpf_inst write_r0 = insn(cls_st | mode_mem | size_dw, 0, 0, 0, 77);
    for (bool array : {true, false}) {
        SCOPED_TRACE(array ? "array" : "find");
        resolve_as(array);
        values = {10, 20, 30, 40};
        // if r6 != 0 goto +1 (not null: read through the copy); else read through r0 anyway.
        for (int32_t key : {1, 9}) {
            auto r = run(key, {insn(cls_jmp | jmp_jne | src_k, 6, 0, 2, 0), read_r6, exit_insn(),
                               write_r0, read_r6, exit_insn()});
            if (key == 1) {
                ASSERT_TRUE(r.ok()) << r.err().message;
                EXPECT_EQ(*r, 77u);
            } else {
                ASSERT_FALSE(r.ok());
                EXPECT_EQ(r.err().code, fault_out_of_bounds);
            }
        }
        EXPECT_EQ(values[1], 77u);
        // No test at all: a key that is not there reads at address 0.
        auto unchecked = run(9, {read_r6, exit_insn()});
        ASSERT_FALSE(unchecked.ok());
        EXPECT_EQ(unchecked.err().code, fault_out_of_bounds);
        // The test on another register than the pointer's.
        auto other = run(9, {mov64_imm(7, 1), insn(cls_jmp | jmp_jeq | src_k, 7, 0, 1, 0), read_r6,
                             exit_insn()});
        ASSERT_FALSE(other.ok());
        // After the test, r6 changed: no longer the value's pointer.
        auto moved = run(2, {insn(cls_jmp | jmp_jeq | src_k, 6, 0, 3, 0),
                             insn(cls_alu64 | src_k | alu_add, 6, 0, 0, 4096), read_r6, exit_insn(),
                             exit_insn()});
        ASSERT_FALSE(moved.ok());
        EXPECT_EQ(moved.err().code, fault_out_of_bounds);
        // A read-only map: the write through the found pointer faults.
        resolve_as(array, false);
        auto ro =
            run(0, {insn(cls_jmp | jmp_jeq | src_k, 0, 0, 2, 0), write_r0, read_r6, exit_insn()});
        ASSERT_FALSE(ro.ok());
        EXPECT_EQ(ro.err().code, fault_out_of_bounds);
        EXPECT_EQ(values[0], 10u);
    }
}

TEST_P(DirectLookup, AKeyOutsideTheFrameGoesThroughTheHelper) {
    resolve_as(false);
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

TEST_P(DirectLookup, AnotherHelperBoundToTheIdIsCalled) {
    resolve_as(true);
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

// Looks up key 0 (the value area, 32 bytes, becomes the near cache), then looks for the input's
// first byte among the area's first `limit` bytes: the loop leaves at the match or at the
// limit, and the byte at the index it left with is read after it (one past the area when limit
// is 32 and nothing matched).
std::string search_values(int limit) {
    return "mov %r9, %r1\nstw [%r10-4], 0\nlddw %r1, map_fd(7)\nmov %r2, %r10\nadd %r2, -4\n"
           "call 1\njeq %r0, 0, miss\nldxb %r6, [%r9+0]\nmov %r3, 0\nloop:\njge %r3, " +
           std::to_string(limit) +
           ", done\nmov %r4, %r0\nadd %r4, %r3\nldxb %r5, [%r4+0]\njeq %r5, %r6, done\n"
           "add %r3, 1\nja loop\ndone:\nadd %r0, %r3\nldxb %r0, [%r0+0]\nlsh %r3, 8\n"
           "or %r0, %r3\nexit\nmiss:\nmov %r0, 99\nexit";
}

TEST_P(DirectLookup, AnAccessAfterALoopAtTheIndexItLeftWithFaultsWhereTheHelpersWayDoes) {
    resolve_as(true);
    // Found, found at the area's last byte, not found.
    for (uint8_t wanted : {20, 0, 0xaa}) {
        for (int limit : {31, 32}) {
            const std::string what = std::to_string(wanted) + " in " + std::to_string(limit);
            values = {10, 20, 30, 40};
            auto insns = assemble(search_values(limit));
            ASSERT_TRUE(insns.ok()) << insns.err().message;
            std::vector<uint8_t> mem{wanted, 0, 0, 0, 0, 0, 0, 0};
            auto r = run_insns(*insns, &mem, {}, lo);
            if (limit == 32 && wanted == 0xaa) {
                ASSERT_FALSE(r.ok()) << what;
                EXPECT_EQ(r.err().code, fault_out_of_bounds) << what;
                EXPECT_NE(r.err().message.find("instruction 18 (ldxb %r0, [%r0])"),
                          std::string::npos)
                    << what << ": " << r.err().message;
                continue;
            }
            ASSERT_TRUE(r.ok()) << what << ": " << r.err().message;
            const uint64_t at = wanted == 20 ? 8 : wanted == 0 ? 1 : 31;
            EXPECT_EQ(*r, at << 8 | reinterpret_cast<const uint8_t *>(values.data())[at]) << what;
        }
    }
}

TEST_P(DirectLookup, AnAccessAfterALoopAtAnIndexEveryExitKeepsInTheAreaHasNoCheck) {
    if (!compiled() || engine_under_test().opts.tier != jit_tier::optimised) {
        GTEST_SKIP() << "what the optimised JIT compiles";
    }
    resolve_as(true);
    // The same code but for the limit: with 31 the index after the loop is at most 31 on every
    // way out (fold_ranged_compares), with 32 it may be past the area, and its check stays.
    auto ir_of = [&](int limit) {
        auto insns = assemble(search_values(limit));
        EXPECT_TRUE(insns.ok());
        auto prog = program::load(*insns, lo);
        EXPECT_TRUE(prog.ok()) << prog.err().message;
        return optimised_ir(*prog);
    };
    auto checks = [](const std::string &ir) {
        size_t n = 0;
        for (size_t at = ir.find("!bpftime.check"); at != std::string::npos;
             at = ir.find("!bpftime.check", at + 1)) {
            n++;
        }
        return n;
    };
    const std::string in = ir_of(31);
    const std::string past = ir_of(32);
    EXPECT_LT(checks(in), checks(past)) << in << "\n" << past;
}

INSTANTIATE_TEST_SUITE_P(All, DirectLookup, ::testing::ValuesIn(engine_variants()),
                         engine_test_name);

} // namespace
} // namespace bpftime::vm::test

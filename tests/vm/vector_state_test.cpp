// SPDX-License-Identifier: MIT
// Engines whose runs keep the vector state (runs_keep_vector_state): which programs' code is
// compiled so, and that a run through the direct entry leaves ymm0-15 whole, upper halves
// included: on its fast path, on a thread's first run (the engine's way out, in C++ behind a
// wrapper that saves the state) and when it faults. The run is made from code that uses no
// vector register (vector_state_run.cpp), between an assembly harness's loads and stores of
// every ymm register.
#include "test_util.hpp"

#include "../ymm_asm.hpp"

#include <bpftime/cpu/vector_state.hpp>
#include <bpftime/vm/vector_state.hpp>

#include <array>
#include <cstring>
#include <thread>

// vector_state_run.cpp: e->run_direct(mem, len), r0 or UINT64_MAX after a fault.
uint64_t run_direct_general_registers_only(bpftime::vm::engine *e, void *mem, uint64_t len);

extern "C" {
// Loads ymm0-15 from in (16 x 32 bytes), calls fn(a0, a1, a2), stores ymm0-15 to out and
// returns fn's rax.
uint64_t bpftime_test_with_vectors(const void *in, void *out, void *fn, void *a0, void *a1,
                                   uint64_t a2);
// Sets every bit of ymm3: what the harness must see.
void bpftime_test_clobber_ymm3();
}

asm(R"(
        .text
        .p2align 4
        .globl bpftime_test_with_vectors
        .type bpftime_test_with_vectors, @function
bpftime_test_with_vectors:
        pushq %rbp
        movq %rsp, %rbp
        pushq %rbx
        pushq %r12
        movq %rsi, %rbx
        movq %rdx, %r12
)" BPFTIME_TEST_YMM_LOAD("%rdi") R"(
        movq %rcx, %rdi
        movq %r8, %rsi
        movq %r9, %rdx
        callq *%r12
)" BPFTIME_TEST_YMM_STORE("%rbx") R"(
        vzeroupper
        popq %r12
        popq %rbx
        popq %rbp
        ret
        .size bpftime_test_with_vectors, . - bpftime_test_with_vectors

        .p2align 4
        .globl bpftime_test_clobber_ymm3
        .type bpftime_test_clobber_ymm3, @function
bpftime_test_clobber_ymm3:
        vpcmpeqd %ymm3, %ymm3, %ymm3
        ret
        .size bpftime_test_clobber_ymm3, . - bpftime_test_clobber_ymm3
)");

namespace bpftime::vm::test {
namespace {

// Reads the input's first word and adds one: no loop, no helper.
const char *add_one = R"(
    ldxdw %r0, [%r1]
    add %r0, 1
    exit
)";

using ymm_file = std::array<uint8_t, 16 * 32>;

ymm_file pattern() {
    ymm_file in{};
    for (size_t i = 0; i < in.size(); ++i) {
        in[i] = static_cast<uint8_t>(i * 7 + 3);
    }
    return in;
}

// fn(a0, a1, a2) between the harness's loads and stores: its rax, and the registers after.
std::pair<uint64_t, ymm_file> with_vectors(void *fn, void *a0, void *a1, uint64_t a2) {
    const ymm_file in = pattern();
    ymm_file out{};
    const uint64_t rax = bpftime_test_with_vectors(in.data(), out.data(), fn, a0, a1, a2);
    return {rax, out};
}

void *run_fn() {
    return reinterpret_cast<void *>(&run_direct_general_registers_only);
}

struct VectorState : ::testing::TestWithParam<jit_tier> {
    void SetUp() override {
        if (std::find(available_engines().begin(), available_engines().end(), engine_kind::jit) ==
            available_engines().end()) {
            GTEST_SKIP() << "this build has no JIT";
        }
        if (!cpu::vectors().avx) {
            GTEST_SKIP() << "the harness loads ymm registers: this CPU or kernel has no AVX";
        }
    }
    std::unique_ptr<engine> jit(const program &prog) {
        auto eng = make_engine(engine_kind::jit, prog, {.tier = GetParam()});
        EXPECT_TRUE(eng.ok()) << (eng.ok() ? "" : eng.err().message);
        return eng.ok() ? std::move(*eng) : nullptr;
    }
};

// The harness sees a change: a function that sets ymm3 leaves it set.
TEST_P(VectorState, TheHarnessSeesAChangedRegister) {
    auto [rax, out] =
        with_vectors(reinterpret_cast<void *>(&bpftime_test_clobber_ymm3), nullptr, nullptr, 0);
    (void)rax;
    const ymm_file in = pattern();
    EXPECT_NE(std::memcmp(out.data() + 96, in.data() + 96, 32), 0);
    EXPECT_EQ(std::memcmp(out.data(), in.data(), 96), 0);
}

// Which code keeps the state: the JIT's for a program without loops or helper calls; not a
// loop's (compiled with the vectorizer), nor the interpreter's.
TEST_P(VectorState, OnlyLoopFreeHelperFreeJitCodeKeepsIt) {
    const program plain = assembled(add_one);
    const program loop = assembled(input_byte_sum);
    auto a = jit(plain);
    auto b = jit(loop);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_TRUE(runs_keep_vector_state(*a));
    EXPECT_FALSE(runs_keep_vector_state(*b));
    auto interp = make_engine(engine_kind::interpreter, plain);
    ASSERT_TRUE(interp.ok());
    EXPECT_FALSE(runs_keep_vector_state(**interp));
}

// A thread's first run (no state yet: the engine makes one in C++), then its next runs (the
// fast path) and a faulting run: r0 as expected, every ymm register as it was.
TEST_P(VectorState, DirectRunsKeepEveryYmmRegisterFirstRunFastPathAndFault) {
    const program good = assembled(add_one);
    const program bad = assembled(past_input_read);
    auto g = jit(good);
    auto f = jit(bad);
    ASSERT_NE(g, nullptr);
    ASSERT_NE(f, nullptr);
    ASSERT_TRUE(runs_keep_vector_state(*g));
    ASSERT_TRUE(runs_keep_vector_state(*f));
    const ymm_file in = pattern();
    std::thread t([&] {
        uint64_t word = 41;
        for (int run = 0; run < 3; ++run) {
            auto [r0, out] = with_vectors(run_fn(), g.get(), &word, sizeof word);
            EXPECT_EQ(r0, 42u) << "run " << run;
            EXPECT_EQ(out, in) << "run " << run << " changed a vector register";
        }
        auto [r0, out] = with_vectors(run_fn(), f.get(), &word, sizeof word);
        EXPECT_EQ(r0, UINT64_MAX) << "the run past its input did not fault";
        EXPECT_EQ(out, in) << "the faulting run changed a vector register";
    });
    t.join();
}

INSTANTIATE_TEST_SUITE_P(Tiers, VectorState,
                         ::testing::Values(jit_tier::baseline, jit_tier::optimised),
                         [](const ::testing::TestParamInfo<jit_tier> &tier) {
                             return std::string(jit_tier_name(tier.param));
                         });

} // namespace
} // namespace bpftime::vm::test

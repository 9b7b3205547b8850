// SPDX-License-Identifier: MIT
// A uprobe inside a function where AVX registers hold live values: the program runs helpers
// that copy and measure strings, and the function's registers are unchanged after the probe.
#include <bpftime/attach/attach.hpp>
#include <bpftime/manager/attach_manager.hpp>
#include <bpftime/provider/event_provider.hpp>
#include <bpftime/uprobe/uprobe.hpp>

#include "../provider_fixture.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

extern "C" {
// uprobe_targets.S: ymm0-15 (zmm16-31) loaded from in, the probed point, stored to out.
void ut_avx_mid(const void *in, void *out, const char *text);
void ut_avx512_mid(const void *in, void *out, const char *text);
// ymm0-7 from in (256 bytes), then ut_avx_args(out): ymm0-7 at its entry to out, its __m256
// result (ymm7) to out + 256.
void ut_call_avx_args(const void *in, void *out);
extern const uint64_t ut_avx_mid_point_offset;
extern const uint64_t ut_avx512_mid_point_offset;
}

namespace bpftime {
namespace {

using test::id_of;

const std::string objects = BPFTIME_UPROBE_TEST_OBJECTS_DIR;

template <class F>
F *opaque(F *f) {
    F *volatile p = f;
    return p;
}

// Bytes no register holds by chance.
template <size_t N>
std::array<uint8_t, N> pattern(uint8_t seed) {
    std::array<uint8_t, N> b{};
    for (size_t i = 0; i < N; ++i) {
        b[i] = static_cast<uint8_t>(seed + 13 * i) % 250 + 3;
    }
    return b;
}

// vector_helpers.bpf.c's record.
struct copied {
    uint64_t runs;
    int64_t length;
    char text[192];
};

struct UprobeVectorState : test::provider_fixture {
    UprobeVectorState() : provider_fixture("bpftime-uprobe-vector-test") {}

    // The program attached at symbol+offset, a host running it; the record's map id.
    uint32_t attach_at(const std::string &symbol, uint64_t offset) {
        loaded_object obj = test::load_elf(*provider, objects + "/vector_helpers.bpf.o");
        test::attach(*provider, id_of(obj.programs, "copy_text"), attach_type_uprobe,
                     "/proc/self/exe:" + symbol + "+" + std::to_string(offset));
        host = std::make_unique<attach_manager>(seg);
        auto r = host->register_attach_impls(make_uprobe_attach_impls());
        EXPECT_TRUE(r) << r.err().message;
        auto i = host->instantiate();
        EXPECT_TRUE(i) << i.err().message;
        EXPECT_EQ(host->attached_count(), 1u);
        return id_of(obj.maps, "copies");
    }

    copied record(uint32_t map) {
        auto m = provider->open_map(map);
        EXPECT_TRUE(m) << m.err().message;
        copied c{};
        if (!m) {
            return c;
        }
        uint32_t key = 0;
        auto v = (*m)->read({reinterpret_cast<const uint8_t *>(&key), sizeof key});
        EXPECT_TRUE(v) << v.err().message;
        if (v && v->size() == sizeof c) {
            std::memcpy(&c, v->data(), sizeof c);
        }
        return c;
    }

    std::unique_ptr<attach_manager> host;
};

// A long text, so the helpers' string functions take their vector loops.
const std::string text = std::string(150, 'v') + " the end";

TEST_F(UprobeVectorState, LiveYmmRegistersSurviveAProgramCallingHelpers) {
    if (!__builtin_cpu_supports("avx2")) {
        GTEST_SKIP() << "this CPU has no AVX2";
    }
    uint32_t map = attach_at("ut_avx_mid", ut_avx_mid_point_offset);
    const auto in = pattern<512>(17);
    for (int call = 0; call < 3; ++call) {
        std::array<uint8_t, 512> out{};
        opaque(ut_avx_mid)(in.data(), out.data(), text.c_str());
        for (size_t r = 0; r < 16; ++r) {
            EXPECT_EQ(std::memcmp(in.data() + 32 * r, out.data() + 32 * r, 32), 0)
                << "ymm" << r << " changed across the uprobe (call " << call << ")";
        }
    }
    copied c = record(map);
    EXPECT_EQ(c.runs, 3u) << "the program runs at every call";
    EXPECT_EQ(c.length, static_cast<int64_t>(text.size() + 1));
    EXPECT_EQ(std::string(c.text), text);
}

TEST_F(UprobeVectorState, LiveZmmRegistersSurviveAProgramCallingHelpers) {
    if (!__builtin_cpu_supports("avx512f")) {
        GTEST_SKIP() << "this CPU has no AVX-512 (or the kernel does not enable it)";
    }
    uint32_t map = attach_at("ut_avx512_mid", ut_avx512_mid_point_offset);
    const auto in = pattern<1024>(29);
    for (int call = 0; call < 3; ++call) {
        std::array<uint8_t, 1024> out{};
        opaque(ut_avx512_mid)(in.data(), out.data(), text.c_str());
        for (size_t r = 0; r < 16; ++r) {
            EXPECT_EQ(std::memcmp(in.data() + 64 * r, out.data() + 64 * r, 64), 0)
                << "zmm" << 16 + r << " changed across the uprobe (call " << call << ")";
        }
    }
    EXPECT_EQ(record(map).runs, 3u);
}

// A uprobe and a uretprobe on one function whose programs keep the vector state (counting
// programs, the JIT's code without SSE): the hook's plain handlers run them with no vector
// register saved. The AVX arguments at the entry and the AVX result at the return stay whole,
// and every call and return is counted, from the thread's first call (which takes the saving
// path) on.
TEST_F(UprobeVectorState, PlainProgramsKeepAvxArgumentsAndResults) {
    if (!__builtin_cpu_supports("avx2")) {
        GTEST_SKIP() << "this CPU has no AVX2";
    }
    loaded_object obj = test::load_elf(*provider, objects + "/count_calls.bpf.o");
    test::attach(*provider, id_of(obj.programs, "count_entry"), attach_type_uprobe,
                 "/proc/self/exe:ut_avx_args");
    test::attach(*provider, id_of(obj.programs, "count_return"), attach_type_uretprobe,
                 "/proc/self/exe:ut_avx_args");
    host = std::make_unique<attach_manager>(seg);
    auto r = host->register_attach_impls(make_uprobe_attach_impls());
    ASSERT_TRUE(r) << r.err().message;
    auto i = host->instantiate();
    ASSERT_TRUE(i) << i.err().message;
    ASSERT_EQ(host->attached_count(), 2u);
    const auto in = pattern<256>(31);
    for (int call = 0; call < 4; ++call) {
        std::array<uint8_t, 288> out{};
        opaque(ut_call_avx_args)(in.data(), out.data());
        for (size_t a = 0; a < 8; ++a) {
            EXPECT_EQ(std::memcmp(in.data() + 32 * a, out.data() + 32 * a, 32), 0)
                << "argument ymm" << a << " changed across the uprobe (call " << call << ")";
        }
        EXPECT_EQ(std::memcmp(in.data() + 224, out.data() + 256, 32), 0)
            << "the result changed across the uretprobe (call " << call << ")";
    }
    auto m = provider->open_map(id_of(obj.maps, "calls"));
    ASSERT_TRUE(m) << m.err().message;
    for (uint32_t key : {0u, 1u}) {
        auto v = (*m)->read({reinterpret_cast<const uint8_t *>(&key), sizeof key});
        ASSERT_TRUE(v) << v.err().message;
        uint64_t n = 0;
        std::memcpy(&n, v->data(), sizeof n);
        EXPECT_EQ(n, 4u) << (key == 0 ? "entries" : "returns");
    }
}

} // namespace
} // namespace bpftime

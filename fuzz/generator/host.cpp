// SPDX-License-Identifier: MIT
#include "host.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace bpftime::fuzz {

using namespace bpftime::vm;

alignas(16) uint8_t helper_buf[helper_buf_size];
alignas(16) uint8_t extra_buf[extra_size];

namespace {

uint64_t helper_mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, run_context *) {
    uint64_t h = a * 0x9e3779b97f4a7c15ull;
    h ^= (b << 7) | (b >> 57);
    h += c * 31 - d;
    return h ^ (e >> 3);
}

uint64_t helper_region(uint64_t start, uint64_t len, uint64_t writable, uint64_t, uint64_t,
                       run_context *ctx) {
    const uint64_t off = start % helper_buf_size;
    const uint64_t n = std::min<uint64_t>(len, helper_buf_size - off);
    ctx->add_region(helper_buf + off, n, (writable & 1) != 0);
    return reinterpret_cast<uint64_t>(helper_buf + off);
}

uint64_t helper_maybe_fail(uint64_t a, uint64_t, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    if ((a & 0xff) == 0x42) {
        ctx->fail("maybe_fail: the argument ends in 0x42");
        return 0;
    }
    return a * 3 + 1;
}

uint64_t helper_sum(uint64_t p, uint64_t len, uint64_t, uint64_t, uint64_t, run_context *ctx) {
    if (len > 4096 || !ctx->check_access(p, len, false)) {
        return static_cast<uint64_t>(-EFAULT);
    }
    uint64_t h = len;
    for (uint64_t i = 0; i < len; i++) {
        h = h * 131 + reinterpret_cast<const uint8_t *>(p)[i];
    }
    return h;
}

uint64_t helper_fill(uint64_t p, uint64_t len, uint64_t v, uint64_t, uint64_t, run_context *ctx) {
    if (len > 4096 || !ctx->check_access(p, len, true)) {
        return 1;
    }
    if (len > 0) { // p may be null when len is 0 (an empty input memory)
        std::memset(reinterpret_cast<void *>(p), static_cast<int>(v & 0xff), len);
    }
    return 0;
}

} // namespace

const helper_registry &fuzz_helpers() {
    static const helper_registry *r = [] {
        auto *reg = new helper_registry();
        reg->replace_helper(id_mix, "mix", helper_mix);
        reg->replace_helper(id_region, "region", helper_region);
        reg->replace_helper(id_maybe_fail, "maybe_fail", helper_maybe_fail);
        reg->replace_helper(id_sum, "sum", helper_sum);
        reg->replace_helper(id_fill, "fill", helper_fill);
        return reg;
    }();
    return *r;
}

} // namespace bpftime::fuzz

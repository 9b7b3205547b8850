// SPDX-License-Identifier: MIT
// Differential fuzzer: the interpreter against the JIT.
//
// The input bytes drive a generator of valid programs rather than being instructions
// themselves, so nearly every input loads and the engines spend their time on semantics
// instead of on the validator's refusals. Each program runs on both engines with the same
// input memory, helper buffer and caller region; results, fault codes, instruction counts and
// memory must agree (see compare()). Any difference prints both results and the program and
// traps, so libFuzzer keeps the input.
//
// The generator tracks what every register holds (nothing, a number, or a pointer into the
// stack, the input memory, the helper buffer or the caller region, with its offset) and never
// lets a pointer's value reach r0, memory, a comparison or a helper that does arithmetic: the
// two engines have their stacks at different addresses, so such a program would differ
// without a bug. It also treats r1-r5 as clobbered by calls and r0, r6-r9 as unset on entry
// to a subprogram, as the kernel's verifier does, since engines need not agree there.
//
// Without a JIT in the build (make_engine fails with ENOTSUP) the interpreter runs against
// itself, its second run at another stack depth, which still catches generator mistakes.
//
// BPFTIME_DIFF_VERBOSE=1 prints each program and both results (to replay a crash file).
#include <bpftime/vm/assembler.hpp>
#include <bpftime/vm/disassembler.hpp>
#include <bpftime/vm/vm.hpp>

#include <algorithm>
#include <alloca.h>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

using namespace bpftime;
using namespace bpftime::vm;

namespace {

// ---------------------------------------------------------------------------------------------
// The host side: helpers, their buffer, the caller region.

constexpr int64_t helper_buf_size = 256;
constexpr int64_t extra_size = 64;
alignas(16) uint8_t helper_buf[helper_buf_size];
alignas(16) uint8_t extra_buf[extra_size];

constexpr int32_t id_mix = 1;        // a number from all five arguments
constexpr int32_t id_region = 2;     // hands out part of helper_buf
constexpr int32_t id_maybe_fail = 3; // fails the run on some arguments
constexpr int32_t id_sum = 4;        // reads memory the program points to
constexpr int32_t id_fill = 6;       // writes memory the program points to
constexpr int32_t id_unknown = 77;   // not registered: callx must fault

uint64_t helper_mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, run_context *) {
    uint64_t h = a * 0x9e3779b97f4a7c15ull;
    h ^= (b << 7) | (b >> 57);
    h += c * 31 - d;
    return h ^ (e >> 3);
}

// r1 = offset into the buffer, r2 = length, r3 & 1 = writable; returns the address.
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

// r1 = pointer, r2 = length; a hash of the bytes, or -EFAULT when the program may not read them.
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

// r1 = pointer, r2 = length, r3 = byte; 0 when written, 1 when the program may not write there.
uint64_t helper_fill(uint64_t p, uint64_t len, uint64_t v, uint64_t, uint64_t, run_context *ctx) {
    if (len > 4096 || !ctx->check_access(p, len, true)) {
        return 1;
    }
    if (len > 0) { // p may be null when len is 0 (an empty input memory)
        std::memset(reinterpret_cast<void *>(p), static_cast<int>(v & 0xff), len);
    }
    return 0;
}

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

// ---------------------------------------------------------------------------------------------
// The input bytes, then (so that short inputs still make whole programs) bytes derived from a
// hash of the input and the position, which keeps seek() exact.

class byte_source {
public:
    byte_source(const uint8_t *data, size_t size) : data_(data), size_(size) {
        for (size_t i = 0; i < size; i++) {
            seed_ = (seed_ ^ data[i]) * 0x100000001b3ull;
        }
    }
    size_t pos() const { return pos_; }
    void seek(size_t p) { pos_ = p; }
    uint8_t u8() {
        const size_t p = pos_++;
        if (p < size_) {
            return data_[p];
        }
        uint64_t z = seed_ + p * 0x9e3779b97f4a7c15ull; // splitmix64
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return static_cast<uint8_t>(z ^ (z >> 31));
    }
    uint16_t u16() {
        uint16_t lo = u8();
        return static_cast<uint16_t>(lo | (u8() << 8));
    }
    uint32_t u32() {
        uint32_t lo = u16();
        return lo | (static_cast<uint32_t>(u16()) << 16);
    }
    uint64_t u64() {
        uint64_t lo = u32();
        return lo | (static_cast<uint64_t>(u32()) << 32);
    }
    // In [0, n).
    uint32_t below(uint32_t n) {
        if (n <= 1) {
            return 0;
        }
        return n <= 256 ? u8() % n : u16() % n;
    }
    bool bit() { return (u8() & 1) != 0; }
    bool chance(unsigned percent) { return u8() % 100 < percent; }

private:
    const uint8_t *data_;
    size_t size_;
    size_t pos_ = 0;
    uint64_t seed_ = 0xcbf29ce484222325ull; // FNV-1a of the input
};

// ---------------------------------------------------------------------------------------------
// The generator.

// What a register holds. Pointer offsets count from the origin of their memory: the current
// frame's r10, the start of the input memory, of helper_buf or of extra_buf.
enum class kind : uint8_t { none, scalar, stack, mem, buf, extra };

struct reg_t {
    kind k = kind::none;
    int32_t off = 0;
    int32_t lo = 0, hi = 0; // buf: the region the helper handed out
    bool writable = false;  // buf
    bool operator==(const reg_t &) const = default;
};

bool is_ptr(kind k) {
    return k >= kind::stack;
}

reg_t scalar() {
    return reg_t{kind::scalar};
}

reg_t pointer(kind k, int32_t off) {
    return reg_t{k, off};
}

struct setup {
    // Percent of chances to fault on purpose (out-of-bounds offsets, misaligned atomics,
    // failing helper arguments, unknown callx ids); 0 for half the programs, so that most runs
    // get to their exit.
    unsigned fault_pct = 0;
    int64_t mem_len = 0;
    bool mem_writable = true;
    bool extra_writable = true;
    // Off to fuzz past a known difference (BPFTIME_DIFF_AVOID=helper-stack-in-call): stack
    // pointers handed to helpers from subprograms.
    bool helper_stack_in_call = true;
};

struct jump_fixup {
    size_t at;
    size_t label;
    bool in_imm; // ja32 keeps its target in imm
};

struct call_fixup {
    size_t at;
    size_t callee; // function index: 0 main, 1.. subprograms
};

struct function {
    std::vector<ebpf_inst> code;
    std::vector<int64_t> labels; // slot of each label, -1 until bound
    std::vector<jump_fixup> jumps;
    std::vector<call_fixup> calls;
};

using state = std::array<reg_t, register_count>;

constexpr uint8_t jcond_ops[] = {jmp_jeq,  jmp_jgt, jmp_jge, jmp_jset, jmp_jne, jmp_jsgt,
                                 jmp_jsge, jmp_jlt, jmp_jle, jmp_jslt, jmp_jsle};
constexpr int32_t atomic_ops[] = {atomic_add,
                                  atomic_or,
                                  atomic_and,
                                  atomic_xor,
                                  atomic_add | atomic_fetch,
                                  atomic_or | atomic_fetch,
                                  atomic_and | atomic_fetch,
                                  atomic_xor | atomic_fetch,
                                  atomic_xchg,
                                  atomic_cmpxchg};

uint8_t size_code(int64_t n) {
    switch (n) {
    case 1:
        return size_b;
    case 2:
        return size_h;
    case 4:
        return size_w;
    default:
        return size_dw;
    }
}

class generator {
public:
    generator(byte_source &in, const setup &s) : in_(in), s_(s) {}

    std::vector<ebpf_inst> generate() {
        const size_t nsub = in_.below(4);
        const bool recursive = in_.chance(30);
        for (size_t i = 0; i < nsub; i++) {
            sigs_.push_back(random_signature());
        }
        if (recursive) {
            std::array<reg_t, 5> args{};
            args[0] = scalar();
            sigs_.push_back(args);
        }
        rec_ = recursive ? static_cast<int>(sigs_.size()) : -1;

        std::vector<function> fns;
        for (size_t i = 0; i <= sigs_.size(); i++) {
            cur_ = i;
            f_ = function{};
            reserved_ = 0;
            no_calls_ = false;
            limit_ = i == 0 ? 220 : 90;
            st_ = state{};
            st_[frame_pointer] = pointer(kind::stack, 0);
            if (i == 0) {
                st_[1] = pointer(kind::mem, 0);
                st_[2] = scalar();
            } else {
                for (int r = 1; r <= 5; r++) {
                    st_[r] = sigs_[i - 1][r - 1];
                }
            }
            if (static_cast<int>(i) == rec_) {
                gen_recursive_body();
            } else {
                gen_block(0, i == 0 ? 40 : 16);
                finish_exit();
            }
            fns.push_back(std::move(f_));
        }

        std::vector<size_t> start(fns.size());
        size_t total = 0;
        for (size_t i = 0; i < fns.size(); i++) {
            start[i] = total;
            total += fns[i].code.size();
        }
        std::vector<ebpf_inst> out;
        out.reserve(total);
        for (size_t i = 0; i < fns.size(); i++) {
            function &fn = fns[i];
            for (const jump_fixup &j : fn.jumps) {
                const int64_t delta = fn.labels[j.label] - static_cast<int64_t>(j.at) - 1;
                if (j.in_imm) {
                    fn.code[j.at].imm = static_cast<int32_t>(delta);
                } else {
                    fn.code[j.at].offset = static_cast<int16_t>(delta);
                }
            }
            for (const call_fixup &c : fn.calls) {
                fn.code[c.at].imm = static_cast<int32_t>(static_cast<int64_t>(start[c.callee]) -
                                                         static_cast<int64_t>(start[i] + c.at) - 1);
            }
            out.insert(out.end(), fn.code.begin(), fn.code.end());
        }
        return out;
    }

private:
    // ---- emission

    void emit(uint8_t opcode, int dst, int src, int64_t off, int64_t imm) {
        ebpf_inst i;
        i.opcode = opcode;
        i.dst = static_cast<uint8_t>(dst & 0xf);
        i.src = static_cast<uint8_t>(src & 0xf);
        i.offset = static_cast<int16_t>(off);
        i.imm = static_cast<int32_t>(imm);
        f_.code.push_back(i);
    }

    void emit_lddw(int dst, uint64_t v) {
        emit(op_lddw, dst, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v)));
        emit(0, 0, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v >> 32)));
    }

    size_t new_label() {
        f_.labels.push_back(-1);
        return f_.labels.size() - 1;
    }

    void bind(size_t label) { f_.labels[label] = static_cast<int64_t>(f_.code.size()); }

    void emit_jump(uint8_t opcode, int dst, int src, int64_t imm, size_t label) {
        f_.jumps.push_back({f_.code.size(), label, false});
        emit(opcode, dst, src, 0, imm);
    }

    // ja or ja32 (gotol).
    void emit_goto(size_t label) {
        const bool wide = in_.bit();
        f_.jumps.push_back({f_.code.size(), label, wide});
        emit(wide ? op_ja32 : op_ja, 0, 0, 0, 0);
    }

    // ---- values

    int32_t imm32() {
        static constexpr int32_t special[] = {
            0,       1,         -1,        2,     7,      8,          15,
            16,      31,        32,        33,    63,     64,         65,
            0x7f,    0x80,      0xff,      0x100, 0x7fff, 0x8000,     0xffff,
            0x10000, INT32_MAX, INT32_MIN, -2,    -32768, 0x55555555, -0x55555556};
        switch (in_.below(4)) {
        case 0:
            return static_cast<int32_t>(in_.below(17));
        case 1:
            return static_cast<int32_t>(in_.u32());
        default:
            return special[in_.below(std::size(special))];
        }
    }

    uint64_t imm64() {
        static constexpr uint64_t special[] = {
            0x8000000000000000ull, 0x7fffffffffffffffull, ~0ull,
            0x80000000ull,         0xffffffffull,         0x100000000ull,
            0xffffffff00000000ull, 0x0000000100000001ull, 0xffffffff80000000ull,
            0x8000000080000000ull};
        if (in_.bit()) {
            return special[in_.below(std::size(special))];
        }
        return in_.u64();
    }

    int32_t divisor() {
        static constexpr int32_t special[] = {0, -1, 1, INT32_MIN, INT32_MAX, 2, -2, 3, 7, 0x10000};
        return in_.bit() ? special[in_.below(std::size(special))] : imm32();
    }

    int32_t shift_amount() {
        static constexpr int32_t special[] = {0, 1, 31, 32, 33, 63, 64, 65, 127, 255, -1, 0x100};
        return in_.bit() ? special[in_.below(std::size(special))] : imm32();
    }

    bool faulty() { return in_.chance(s_.fault_pct); }

    // ---- registers

    bool writable(int r) const { return r >= 0 && r < 10 && (reserved_ & (1u << r)) == 0; }

    template <class Pred>
    int pick(Pred pred, int last = 9) {
        int cand[register_count];
        int n = 0;
        for (int r = 0; r <= last; r++) {
            if (pred(r)) {
                cand[n++] = r;
            }
        }
        return n == 0 ? -1 : cand[in_.below(static_cast<uint32_t>(n))];
    }

    // A register to overwrite; rarely the last one pointing into the input memory, the helper
    // buffer or the caller region (the stack stays reachable through r10).
    int dst_any(int avoid = -1) {
        int r = pick([&](int x) { return writable(x) && x != avoid; });
        if (r >= 0 && is_ptr(st_[r].k) &&
            in_.chance(st_[r].k != kind::stack && last(r) ? 95 : 50)) {
            int again = pick([&](int x) { return writable(x) && x != avoid && !is_ptr(st_[x].k); });
            if (again >= 0) {
                r = again;
            }
        }
        if (r < 0) { // only when avoid is r0 and r1-r9 are all taken, which never happens
            r = 0;
        }
        return r;
    }

    bool last(int r) const {
        for (int x = 0; x < 10; x++) {
            if (x != r && st_[x].k == st_[r].k) {
                return false;
            }
        }
        return true;
    }

    void mov_imm(int r, int32_t v) {
        emit(cls_alu64 | src_k | alu_mov, r, 0, 0, v);
        st_[r] = scalar();
    }

    // A scalar register the current code may write; sets one when there is none.
    int dst_scalar(int avoid = -1) {
        int r = pick([&](int x) { return writable(x) && x != avoid && st_[x].k == kind::scalar; });
        if (r < 0 || in_.chance(10)) {
            r = dst_any(avoid);
            if (st_[r].k != kind::scalar) {
                mov_imm(r, imm32());
            }
        }
        return r;
    }

    // A scalar register to read (possibly reserved); sets one when there is none.
    int src_scalar(int avoid = -1) {
        int r = pick([&](int x) { return x != avoid && st_[x].k == kind::scalar; });
        if (r < 0 || in_.chance(15)) {
            r = dst_any(avoid);
            mov_imm(r, imm32());
        }
        return r;
    }

    // Any pointer register, r10 included; for a store mostly one to writable memory.
    int ptr_reg(bool for_write, bool stack = true) {
        auto ok = [&](int x) { return is_ptr(st_[x].k) && (stack || st_[x].k != kind::stack); };
        if (for_write && !faulty()) {
            return pick([&](int x) { return ok(x) && region_writable(st_[x]); }, frame_pointer);
        }
        return pick(ok, frame_pointer);
    }

    // The memory a pointer's kind may reach, in its coordinates.
    std::pair<int64_t, int64_t> region(const reg_t &p) const {
        switch (p.k) {
        case kind::stack: // a subprogram may also reach its caller's frame
            return {-static_cast<int64_t>(stack_frame_size),
                    cur_ == 0 ? 0 : static_cast<int64_t>(stack_frame_size)};
        case kind::mem:
            return {0, s_.mem_len};
        case kind::buf:
            return {p.lo, p.hi};
        case kind::extra:
            return {0, extra_size};
        default:
            return {0, 0};
        }
    }

    bool region_writable(const reg_t &p) const {
        switch (p.k) {
        case kind::stack:
            return true;
        case kind::mem:
            return s_.mem_writable;
        case kind::buf:
            return p.writable;
        case kind::extra:
            return s_.extra_writable;
        default:
            return false;
        }
    }

    // The offset field of an n-byte access through p: mostly inside p's memory (aligned for
    // atomics), sometimes straddling or past either end, rarely anywhere.
    int16_t access_offset(const reg_t &p, int64_t n, bool atomic) {
        auto [lo, hi] = region(p);
        int64_t target = 0;
        const uint32_t pick_kind = in_.below(100);
        if (hi - lo >= n && !faulty()) {
            target = lo + in_.below(static_cast<uint32_t>(hi - lo - n + 1));
            if (atomic || in_.bit()) {
                const int64_t down = target - (((target % n) + n) % n);
                target = down >= lo ? down : down + n;
            }
            if (atomic && faulty()) {
                target += 1 + in_.below(static_cast<uint32_t>(n - 1)); // misaligned
            }
        } else if (pick_kind < 50) {
            target = hi - n + 1 + in_.below(static_cast<uint32_t>(n + 8));
        } else if (pick_kind < 90) {
            target = lo - 1 - in_.below(static_cast<uint32_t>(n + 8));
        } else {
            return static_cast<int16_t>(in_.u16());
        }
        const int64_t off = target - p.off;
        if (off < INT16_MIN || off > INT16_MAX) {
            return static_cast<int16_t>(in_.u16());
        }
        return static_cast<int16_t>(off);
    }

    static state meet(const state &a, const state &b) {
        state out;
        for (size_t r = 0; r < register_count; r++) {
            out[r] = a[r] == b[r] ? a[r] : reg_t{};
        }
        return out;
    }

    // ---- program structure

    std::array<reg_t, 5> random_signature() {
        std::array<reg_t, 5> args{};
        const uint32_t nargs = in_.below(6);
        for (uint32_t i = 0; i < nargs; i++) {
            switch (in_.below(5)) {
            case 0: // into the caller's frame: +512 from the callee's r10
                args[i] = pointer(kind::stack, static_cast<int32_t>(in_.below(512)));
                break;
            case 1:
                args[i] =
                    pointer(kind::mem,
                            static_cast<int32_t>(in_.below(static_cast<uint32_t>(s_.mem_len + 1))));
                break;
            default:
                args[i] = scalar();
            }
        }
        return args;
    }

    // Ends the function with r0 a number that depends on every number register and often on
    // the bytes of the frame, so a difference in any of them shows in the result. The state
    // after an exit does not matter to the code that follows (another path reaches it), so
    // it is left as it was.
    void finish_exit() {
        const state before = st_;
        if (st_[0].k != kind::scalar) {
            emit(cls_alu64 | src_k | alu_mov, 0, 0, 0, imm32());
            st_[0] = scalar();
        }
        if (in_.chance(80)) {
            for (int r = 1; r < 10; r++) {
                if (st_[r].k == kind::scalar) {
                    emit(cls_alu64 | src_k | alu_mul, 0, 0, 0, 31);
                    emit(cls_alu64 | src_x | alu_add, 0, r, 0, 0);
                }
            }
        } else if (in_.bit()) {
            const int s = pick([&](int x) { return st_[x].k == kind::scalar; });
            emit((in_.bit() ? cls_alu64 : cls_alu) | src_x | alu_mov, 0, s, 0, 0);
        }
        if (in_.chance(40) &&
            (cur_ == 0 ||
             s_.helper_stack_in_call)) { // r0 into the frame, and a hash of the frame into r0
            emit(cls_stx | mode_mem | size_dw, frame_pointer, 0, -8, 0);
            emit(cls_alu64 | src_x | alu_mov, 1, frame_pointer, 0, 0);
            emit(cls_alu64 | src_k | alu_add, 1, 0, 0, -static_cast<int32_t>(stack_frame_size));
            emit(cls_alu64 | src_k | alu_mov, 2, 0, 0, static_cast<int32_t>(stack_frame_size));
            emit(op_call, 0, call_helper, 0, id_sum);
        }
        emit(op_exit, 0, 0, 0, 0);
        st_ = before;
    }

    void gen_block(int depth, uint32_t max_items) {
        const uint32_t items = 1 + in_.below(max_items);
        for (uint32_t i = 0; i < items; i++) {
            if (f_.code.size() + 24 > limit_) {
                return;
            }
            const uint32_t sel = in_.below(100);
            if (sel < 28) {
                gen_alu();
            } else if (sel < 33) {
                gen_corner();
            } else if (sel < 37) {
                gen_endian();
            } else if (sel < 40) {
                emit_lddw_any();
            } else if (sel < 50) {
                gen_load();
            } else if (sel < 59) {
                gen_store();
            } else if (sel < 64) {
                gen_atomic();
            } else if (sel < 70) {
                gen_pointer();
            } else if (sel < 71) {
                gen_address_arith();
            } else if (sel < 77) {
                if (depth < 3) {
                    gen_if(depth);
                }
            } else if (sel < 79) {
                if (depth < 3) {
                    gen_switch(depth);
                }
            } else if (sel < 84) {
                if (depth < 3) {
                    gen_loop(depth);
                }
            } else if (sel < 89) {
                gen_local_call();
            } else if (sel < 95) {
                gen_helper();
            } else if (sel < 97) {
                if (depth > 0) {
                    finish_exit(); // an early exit ends this block
                    return;
                }
            } else if (depth < 3) {
                gen_skip(depth);
            }
        }
    }

    void gen_alu() {
        static constexpr uint8_t ops[] = {alu_add, alu_sub, alu_mul, alu_div, alu_or,
                                          alu_and, alu_lsh, alu_rsh, alu_neg, alu_mod,
                                          alu_xor, alu_mov, alu_arsh};
        const uint8_t op = ops[in_.below(std::size(ops))];
        const uint8_t cls = in_.bit() ? cls_alu64 : cls_alu;
        if (op == alu_mov) {
            if (in_.bit()) {
                const int dst = dst_any();
                emit(cls | src_k | alu_mov, dst, 0, 0, imm32());
                st_[dst] = scalar();
            } else {
                const int src = src_scalar();
                const int dst = dst_any();
                static constexpr int16_t sx64[] = {0, 8, 16, 32};
                const int16_t off = cls == cls_alu64 ? sx64[in_.below(4)] : sx64[in_.below(3)];
                emit(cls | src_x | alu_mov, dst, src, off, 0);
                st_[dst] = scalar();
            }
            return;
        }
        const int dst = dst_scalar();
        if (op == alu_neg) {
            emit(cls | alu_neg, dst, 0, 0, 0);
            return;
        }
        const bool divmod = op == alu_div || op == alu_mod;
        const bool shift = op == alu_lsh || op == alu_rsh || op == alu_arsh;
        const int16_t off = divmod ? static_cast<int16_t>(in_.bit()) : 0;
        if (in_.bit()) {
            const int32_t imm = divmod ? divisor() : shift ? shift_amount() : imm32();
            emit(cls | src_k | op, dst, 0, off, imm);
        } else {
            emit(cls | src_x | op, dst, src_scalar(), off, 0);
        }
    }

    // Operand values the engines are most likely to get wrong.
    void gen_corner() {
        const uint8_t cls = in_.bit() ? cls_alu64 : cls_alu;
        const bool wide = cls == cls_alu64;
        const int a = dst_any();
        const int b = dst_any(a);
        const uint8_t divmod = in_.bit() ? alu_div : alu_mod;
        switch (in_.below(4)) {
        case 0: // INT_MIN / -1 and INT_MIN % -1, signed
            if (wide) {
                emit_lddw(a, 0x8000000000000000ull);
            } else {
                emit(cls_alu | src_k | alu_mov, a, 0, 0, INT32_MIN);
            }
            st_[a] = scalar();
            if (in_.bit()) {
                emit(cls | src_k | divmod, a, 0, 1, -1);
            } else {
                emit((in_.bit() ? cls_alu64 : cls_alu) | src_k | alu_mov, b, 0, 0, -1);
                st_[b] = scalar();
                emit(cls | src_x | divmod, a, b, 1, 0);
            }
            break;
        case 1: // by zero, or by a register whose low half alone is zero
        {
            emit_lddw(b, in_.bit() ? (static_cast<uint64_t>(in_.u32() | 1) << 32) : 0);
            st_[b] = scalar();
            const int dst = dst_scalar(b);
            emit(cls | src_x | divmod, dst, b, in_.bit(), 0);
            break;
        }
        case 2: { // shifts by register amounts past the width
            static constexpr uint8_t shifts[] = {alu_lsh, alu_rsh, alu_arsh};
            emit_lddw(b, in_.bit() ? static_cast<uint64_t>(static_cast<int64_t>(shift_amount()))
                                   : imm64());
            st_[b] = scalar();
            const int dst = dst_scalar(b);
            emit(cls | src_x | shifts[in_.below(3)], dst, b, 0, 0);
            break;
        }
        default: // 32-bit arithmetic on a register with its high half set
            emit_lddw(a, imm64());
            st_[a] = scalar();
            gen_alu_on(a, cls_alu);
            break;
        }
    }

    void gen_alu_on(int dst, uint8_t cls) {
        static constexpr uint8_t ops[] = {alu_add, alu_sub, alu_mul, alu_div, alu_or,  alu_and,
                                          alu_lsh, alu_rsh, alu_mod, alu_xor, alu_arsh};
        const uint8_t op = ops[in_.below(std::size(ops))];
        const int16_t off = (op == alu_div || op == alu_mod) ? static_cast<int16_t>(in_.bit()) : 0;
        emit(cls | src_k | op, dst, 0, off, imm32());
    }

    void gen_endian() {
        static constexpr uint8_t ops[] = {cls_alu | src_k | alu_end, cls_alu | src_x | alu_end,
                                          cls_alu64 | src_k | alu_end};
        static constexpr int32_t widths[] = {16, 32, 64};
        const uint8_t op = ops[in_.below(3)];
        emit(op, dst_scalar(), 0, 0, widths[in_.below(3)]);
    }

    void emit_lddw_any() {
        const int dst = dst_any();
        emit_lddw(dst, imm64());
        st_[dst] = scalar();
    }

    void gen_load() {
        const int base = ptr_reg(false);
        if (base < 0) {
            return;
        }
        static constexpr int64_t sizes[] = {1, 2, 4, 8};
        const int64_t n = sizes[in_.below(4)];
        const bool sx = n < 8 && in_.chance(30);
        const int16_t off = access_offset(st_[base], n, false);
        const int dst = dst_any();
        emit(cls_ldx | (sx ? mode_memsx : mode_mem) | size_code(n), dst, base, off, 0);
        st_[dst] = scalar();
    }

    void gen_store() {
        const int base = ptr_reg(true);
        if (base < 0) {
            return;
        }
        static constexpr int64_t sizes[] = {1, 2, 4, 8};
        const int64_t n = sizes[in_.below(4)];
        const int16_t off = access_offset(st_[base], n, false);
        if (in_.bit()) {
            emit(cls_st | mode_mem | size_code(n), base, 0, off, imm32());
        } else {
            const int src = in_.chance(8) ? absolute_ptr(base) : src_scalar(base);
            emit(cls_stx | mode_mem | size_code(n), base, src, off, 0);
        }
    }

    // A register pointing into the input memory, the helper buffer or the caller region (whose
    // addresses both engines share, so their values may be used as numbers), else a number.
    int absolute_ptr(int avoid) {
        const int p = pick([&](int x) { return is_ptr(st_[x].k) && st_[x].k != kind::stack; });
        return p >= 0 ? p : src_scalar(avoid);
    }

    void gen_atomic() {
        const int base = ptr_reg(true);
        if (base < 0) {
            return;
        }
        const bool wide = in_.bit();
        const int64_t n = wide ? 8 : 4;
        int32_t op = atomic_ops[in_.below(std::size(atomic_ops))];
        if (op == atomic_cmpxchg && base == 0) {
            op = atomic_add | atomic_fetch; // cmpxchg would need r0 for the comparand
        }
        const bool fetch = (op & atomic_fetch) != 0 && op != atomic_cmpxchg;
        int src = fetch ? dst_scalar(base) : src_scalar(base);
        if (st_[base].k != kind::stack && writable(base) && in_.chance(8)) {
            src = base; // the address itself as the operand (and the old value into it)
        }
        if (op == atomic_cmpxchg && st_[0].k != kind::scalar) {
            mov_imm(0, imm32());
        }
        const int16_t off = access_offset(st_[base], n, true);
        emit(cls_stx | mode_atomic | (wide ? size_dw : size_w), base, src, off, op);
        if (op == atomic_cmpxchg) {
            st_[0] = scalar();
        } else if (fetch) {
            st_[src] = scalar();
        }
    }

    // An address outside the stack as a number: copied, then arithmetic on the copy.
    void gen_address_arith() {
        const int p = pick([&](int x) { return is_ptr(st_[x].k) && st_[x].k != kind::stack; });
        if (p < 0) {
            return;
        }
        const int q = dst_any(p);
        emit(cls_alu64 | src_x | alu_mov, q, p, 0, 0);
        st_[q] = scalar();
        gen_alu_on(q, in_.bit() ? cls_alu64 : cls_alu);
    }

    void gen_pointer() {
        switch (in_.below(6)) {
        case 0: { // a copy of r10, moved somewhere in the frame
            const int q = dst_any();
            emit(cls_alu64 | src_x | alu_mov, q, frame_pointer, 0, 0);
            st_[q] = pointer(kind::stack, 0);
            if (in_.bit()) {
                const int32_t d = -static_cast<int32_t>(in_.below(520));
                emit(cls_alu64 | src_k | alu_add, q, 0, 0, d);
                st_[q].off += d;
            }
            break;
        }
        case 1: { // a copy of any pointer
            const int p = ptr_reg(false);
            const int q = dst_any(p);
            if (p >= 0) {
                emit(cls_alu64 | src_x | alu_mov, q, p, 0, 0);
                st_[q] = st_[p];
            }
            break;
        }
        case 2: { // pointer plus or minus a constant
            const int p = pick([&](int x) { return writable(x) && is_ptr(st_[x].k); });
            if (p >= 0) {
                const int32_t d = static_cast<int32_t>(in_.below(129)) - 64;
                const bool sub = in_.bit();
                emit(cls_alu64 | src_k | (sub ? alu_sub : alu_add), p, 0, 0, d);
                st_[p].off += sub ? -d : d;
            }
            break;
        }
        case 3: { // spill to the stack and fill into another register, then scrub the slot
            const int p = ptr_reg(false);
            if (p >= 0) {
                const int16_t slot =
                    static_cast<int16_t>(-8 * (1 + static_cast<int>(in_.below(64))));
                const int q = dst_any();
                emit(cls_stx | mode_mem | size_dw, frame_pointer, p, slot, 0);
                emit(cls_ldx | mode_mem | size_dw, q, frame_pointer, slot, 0);
                emit(cls_st | mode_mem | size_dw, frame_pointer, 0, slot, imm32());
                st_[q] = st_[p];
            }
            break;
        }
        case 4: { // the caller region's address as a constant
            const int q = dst_any();
            const int32_t off = static_cast<int32_t>(in_.below(extra_size + 8));
            emit_lddw(q, reinterpret_cast<uint64_t>(extra_buf) + static_cast<uint64_t>(off));
            st_[q] = pointer(kind::extra, off);
            break;
        }
        default: { // input or helper memory plus a small variable amount (same address in both
                   // engines, unlike the stack)
            const int p = pick([&](int x) {
                return writable(x) && (st_[x].k == kind::mem || st_[x].k == kind::buf);
            });
            if (p >= 0) {
                const int s = dst_scalar(p);
                emit(cls_alu64 | src_k | alu_and, s, 0, 0, 15);
                emit(cls_alu64 | src_x | alu_add, p, s, 0, 0);
            }
            break;
        }
        }
    }

    // A conditional jump on scalars to label.
    void emit_cond(size_t label) {
        const uint8_t cls = in_.bit() ? cls_jmp : cls_jmp32;
        const uint8_t op = jcond_ops[in_.below(std::size(jcond_ops))];
        const int a = src_scalar();
        if (in_.bit()) {
            emit_jump(cls | src_k | op, a, 0, imm32(), label);
        } else {
            emit_jump(cls | src_x | op, a, src_scalar(), 0, label);
        }
    }

    void gen_if(int depth) {
        const size_t else_label = new_label();
        emit_cond(else_label);
        const state before = st_;
        gen_block(depth + 1, 8);
        if (in_.chance(40)) {
            const size_t end = new_label();
            emit_goto(end);
            const state then_state = st_;
            st_ = before;
            bind(else_label);
            gen_block(depth + 1, 8);
            st_ = meet(st_, then_state);
            bind(end);
        } else {
            bind(else_label);
            st_ = meet(st_, before);
        }
    }

    // A tree of compares of one scalar with immediates close together, a small block at each
    // leaf: the shape of clang's switch, which the JIT turns back into a switch.
    void gen_switch(int depth) {
        const uint8_t cls = in_.bit() ? cls_jmp : cls_jmp32;
        const int x = src_scalar();
        const int32_t lo = static_cast<int32_t>(in_.below(64)) - 32;
        const size_t end = new_label();
        const state before = st_;
        std::optional<state> after;
        auto node = [&](auto &self, uint32_t levels) -> void {
            if (levels == 0 || f_.code.size() + 32 > limit_) {
                st_ = before;
                gen_block(depth + 1, 3);
                after = after ? meet(*after, st_) : st_;
                emit_goto(end);
                return;
            }
            const size_t right = new_label();
            const uint8_t op = jcond_ops[in_.below(std::size(jcond_ops))];
            emit_jump(cls | src_k | op, x, 0, lo + static_cast<int32_t>(in_.below(24)), right);
            self(self, levels - 1);
            bind(right);
            self(self, levels - 1);
        };
        node(node, 2 + in_.below(3));
        bind(end);
        st_ = after ? *after : before;
    }

    // ja over code that never runs.
    void gen_skip(int depth) {
        const size_t end = new_label();
        emit_goto(end);
        const state before = st_;
        gen_block(depth + 1, 4);
        bind(end);
        st_ = meet(st_, before);
    }

    // A loop: bounded by a counter in r6-r9 that the body may not write, or rarely unbounded
    // (the budget stops it). Each iteration must start from the state the body was generated
    // for: numbers and stack pointers the body changed are set again at its end; when another
    // pointer changed, the body is generated again with that register treated as unset.
    void gen_loop(int depth) {
        const bool unbounded = s_.fault_pct > 0 && in_.chance(6);
        int counter = -1;
        int32_t count = 1 + static_cast<int32_t>(in_.chance(15) ? in_.below(64) : in_.below(8));
        const bool count_up = in_.bit();
        const bool wide = in_.bit();
        if (!unbounded) {
            counter = pick([&](int x) { return x >= 6 && writable(x); });
            if (counter < 0) {
                return;
            }
            emit((wide ? cls_alu64 : cls_alu) | src_k | alu_mov, counter, 0, 0,
                 count_up ? 0 : count);
            st_[counter] = scalar();
            reserved_ |= 1u << counter;
        }
        // Often a pointer walks memory, one step per iteration, perhaps out of it: checks that
        // the JIT hoists out of loops must still catch the iteration that leaves.
        int walker = -1;
        int32_t step = 0;
        const int base = ptr_reg(false);
        if (!unbounded && base >= 0 && in_.chance(40)) {
            static constexpr int32_t steps[] = {1, 2, 3, 4, 8, 16, -1, -2, -4, -8};
            step = steps[in_.below(std::size(steps))];
            // In r6-r9, which calls in the body keep.
            walker = pick([&](int x) {
                return x >= 6 && writable(x) &&
                       !(is_ptr(st_[x].k) && st_[x].k != kind::stack && last(x));
            });
        }
        if (walker >= 0) {
            emit(cls_alu64 | src_x | alu_mov, walker, base, 0, 0);
            st_[walker] = st_[base];
            reserved_ |= 1u << walker;
        }
        state entry = st_;
        const function saved = f_;
        const size_t pos = in_.pos();
        size_t head = 0;
        for (;;) {
            head = new_label();
            bind(head);
            if (walker >= 0) {
                gen_access(walker);
            }
            gen_block(depth + 1, 10);
            uint32_t bad = 0;
            for (int r = 0; r < 10; r++) {
                if (entry[r].k == kind::none || st_[r] == entry[r]) {
                    continue;
                }
                if (entry[r].k == kind::scalar) {
                    mov_imm(r, imm32());
                } else if (entry[r].k == kind::stack) {
                    emit(cls_alu64 | src_x | alu_mov, r, frame_pointer, 0, 0);
                    if (entry[r].off != 0) {
                        emit(cls_alu64 | src_k | alu_add, r, 0, 0, entry[r].off);
                    }
                    st_[r] = entry[r];
                } else {
                    bad |= 1u << r;
                }
            }
            if (bad == 0) {
                break;
            }
            f_ = saved;
            in_.seek(pos);
            for (int r = 0; r < 10; r++) {
                if ((bad & (1u << r)) != 0) {
                    entry[r] = reg_t{};
                }
            }
            st_ = entry;
        }
        if (unbounded) {
            if (in_.bit()) {
                emit_goto(head);
            } else {
                emit_cond(head); // mostly taken; the budget stops it when it always is
            }
            return;
        }
        const uint8_t alu = wide ? cls_alu64 : cls_alu;
        const uint8_t jmp = in_.bit() ? cls_jmp : cls_jmp32;
        if (count_up) {
            if (walker >= 0) {
                emit(cls_alu64 | src_k | alu_add, walker, 0, 0, step);
            }
            emit(alu | src_k | alu_add, counter, 0, 0, 1);
            static constexpr uint8_t ops[] = {jmp_jlt, jmp_jne, jmp_jslt};
            emit_jump(jmp | src_k | ops[in_.below(3)], counter, 0, count, head);
        } else {
            if (walker >= 0) {
                emit(cls_alu64 | src_k | alu_add, walker, 0, 0, step);
            }
            if (in_.bit()) {
                emit(alu | src_k | alu_sub, counter, 0, 0, 1);
            } else {
                emit(alu | src_k | alu_add, counter, 0, 0, -1);
            }
            static constexpr uint8_t ops[] = {jmp_jne, jmp_jgt, jmp_jsgt};
            emit_jump(jmp | src_k | ops[in_.below(3)], counter, 0, 0, head);
        }
        reserved_ &= ~(1u << counter);
        if (walker >= 0) {
            reserved_ &= ~(1u << walker);
            st_[walker].off += count * step;
        }
    }

    // A load or store through base.
    void gen_access(int base) {
        static constexpr int64_t sizes[] = {1, 2, 4, 8};
        const int64_t n = sizes[in_.below(4)];
        const int16_t off = access_offset(st_[base], n, false);
        switch (in_.below(3)) {
        case 0: {
            const int dst = dst_any();
            emit(cls_ldx | (in_.bit() ? mode_memsx : mode_mem) | size_code(n), dst, base, off, 0);
            if (n == 8) { // there is no ldxsdw
                f_.code.back().opcode = cls_ldx | mode_mem | size_dw;
            }
            st_[dst] = scalar();
            break;
        }
        case 1:
            emit(cls_st | mode_mem | size_code(n), base, 0, off, imm32());
            break;
        default:
            emit(cls_stx | mode_mem | size_code(n), base, src_scalar(base), off, 0);
            break;
        }
    }

    // Sets r1-r5 for a subprogram's signature and calls it; skipped when an argument needs
    // input memory and no register points there.
    void gen_local_call() {
        if (no_calls_) {
            return;
        }
        save_pointers();
        const size_t nfn = sigs_.size() + 1;
        if (cur_ + 1 >= nfn && rec_ < 0) {
            return;
        }
        size_t callee = cur_ + 1 + in_.below(static_cast<uint32_t>(nfn - cur_ - 1));
        if (cur_ + 1 >= nfn || (rec_ >= 0 && in_.chance(30))) {
            callee = static_cast<size_t>(rec_);
        }
        if (static_cast<int>(callee) == rec_) {
            // The recursion depth: 7 and more exceed the frame limit from main.
            mov_imm(1, static_cast<int32_t>(faulty() ? in_.below(12) : in_.below(4)));
        } else {
            const std::array<reg_t, 5> &sig = sigs_[callee - 1];
            for (int r = 5; r >= 1; r--) {
                const reg_t &want = sig[r - 1];
                if (want.k == kind::scalar) {
                    if (st_[r].k != kind::scalar || in_.chance(30)) {
                        mov_imm(r, imm32());
                    }
                } else if (want.k == kind::stack) {
                    emit(cls_alu64 | src_x | alu_mov, r, frame_pointer, 0, 0);
                    emit(cls_alu64 | src_k | alu_add, r, 0, 0,
                         want.off - static_cast<int32_t>(stack_frame_size));
                    st_[r] =
                        pointer(kind::stack, want.off - static_cast<int32_t>(stack_frame_size));
                } else if (want.k == kind::mem) {
                    const int m = pick([&](int x) { return st_[x].k == kind::mem; });
                    if (m < 0) {
                        return;
                    }
                    if (m != r) {
                        emit(cls_alu64 | src_x | alu_mov, r, m, 0, 0);
                    }
                    emit(cls_alu64 | src_k | alu_add, r, 0, 0, want.off - st_[m].off);
                    st_[r] = want;
                }
            }
        }
        f_.calls.push_back({f_.code.size(), callee});
        emit(op_call, 0, call_local, 0, 0);
        after_call(scalar());
    }

    // Calls clobber r1-r5, so a pointer into memory other than the stack that only they hold
    // usually moves to a free r6-r9 first.
    void save_pointers() {
        for (int r = 1; r <= 5; r++) {
            const kind k = st_[r].k;
            if (!is_ptr(k) || k == kind::stack) {
                continue;
            }
            bool kept = false;
            for (int x : {0, 6, 7, 8, 9}) {
                kept = kept || st_[x].k == k;
            }
            if (kept || !in_.chance(80)) {
                continue;
            }
            const int to = pick([&](int x) {
                return x >= 6 && writable(x) &&
                       !(is_ptr(st_[x].k) && st_[x].k != kind::stack && last(x));
            });
            if (to >= 0) {
                emit(cls_alu64 | src_x | alu_mov, to, r, 0, 0);
                st_[to] = st_[r];
            }
        }
    }

    void after_call(reg_t r0) {
        st_[0] = r0;
        for (int r = 1; r <= 5; r++) {
            st_[r] = reg_t{};
        }
    }

    // if r1 > 0 { r1 -= 1; work that keeps r1; call self; more work } exit
    void gen_recursive_body() {
        const size_t base = new_label();
        static constexpr uint8_t ops[] = {jmp_jsle, jmp_jeq, jmp_jle};
        emit_jump((in_.bit() ? cls_jmp : cls_jmp32) | src_k | ops[in_.below(3)], 1, 0, 0, base);
        const state entry = st_;
        emit(cls_alu64 | src_k | alu_add, 1, 0, 0, -1);
        reserved_ = 1u << 1;
        no_calls_ = true;
        gen_block(1, 6);
        reserved_ = 0;
        no_calls_ = false;
        f_.calls.push_back({f_.code.size(), cur_});
        emit(op_call, 0, call_local, 0, 0);
        after_call(scalar());
        gen_block(1, 6);
        bind(base);
        st_ = meet(st_, entry);
        finish_exit();
    }

    // A helper call by id or through callx, with its arguments set up.
    void gen_helper() {
        if (no_calls_) {
            return;
        }
        save_pointers();
        static constexpr int32_t ids[] = {id_mix, id_region, id_maybe_fail, id_sum, id_fill};
        const int32_t id = ids[in_.below(std::size(ids))];
        reg_t result = scalar();
        switch (id) {
        case id_mix:
            for (int r = 1; r <= 5; r++) {
                if (st_[r].k != kind::scalar || in_.chance(30)) {
                    mov_imm(r, imm32());
                }
            }
            break;
        case id_region: {
            const int32_t start = static_cast<int32_t>(
                in_.chance(90) ? in_.below(helper_buf_size) : in_.below(4 * helper_buf_size));
            const int32_t len =
                static_cast<int32_t>(faulty() ? in_.below(1024) : 1 + in_.below(64));
            const bool w = in_.chance(75);
            mov_imm(1, start);
            mov_imm(2, len);
            mov_imm(3, w);
            const int32_t off = start % helper_buf_size;
            result =
                reg_t{kind::buf, off, off,
                      off + static_cast<int32_t>(std::min<int64_t>(len, helper_buf_size - off)), w};
            break;
        }
        case id_maybe_fail:
            if (faulty()) {
                mov_imm(1, 0x42 | static_cast<int32_t>(in_.u8() << 8));
            } else if (st_[1].k != kind::scalar || in_.chance(30)) {
                mov_imm(1, imm32());
            }
            break;
        default: { // sum, fill: a pointer and a length
            const int p = ptr_reg(id == id_fill, cur_ == 0 || s_.helper_stack_in_call);
            if (p < 0) {
                return;
            }
            const reg_t ptr = st_[p];
            if (p != 1) {
                emit(cls_alu64 | src_x | alu_mov, 1, p, 0, 0);
            }
            st_[1] = ptr;
            auto [lo, hi] = region(ptr);
            int64_t len = hi - ptr.off;
            if (len <= 0 || in_.chance(20)) {
                len = in_.below(600);
            } else {
                len = in_.below(static_cast<uint32_t>(len + 1));
            }
            (void)lo;
            mov_imm(2, static_cast<int32_t>(len));
            if (id == id_fill) {
                mov_imm(3, imm32());
            }
            break;
        }
        }
        if (in_.chance(30)) {
            // callx: the id in r0 or a free r6-r9, now and then an unknown id or a known one
            // with high bits set (callx looks at the low 32 bits)
            int r = pick([&](int x) { return x == 0 || (x >= 6 && writable(x)); });
            uint64_t v = static_cast<uint32_t>(id);
            if (faulty()) {
                v = static_cast<uint32_t>(in_.bit() ? id_unknown : -1);
            } else if (in_.chance(5)) {
                v |= 1ull << 32;
            }
            if (v > 0x7fffffff) {
                emit_lddw(r, v);
            } else {
                mov_imm(r, static_cast<int32_t>(v));
            }
            emit(op_callx, r, 0, 0, 0);
        } else {
            emit(op_call, 0, call_helper, 0, id);
        }
        after_call(result);
    }

    byte_source &in_;
    setup s_;
    std::vector<std::array<reg_t, 5>> sigs_;
    int rec_ = -1; // function index of the recursive subprogram
    size_t cur_ = 0;
    function f_;
    state st_{};
    uint32_t reserved_ = 0; // registers the current code may not write (loop counters)
    bool no_calls_ = false;
    size_t limit_ = 0; // soft slot limit of the current function
};

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

struct inputs {
    std::vector<uint8_t> mem;
    std::array<uint8_t, helper_buf_size> buf;
    std::array<uint8_t, extra_size> extra;
    bool mem_writable = true;
    bool extra_writable = true;
    uint64_t budget = 20000;
};

__attribute__((noinline)) outcome run_once(engine &e, const inputs &in, uint8_t *mem) {
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
    ro.executed = &o.executed;
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
__attribute__((noinline)) outcome run_padded(engine &e, const inputs &in, uint8_t *mem,
                                             size_t pad) {
    auto *p = static_cast<volatile uint8_t *>(alloca(pad));
    p[0] = 0;
    return run_once(e, in, mem);
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

// The unchecked JIT counts no instructions; the rest must agree.
std::string compare_unchecked(const outcome &in, outcome jit) {
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
// BPFTIME_DIFF_AVOID: known differences the generator leaves out (see setup).
bool avoid_helper_stack_in_call = false;

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

// Pseudo-random bytes from a seed (xorshift32), so buffers cost the input four bytes.
template <class C>
void fill(C &bytes, uint32_t seed) {
    uint32_t x = seed | 1;
    for (uint8_t &b : bytes) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b = static_cast<uint8_t>(x);
    }
}

[[noreturn]] void report(const std::vector<ebpf_inst> &insns, const inputs &in,
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
        avoid_helper_stack_in_call = std::strstr(a, "helper-stack-in-call") != nullptr;
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
    byte_source src(data, size);
    inputs in;
    const uint8_t flags = src.u8();
    static constexpr unsigned fault_rates[] = {0, 0, 0, 0, 2, 5, 10, 25};
    const unsigned fault_pct = fault_rates[flags & 7];
    in.mem_writable = fault_pct == 0 || (flags & 0x18) != 0; // rarely read-only
    in.extra_writable = (flags & 0x20) != 0;
    in.mem.resize(src.below(65));
    for (uint8_t &b : in.mem) {
        b = src.u8();
    }
    const uint32_t seed = src.u32();
    fill(in.buf, seed);
    fill(in.extra, seed + 1);

    setup s;
    s.fault_pct = fault_pct;
    s.mem_len = static_cast<int64_t>(in.mem.size());
    s.mem_writable = in.mem_writable;
    s.extra_writable = in.extra_writable;
    s.helper_stack_in_call = !avoid_helper_stack_in_call;
    std::vector<ebpf_inst> insns = generator(src, s).generate();
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
        inputs v = in;
        if (variant >= 4) {
            if (n == 0) {
                break;
            }
            v.budget = variant == 4 ? n : variant == 5 ? n - 1 : seed % n;
        } else if (variant > 0) {
            fill(v.mem, seed + static_cast<uint32_t>(variant) * 7919);
            fill(v.buf, seed + static_cast<uint32_t>(variant) * 104729);
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
            const outcome b = run_padded(*o.eng, v, mem.data(), 16 + 64 * (1 + (flags >> 6)));
            if (verbose) {
                std::fprintf(stderr, "%s: %s\n", o.name.c_str(), describe(b).c_str());
            }
            if (std::string d = compare(a, b); !d.empty()) {
                report(insns, v, o.name + ": " + d, &a, &b);
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
        if (std::string d = compare_unchecked(a, b); !d.empty()) {
            report(insns, in, std::string("unchecked jit (") + jit_tier_name(eo.tier) + "): " + d,
                   &a, &b);
        }
    }
    return 0;
}

// SPDX-License-Identifier: MIT
// The generator's frame: the program's layout, emission, operand values, the choice of
// registers and of memory offsets, and the blocks everything else is placed in.
#include "generator.hpp"
#include "program_generator.hpp"

#include <iterator>

namespace bpftime::fuzz {
namespace gen {

using namespace bpftime::vm;

std::vector<ebpf_inst> generator::generate() {
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

// ---- emission

void generator::emit(uint8_t opcode, int dst, int src, int64_t off, int64_t imm) {
    ebpf_inst i;
    i.opcode = opcode;
    i.dst = static_cast<uint8_t>(dst & 0xf);
    i.src = static_cast<uint8_t>(src & 0xf);
    i.offset = static_cast<int16_t>(off);
    i.imm = static_cast<int32_t>(imm);
    f_.code.push_back(i);
}

void generator::emit_lddw(int dst, uint64_t v) {
    emit(op_lddw, dst, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v)));
    emit(0, 0, 0, 0, static_cast<int32_t>(static_cast<uint32_t>(v >> 32)));
}

size_t generator::new_label() {
    f_.labels.push_back(-1);
    return f_.labels.size() - 1;
}

void generator::emit_jump(uint8_t opcode, int dst, int src, int64_t imm, size_t label) {
    f_.jumps.push_back({f_.code.size(), label, false});
    emit(opcode, dst, src, 0, imm);
}

// ja or ja32 (gotol).
void generator::emit_goto(size_t label) {
    const bool wide = in_.bit();
    f_.jumps.push_back({f_.code.size(), label, wide});
    emit(wide ? op_ja32 : op_ja, 0, 0, 0, 0);
}

// ---- values

int32_t generator::imm32() {
    static constexpr int32_t special[] = {
        0,      1,       -1,        2,         7,    8,      15,         16,         31,     32,
        33,     63,      64,        65,        0x7f, 0x80,   0xff,       0x100,      0x7fff, 0x8000,
        0xffff, 0x10000, INT32_MAX, INT32_MIN, -2,   -32768, 0x55555555, -0x55555556};
    switch (in_.below(4)) {
    case 0:
        return static_cast<int32_t>(in_.below(17));
    case 1:
        return static_cast<int32_t>(in_.u32());
    default:
        return special[in_.below(std::size(special))];
    }
}

uint64_t generator::imm64() {
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

int32_t generator::divisor() {
    static constexpr int32_t special[] = {0, -1, 1, INT32_MIN, INT32_MAX, 2, -2, 3, 7, 0x10000};
    return in_.bit() ? special[in_.below(std::size(special))] : imm32();
}

int32_t generator::shift_amount() {
    static constexpr int32_t special[] = {0, 1, 31, 32, 33, 63, 64, 65, 127, 255, -1, 0x100};
    return in_.bit() ? special[in_.below(std::size(special))] : imm32();
}

// ---- registers

// A register to overwrite; rarely the last one pointing into the input memory, the helper
// buffer or the caller region (the stack stays reachable through r10).
int generator::dst_any(int avoid) {
    int r = pick([&](int x) { return writable(x) && x != avoid; });
    if (r >= 0 && is_ptr(st_[r].k) && in_.chance(st_[r].k != kind::stack && last(r) ? 95 : 50)) {
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

bool generator::last(int r) const {
    for (int x = 0; x < 10; x++) {
        if (x != r && st_[x].k == st_[r].k) {
            return false;
        }
    }
    return true;
}

void generator::mov_imm(int r, int32_t v) {
    emit(cls_alu64 | src_k | alu_mov, r, 0, 0, v);
    st_[r] = scalar();
}

// A scalar register the current code may write; sets one when there is none.
int generator::dst_scalar(int avoid) {
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
int generator::src_scalar(int avoid) {
    int r = pick([&](int x) { return x != avoid && st_[x].k == kind::scalar; });
    if (r < 0 || in_.chance(15)) {
        r = dst_any(avoid);
        mov_imm(r, imm32());
    }
    return r;
}

// Any pointer register, r10 included; for a store mostly one to writable memory.
int generator::ptr_reg(bool for_write, bool stack) {
    auto ok = [&](int x) { return is_ptr(st_[x].k) && (stack || st_[x].k != kind::stack); };
    if (for_write && !faulty()) {
        return pick([&](int x) { return ok(x) && region_writable(st_[x]); }, frame_pointer);
    }
    return pick(ok, frame_pointer);
}

// ---- memory

// The memory a pointer's kind may reach, in its coordinates.
std::pair<int64_t, int64_t> generator::region(const reg_t &p) const {
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

bool generator::region_writable(const reg_t &p) const {
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
int16_t generator::access_offset(const reg_t &p, int64_t n, bool atomic) {
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

state generator::meet(const state &a, const state &b) {
    state out;
    for (size_t r = 0; r < register_count; r++) {
        out[r] = a[r] == b[r] ? a[r] : reg_t{};
    }
    return out;
}

// ---- program structure

std::array<reg_t, 5> generator::random_signature() {
    std::array<reg_t, 5> args{};
    const uint32_t nargs = in_.below(6);
    for (uint32_t i = 0; i < nargs; i++) {
        switch (in_.below(5)) {
        case 0: // into the caller's frame: +512 from the callee's r10
            args[i] = pointer(kind::stack, static_cast<int32_t>(in_.below(512)));
            break;
        case 1:
            args[i] = pointer(
                kind::mem, static_cast<int32_t>(in_.below(static_cast<uint32_t>(s_.mem_len + 1))));
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
void generator::finish_exit() {
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

void generator::gen_block(int depth, uint32_t max_items) {
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

} // namespace gen

generated_case generate_case(const uint8_t *data, size_t size, const generator_options &options) {
    gen::byte_source src(data, size);
    generated_case c;
    run_inputs &in = c.inputs;
    c.flags = src.u8();
    static constexpr unsigned fault_rates[] = {0, 0, 0, 0, 2, 5, 10, 25};
    const unsigned fault_pct = fault_rates[c.flags & 7];
    in.mem_writable = fault_pct == 0 || (c.flags & 0x18) != 0; // rarely read-only
    in.extra_writable = (c.flags & 0x20) != 0;
    in.mem.resize(src.below(65));
    for (uint8_t &b : in.mem) {
        b = src.u8();
    }
    c.seed = src.u32();
    fill_bytes(in.buf, c.seed);
    fill_bytes(in.extra, c.seed + 1);

    gen::setup s;
    s.fault_pct = fault_pct;
    s.mem_len = static_cast<int64_t>(in.mem.size());
    s.mem_writable = in.mem_writable;
    s.extra_writable = in.extra_writable;
    s.helper_stack_in_call = options.helper_stack_in_call;
    c.program = gen::generator(src, s).generate();
    return c;
}

} // namespace bpftime::fuzz

// SPDX-License-Identifier: MIT
// Inside the program generator: the byte source, the register states and the generator class,
// whose members are defined in generator.cpp (program layout, operands, registers, memory),
// straight_line.cpp (arithmetic, loads, stores, atomics, pointers) and control_flow.cpp
// (branches, loops, calls, helpers).
//
// Every choice reads the byte source, so the order of the reads is the meaning of an input:
// where one expression makes two choices, they are made in separate statements, in the order
// the expression's operands read.
#pragma once

#include "host.hpp"

#include <bpftime/vm/isa.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace bpftime::fuzz::gen {

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

inline bool is_ptr(kind k) {
    return k >= kind::stack;
}

inline reg_t scalar() {
    return reg_t{kind::scalar};
}

inline reg_t pointer(kind k, int32_t off) {
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
    // Off to fuzz past a known difference (generator_options): stack pointers handed to
    // helpers from subprograms.
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
    std::vector<vm::ebpf_inst> code;
    std::vector<int64_t> labels; // slot of each label, -1 until bound
    std::vector<jump_fixup> jumps;
    std::vector<call_fixup> calls;
};

using state = std::array<reg_t, vm::register_count>;

class generator {
public:
    generator(byte_source &in, const setup &s) : in_(in), s_(s) {}

    // The whole program: main, then its subprograms, jumps and calls resolved.
    std::vector<vm::ebpf_inst> generate();

private:
    // ---- emission (generator.cpp)
    void emit(uint8_t opcode, int dst, int src, int64_t off, int64_t imm);
    void emit_lddw(int dst, uint64_t v);
    size_t new_label();
    void bind(size_t label) { f_.labels[label] = static_cast<int64_t>(f_.code.size()); }
    void emit_jump(uint8_t opcode, int dst, int src, int64_t imm, size_t label);
    void emit_goto(size_t label);

    // ---- values (generator.cpp)
    int32_t imm32();
    uint64_t imm64();
    int32_t divisor();
    int32_t shift_amount();
    bool faulty() { return in_.chance(s_.fault_pct); }

    // ---- registers (generator.cpp)
    bool writable(int r) const { return r >= 0 && r < 10 && (reserved_ & (1u << r)) == 0; }

    // A register for which pred holds, among r0..last; -1 when there is none.
    template <class Pred>
    int pick(Pred pred, int last = 9) {
        int cand[vm::register_count];
        int n = 0;
        for (int r = 0; r <= last; r++) {
            if (pred(r)) {
                cand[n++] = r;
            }
        }
        return n == 0 ? -1 : cand[in_.below(static_cast<uint32_t>(n))];
    }

    int dst_any(int avoid = -1);
    bool last(int r) const;
    void mov_imm(int r, int32_t v);
    int dst_scalar(int avoid = -1);
    int src_scalar(int avoid = -1);
    int ptr_reg(bool for_write, bool stack = true);

    // ---- memory (generator.cpp)
    std::pair<int64_t, int64_t> region(const reg_t &p) const;
    bool region_writable(const reg_t &p) const;
    int16_t access_offset(const reg_t &p, int64_t n, bool atomic);
    static state meet(const state &a, const state &b);

    // ---- program structure (generator.cpp)
    std::array<reg_t, 5> random_signature();
    void finish_exit();
    void gen_block(int depth, uint32_t max_items);

    // ---- straight-line code (straight_line.cpp)
    void gen_alu();
    void gen_corner();
    void gen_alu_on(int dst, uint8_t cls);
    void gen_endian();
    void emit_lddw_any();
    void gen_load();
    void gen_store();
    int absolute_ptr(int avoid);
    void gen_atomic();
    void gen_address_arith();
    void gen_pointer();
    void gen_access(int base);

    // ---- control flow and calls (control_flow.cpp)
    void emit_cond(size_t label);
    void gen_if(int depth);
    void gen_switch(int depth);
    void gen_skip(int depth);
    void gen_loop(int depth);
    void gen_local_call();
    void save_pointers();
    void after_call(reg_t r0);
    void gen_recursive_body();
    void gen_helper();

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

} // namespace bpftime::fuzz::gen

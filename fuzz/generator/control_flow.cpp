// SPDX-License-Identifier: MIT
// Control flow and calls: if/else, compare trees in the shape of clang's switch, jumps over
// dead code, loops (bounded by a counter, or by the budget), calls of subprograms (a recursive
// one among them) and of helpers, with their arguments set up.
#include "generator.hpp"

#include <algorithm>
#include <iterator>
#include <optional>

namespace bpftime::fuzz::gen {

using namespace bpftime::vm;

namespace {

constexpr uint8_t jcond_ops[] = {jmp_jeq,  jmp_jgt, jmp_jge, jmp_jset, jmp_jne, jmp_jsgt,
                                 jmp_jsge, jmp_jlt, jmp_jle, jmp_jslt, jmp_jsle};

} // namespace

// A conditional jump on scalars to label.
void generator::emit_cond(size_t label) {
    const uint8_t cls = in_.bit() ? cls_jmp : cls_jmp32;
    const uint8_t op = jcond_ops[in_.below(std::size(jcond_ops))];
    const int a = src_scalar();
    if (in_.bit()) {
        emit_jump(cls | src_k | op, a, 0, imm32(), label);
    } else {
        emit_jump(cls | src_x | op, a, src_scalar(), 0, label);
    }
}

void generator::gen_if(int depth) {
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
void generator::gen_switch(int depth) {
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
void generator::gen_skip(int depth) {
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
void generator::gen_loop(int depth) {
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
        emit((wide ? cls_alu64 : cls_alu) | src_k | alu_mov, counter, 0, 0, count_up ? 0 : count);
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

// Sets r1-r5 for a subprogram's signature and calls it; skipped when an argument needs
// input memory and no register points there.
void generator::gen_local_call() {
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
                st_[r] = pointer(kind::stack, want.off - static_cast<int32_t>(stack_frame_size));
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
void generator::save_pointers() {
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

void generator::after_call(reg_t r0) {
    st_[0] = r0;
    for (int r = 1; r <= 5; r++) {
        st_[r] = reg_t{};
    }
}

// if r1 > 0 { r1 -= 1; work that keeps r1; call self; more work } exit
void generator::gen_recursive_body() {
    const size_t base = new_label();
    static constexpr uint8_t ops[] = {jmp_jsle, jmp_jeq, jmp_jle};
    const uint8_t cls = in_.bit() ? cls_jmp : cls_jmp32; // before the operation (generator.hpp)
    emit_jump(cls | src_k | ops[in_.below(3)], 1, 0, 0, base);
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
void generator::gen_helper() {
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
        const int32_t start = static_cast<int32_t>(in_.chance(90) ? in_.below(helper_buf_size)
                                                                  : in_.below(4 * helper_buf_size));
        const int32_t len = static_cast<int32_t>(faulty() ? in_.below(1024) : 1 + in_.below(64));
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

} // namespace bpftime::fuzz::gen

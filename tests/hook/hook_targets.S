# Functions with known prologues for the inline hook tests (x86-64 SysV).
        .intel_syntax noprefix

        .data
        .p2align 3
        .globl hk_data
hk_data:
        .quad 1000

        .text

# long hk_riprel(long x): hk_data + x; starts with a RIP-relative lea (7 bytes).
        .globl hk_riprel
        .type hk_riprel, @function
        .p2align 4
hk_riprel:
        lea rax, [rip + hk_data]
        mov rax, [rax]
        add rax, rdi
        ret
        .size hk_riprel, . - hk_riprel

# long hk_riprel_mov(long x): hk_data * x; starts with a RIP-relative mov.
        .globl hk_riprel_mov
        .type hk_riprel_mov, @function
        .p2align 4
hk_riprel_mov:
        mov rax, qword ptr [rip + hk_data]
        imul rax, rdi
        ret
        .size hk_riprel_mov, . - hk_riprel_mov

# int hk_jcc(int x): x <= 0 ? -1 : 2 * x; a short jcc within the first 5 bytes.
        .globl hk_jcc
        .type hk_jcc, @function
        .p2align 4
hk_jcc:
        test edi, edi
        jle 1f
        lea eax, [rdi + rdi]
        ret
1:      mov eax, -1
        ret
        .size hk_jcc, . - hk_jcc

# long hk_jrcxz(long a, long b, long c, long d): d == 0 ? -1 : a + 1; starts with jrcxz,
# which has no 32-bit form.
        .globl hk_jrcxz
        .type hk_jrcxz, @function
        .p2align 4
hk_jrcxz:
        jrcxz 1f
        lea rax, [rdi + 1]
        ret
1:      mov rax, -1
        ret
        .size hk_jrcxz, . - hk_jrcxz

# long hk_call(long x): 3 * x + 1; starts with a call rel32.
        .globl hk_call
        .type hk_call, @function
        .p2align 4
hk_call:
        call hk_triple
        add rax, 1
        ret
        .size hk_call, . - hk_call

# long hk_triple(long x): 3 * x.
        .globl hk_triple
        .type hk_triple, @function
        .p2align 4
hk_triple:
        mov rax, rdi
        add rax, rdi
        add rax, rdi
        ret
        .size hk_triple, . - hk_triple

# unsigned long hk_fact(unsigned long n): n!, recursive.
        .globl hk_fact
        .type hk_fact, @function
        .p2align 4
hk_fact:
        cmp rdi, 1
        jbe 1f
        push rdi
        dec rdi
        call hk_fact
        pop rdi
        imul rax, rdi
        ret
1:      mov eax, 1
        ret
        .size hk_fact, . - hk_fact

# struct { rsp, return address } hk_where(void): the stack pointer at entry and [rsp].
        .globl hk_where
        .type hk_where, @function
        .p2align 4
hk_where:
        mov rax, rsp
        mov rdx, [rsp]
        ret
        .size hk_where, . - hk_where

# unsigned long hk_flags_after_stc(void): calls hk_flags with known flags (ZF, PF and CF set).
        .globl hk_flags_after_stc
        .type hk_flags_after_stc, @function
        .p2align 4
hk_flags_after_stc:
        xor eax, eax
        stc
        call hk_flags
        ret
        .size hk_flags_after_stc, . - hk_flags_after_stc

# two_words hk_flags_around(unsigned long flags): calls hk_flags with these flags (set by
# popfq), then returns the flags hk_flags saw at entry and the flags after it returned.
        .globl hk_flags_around
        .type hk_flags_around, @function
        .p2align 4
hk_flags_around:
        push rdi
        popfq
        call hk_flags
        pushfq
        pop rdx
        cld
        ret
        .size hk_flags_around, . - hk_flags_around

# unsigned long hk_flags(void): the flags at entry.
        .globl hk_flags
        .type hk_flags, @function
        .p2align 4
hk_flags:
        pushfq
        pop rax
        nop
        nop
        nop
        ret
        .size hk_flags, . - hk_flags

# int hk_park(const volatile char *flag): spins while *flag != 0, then returns 7. The loop
# lies inside the 5 replaced bytes, so a thread is always between them or at their start.
        .globl hk_park
        .type hk_park, @function
        .p2align 4
hk_park:
1:      cmp byte ptr [rdi], 0
        jne 1b
        mov eax, 7
        ret
        .size hk_park, . - hk_park

# long hk_tiny(void): 0; a 2-byte tail jump (to hk_short) followed by int3 padding.
        .globl hk_tiny
        .type hk_tiny, @function
        .p2align 4
hk_tiny:
        jmp .Lshort # a local label: a 2-byte jump with every assembler
        .size hk_tiny, . - hk_tiny
        .fill 14, 1, 0xcc

# long hk_short(void): 0; 3 bytes, then int3 padding.
        .globl hk_short
        .type hk_short, @function
        .p2align 4
hk_short:
.Lshort:
        xor eax, eax
        ret
        .size hk_short, . - hk_short
        .fill 13, 1, 0xcc

        .section .note.GNU-stack, "", @progbits

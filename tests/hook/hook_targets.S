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

# long hk_lea4(long x): x + 1 in 4 bytes (lea; ret): too short for a 5-byte jump.
        .globl hk_lea4
        .type hk_lea4, @function
        .p2align 4
hk_lea4:
        lea eax, [rdi + 1]
        ret
        .size hk_lea4, . - hk_lea4
        .fill 12, 1, 0xcc

# long hk_loopback(long n): 1 + 2 + .. + n; its loop branches back to offset 2, inside the
# first 5 bytes. hk_loopback_size holds its size, as a symbol table gives it.
        .globl hk_loopback
        .type hk_loopback, @function
        .p2align 4
hk_loopback:
        xor eax, eax
1:      add rax, rdi
        dec rdi
        jg 1b
        ret
.Lloopback_end:
        .size hk_loopback, . - hk_loopback

        .section .rodata
        .p2align 3
        .globl hk_loopback_size
hk_loopback_size:
        .quad .Lloopback_end - hk_loopback
        .text

        .section .note.GNU-stack, "", @progbits

# long hk_clobber(long x): x + 1, using (and restoring) the callee-saved rbx and r12.
        .text
        .globl hk_clobber
        .type hk_clobber, @function
        .p2align 4
hk_clobber:
        push rbx
        push r12
        mov rbx, -1
        mov r12, -1
        lea rax, [rdi + 1]
        pop r12
        pop rbx
        ret
        .size hk_clobber, . - hk_clobber

# two_words hk_checked_call(long (*fn)(long), long x): calls fn(x) with known values in rbx,
# rbp and r12-r14 and the stack pointer kept in r15; returns fn's result and the bits that
# differ afterwards in any of them (0: every callee-saved register and rsp came back).
        .globl hk_checked_call
        .type hk_checked_call, @function
        .p2align 4
hk_checked_call:
        push rbx
        push rbp
        push r12
        push r13
        push r14
        push r15
        sub rsp, 8
        mov rax, rdi
        mov rdi, rsi
        movabs rbx, 0x1111111111111111
        movabs rbp, 0x2222222222222222
        movabs r12, 0x3333333333333333
        movabs r13, 0x4444444444444444
        movabs r14, 0x5555555555555555
        mov r15, rsp
        call rax
        xor edx, edx
        movabs rcx, 0x1111111111111111
        xor rcx, rbx
        or rdx, rcx
        movabs rcx, 0x2222222222222222
        xor rcx, rbp
        or rdx, rcx
        movabs rcx, 0x3333333333333333
        xor rcx, r12
        or rdx, rcx
        movabs rcx, 0x4444444444444444
        xor rcx, r13
        or rdx, rcx
        movabs rcx, 0x5555555555555555
        xor rcx, r14
        or rdx, rcx
        mov rcx, rsp
        xor rcx, r15
        or rdx, rcx
        add rsp, 8
        pop r15
        pop r14
        pop r13
        pop r12
        pop rbp
        pop rbx
        ret
        .size hk_checked_call, . - hk_checked_call

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


# Vector state live across a probed point. Each keeps values in registers from its loads to its
# stores; a hook at the point (hk_*_point) runs its handler between the two.

# void hk_avx_mid(const void *in, void *out): ymm0-15 from in (512 bytes), the point, ymm0-15
# to out.
        .globl hk_avx_mid
        .type hk_avx_mid, @function
        .globl hk_avx_mid_point
        .p2align 4
hk_avx_mid:
        vmovdqu ymm0, [rdi + 0]
        vmovdqu ymm1, [rdi + 32]
        vmovdqu ymm2, [rdi + 64]
        vmovdqu ymm3, [rdi + 96]
        vmovdqu ymm4, [rdi + 128]
        vmovdqu ymm5, [rdi + 160]
        vmovdqu ymm6, [rdi + 192]
        vmovdqu ymm7, [rdi + 224]
        vmovdqu ymm8, [rdi + 256]
        vmovdqu ymm9, [rdi + 288]
        vmovdqu ymm10, [rdi + 320]
        vmovdqu ymm11, [rdi + 352]
        vmovdqu ymm12, [rdi + 384]
        vmovdqu ymm13, [rdi + 416]
        vmovdqu ymm14, [rdi + 448]
        vmovdqu ymm15, [rdi + 480]
hk_avx_mid_point:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1) # 5 bytes: what the hook's jump replaces
        vmovdqu [rsi + 0], ymm0
        vmovdqu [rsi + 32], ymm1
        vmovdqu [rsi + 64], ymm2
        vmovdqu [rsi + 96], ymm3
        vmovdqu [rsi + 128], ymm4
        vmovdqu [rsi + 160], ymm5
        vmovdqu [rsi + 192], ymm6
        vmovdqu [rsi + 224], ymm7
        vmovdqu [rsi + 256], ymm8
        vmovdqu [rsi + 288], ymm9
        vmovdqu [rsi + 320], ymm10
        vmovdqu [rsi + 352], ymm11
        vmovdqu [rsi + 384], ymm12
        vmovdqu [rsi + 416], ymm13
        vmovdqu [rsi + 448], ymm14
        vmovdqu [rsi + 480], ymm15
        vzeroupper
        ret
        .size hk_avx_mid, . - hk_avx_mid

# void hk_avx512_mid(const void *in, void *out): zmm16-31 from in (1024 bytes) and k1-k7 from
# its 1024..1037 (7 words), the point, the same to out.
        .globl hk_avx512_mid
        .type hk_avx512_mid, @function
        .globl hk_avx512_mid_point
        .p2align 4
hk_avx512_mid:
        vmovdqu64 zmm16, [rdi + 0]
        vmovdqu64 zmm17, [rdi + 64]
        vmovdqu64 zmm18, [rdi + 128]
        vmovdqu64 zmm19, [rdi + 192]
        vmovdqu64 zmm20, [rdi + 256]
        vmovdqu64 zmm21, [rdi + 320]
        vmovdqu64 zmm22, [rdi + 384]
        vmovdqu64 zmm23, [rdi + 448]
        vmovdqu64 zmm24, [rdi + 512]
        vmovdqu64 zmm25, [rdi + 576]
        vmovdqu64 zmm26, [rdi + 640]
        vmovdqu64 zmm27, [rdi + 704]
        vmovdqu64 zmm28, [rdi + 768]
        vmovdqu64 zmm29, [rdi + 832]
        vmovdqu64 zmm30, [rdi + 896]
        vmovdqu64 zmm31, [rdi + 960]
        kmovw k1, [rdi + 1024]
        kmovw k2, [rdi + 1026]
        kmovw k3, [rdi + 1028]
        kmovw k4, [rdi + 1030]
        kmovw k5, [rdi + 1032]
        kmovw k6, [rdi + 1034]
        kmovw k7, [rdi + 1036]
hk_avx512_mid_point:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1)
        vmovdqu64 [rsi + 0], zmm16
        vmovdqu64 [rsi + 64], zmm17
        vmovdqu64 [rsi + 128], zmm18
        vmovdqu64 [rsi + 192], zmm19
        vmovdqu64 [rsi + 256], zmm20
        vmovdqu64 [rsi + 320], zmm21
        vmovdqu64 [rsi + 384], zmm22
        vmovdqu64 [rsi + 448], zmm23
        vmovdqu64 [rsi + 512], zmm24
        vmovdqu64 [rsi + 576], zmm25
        vmovdqu64 [rsi + 640], zmm26
        vmovdqu64 [rsi + 704], zmm27
        vmovdqu64 [rsi + 768], zmm28
        vmovdqu64 [rsi + 832], zmm29
        vmovdqu64 [rsi + 896], zmm30
        vmovdqu64 [rsi + 960], zmm31
        kmovw [rsi + 1024], k1
        kmovw [rsi + 1026], k2
        kmovw [rsi + 1028], k3
        kmovw [rsi + 1030], k4
        kmovw [rsi + 1032], k5
        kmovw [rsi + 1034], k6
        kmovw [rsi + 1036], k7
        vzeroupper
        ret
        .size hk_avx512_mid, . - hk_avx512_mid

# void hk_x87_mid(const long double *in, long double *out, unsigned *mxcsr): st0-2 from in,
# the point, st0-2 to out (in the order loaded) and MXCSR to mxcsr.
        .globl hk_x87_mid
        .type hk_x87_mid, @function
        .globl hk_x87_mid_point
        .p2align 4
hk_x87_mid:
        fld tbyte ptr [rdi + 32]
        fld tbyte ptr [rdi + 16]
        fld tbyte ptr [rdi]
hk_x87_mid_point:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1)
        fstp tbyte ptr [rsi]
        fstp tbyte ptr [rsi + 16]
        fstp tbyte ptr [rsi + 32]
        stmxcsr [rdx]
        ret
        .size hk_x87_mid, . - hk_x87_mid

# void hk_avx_args(void *out, __m256 a0..a7 in ymm0-7): stores ymm0-7 to out (256 bytes); a
# hook at its entry sees them live. The 5-byte nop makes room for the jump.
        .globl hk_avx_args
        .type hk_avx_args, @function
        .p2align 4
hk_avx_args:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1)
        vmovdqu [rdi + 0], ymm0
        vmovdqu [rdi + 32], ymm1
        vmovdqu [rdi + 64], ymm2
        vmovdqu [rdi + 96], ymm3
        vmovdqu [rdi + 128], ymm4
        vmovdqu [rdi + 160], ymm5
        vmovdqu [rdi + 192], ymm6
        vmovdqu [rdi + 224], ymm7
        vzeroupper
        ret
        .size hk_avx_args, . - hk_avx_args

# void hk_call_avx_args(const void *in, void *out): ymm0-7 from in, then hk_avx_args(out).
        .globl hk_call_avx_args
        .type hk_call_avx_args, @function
        .p2align 4
hk_call_avx_args:
        vmovdqu ymm0, [rdi + 0]
        vmovdqu ymm1, [rdi + 32]
        vmovdqu ymm2, [rdi + 64]
        vmovdqu ymm3, [rdi + 96]
        vmovdqu ymm4, [rdi + 128]
        vmovdqu ymm5, [rdi + 160]
        vmovdqu ymm6, [rdi + 192]
        vmovdqu ymm7, [rdi + 224]
        mov rdi, rsi
        sub rsp, 8
        call hk_avx_args
        add rsp, 8
        ret
        .size hk_call_avx_args, . - hk_call_avx_args

# __m256 hk_avx_ret(const void *in): ymm0 from in; long double hk_ld_ret(const long double *in):
# st0 from in. Each has 5 bytes of nop first, for the jump.
        .globl hk_avx_ret
        .type hk_avx_ret, @function
        .p2align 4
hk_avx_ret:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1)
        vmovdqu ymm0, [rdi]
        ret
        .size hk_avx_ret, . - hk_avx_ret

        .globl hk_ld_ret
        .type hk_ld_ret, @function
        .p2align 4
hk_ld_ret:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1)
        fld tbyte ptr [rdi]
        ret
        .size hk_ld_ret, . - hk_ld_ret

# void hk_call_rets(const void *in, void *out): ymm0 = hk_avx_ret(in) to out, then
# st0 = hk_ld_ret(in + 32) to out + 32.
        .globl hk_call_rets
        .type hk_call_rets, @function
        .p2align 4
hk_call_rets:
        push rbx
        push rbp
        sub rsp, 8
        mov rbx, rdi
        mov rbp, rsi
        call hk_avx_ret
        vmovdqu [rbp], ymm0
        vzeroupper
        lea rdi, [rbx + 32]
        call hk_ld_ret
        fstp tbyte ptr [rbp + 32]
        add rsp, 8
        pop rbp
        pop rbx
        ret
        .size hk_call_rets, . - hk_call_rets

# void hk_clobber_vectors(int how): what a handler's helpers may do to the vector state, by the
# bits of how: 1: ymm0-15 all ones (AVX); 2: zmm0-31 and k1-k7 all ones (AVX-512); 4: the x87
# stack filled past its 8 registers and emptied again (values below it are lost) and MXCSR
# rounding toward zero (left so).
        .globl hk_clobber_vectors
        .type hk_clobber_vectors, @function
        .p2align 4
hk_clobber_vectors:
        test edi, 1
        jz 1f
        vpcmpeqd ymm0, ymm0, ymm0
        vpcmpeqd ymm1, ymm1, ymm1
        vpcmpeqd ymm2, ymm2, ymm2
        vpcmpeqd ymm3, ymm3, ymm3
        vpcmpeqd ymm4, ymm4, ymm4
        vpcmpeqd ymm5, ymm5, ymm5
        vpcmpeqd ymm6, ymm6, ymm6
        vpcmpeqd ymm7, ymm7, ymm7
        vpcmpeqd ymm8, ymm8, ymm8
        vpcmpeqd ymm9, ymm9, ymm9
        vpcmpeqd ymm10, ymm10, ymm10
        vpcmpeqd ymm11, ymm11, ymm11
        vpcmpeqd ymm12, ymm12, ymm12
        vpcmpeqd ymm13, ymm13, ymm13
        vpcmpeqd ymm14, ymm14, ymm14
        vpcmpeqd ymm15, ymm15, ymm15
1:
        test edi, 2
        jz 2f
        vpternlogd zmm0, zmm0, zmm0, 0xff
        vpternlogd zmm1, zmm1, zmm1, 0xff
        vpternlogd zmm2, zmm2, zmm2, 0xff
        vpternlogd zmm3, zmm3, zmm3, 0xff
        vpternlogd zmm4, zmm4, zmm4, 0xff
        vpternlogd zmm5, zmm5, zmm5, 0xff
        vpternlogd zmm6, zmm6, zmm6, 0xff
        vpternlogd zmm7, zmm7, zmm7, 0xff
        vpternlogd zmm8, zmm8, zmm8, 0xff
        vpternlogd zmm9, zmm9, zmm9, 0xff
        vpternlogd zmm10, zmm10, zmm10, 0xff
        vpternlogd zmm11, zmm11, zmm11, 0xff
        vpternlogd zmm12, zmm12, zmm12, 0xff
        vpternlogd zmm13, zmm13, zmm13, 0xff
        vpternlogd zmm14, zmm14, zmm14, 0xff
        vpternlogd zmm15, zmm15, zmm15, 0xff
        vpternlogd zmm16, zmm16, zmm16, 0xff
        vpternlogd zmm17, zmm17, zmm17, 0xff
        vpternlogd zmm18, zmm18, zmm18, 0xff
        vpternlogd zmm19, zmm19, zmm19, 0xff
        vpternlogd zmm20, zmm20, zmm20, 0xff
        vpternlogd zmm21, zmm21, zmm21, 0xff
        vpternlogd zmm22, zmm22, zmm22, 0xff
        vpternlogd zmm23, zmm23, zmm23, 0xff
        vpternlogd zmm24, zmm24, zmm24, 0xff
        vpternlogd zmm25, zmm25, zmm25, 0xff
        vpternlogd zmm26, zmm26, zmm26, 0xff
        vpternlogd zmm27, zmm27, zmm27, 0xff
        vpternlogd zmm28, zmm28, zmm28, 0xff
        vpternlogd zmm29, zmm29, zmm29, 0xff
        vpternlogd zmm30, zmm30, zmm30, 0xff
        vpternlogd zmm31, zmm31, zmm31, 0xff
        kxnorw k1, k1, k1
        kxnorw k2, k2, k2
        kxnorw k3, k3, k3
        kxnorw k4, k4, k4
        kxnorw k5, k5, k5
        kxnorw k6, k6, k6
        kxnorw k7, k7, k7
2:
        test edi, 4
        jz 3f
        fldpi
        fldpi
        fldpi
        fldpi
        fldpi
        fldpi
        fldpi
        fldpi
        fstp st(0)
        fstp st(0)
        fstp st(0)
        fstp st(0)
        fstp st(0)
        fstp st(0)
        fstp st(0)
        fstp st(0)
        sub rsp, 8
        stmxcsr [rsp]
        or dword ptr [rsp], 0x6000
        ldmxcsr [rsp]
        add rsp, 8
3:
        ret
        .size hk_clobber_vectors, . - hk_clobber_vectors

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

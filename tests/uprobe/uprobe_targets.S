# Functions a 5-byte jump cannot take inside them (x86-64 SysV): the int3 fill after them takes
# the rest of the jump, or, where another function follows at once, trap probes take them.
        .intel_syntax noprefix
        .text

# long ut_tiny(void): 0; a 2-byte tail jump (to ut_short) followed by int3 padding.
        .globl ut_tiny
        .type ut_tiny, @function
        .p2align 4
ut_tiny:
        jmp .Lut_short # a local label: a 2-byte jump with every assembler
        .size ut_tiny, . - ut_tiny
        .fill 14, 1, 0xcc

# long ut_short(void): 0.
        .globl ut_short
        .type ut_short, @function
        .p2align 4
ut_short:
.Lut_short:
        xor eax, eax
        ret
        .size ut_short, . - ut_short
        .fill 13, 1, 0xcc

# long ut_lea4(long x): x + 1 in 4 bytes (lea; ret).
        .globl ut_lea4
        .type ut_lea4, @function
        .p2align 4
ut_lea4:
        lea eax, [rdi + 1]
        ret
        .size ut_lea4, . - ut_lea4
        .fill 12, 1, 0xcc


# Vector values live across a probed point inside a function: a uprobe at SYMBOL+OFFSET
# (ut_*_point_offset) runs its programs between the loads and the stores.

# void ut_avx_mid(const void *in, void *out, const char *text): ymm0-15 from in (512 bytes), the
# point (text in rdx for the program), ymm0-15 to out.
        .globl ut_avx_mid
        .type ut_avx_mid, @function
        .p2align 4
ut_avx_mid:
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
.Lut_avx_mid_point:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1): the probed instruction
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
        .size ut_avx_mid, . - ut_avx_mid

# __m256 ut_avx_args(void *out, __m256 a0..a7 in ymm0-7): stores ymm0-7 to out (256 bytes),
# returns a7.
        .globl ut_avx_args
        .type ut_avx_args, @function
        .p2align 4
ut_avx_args:
        .irp n, 0, 1, 2, 3, 4, 5, 6, 7
        vmovdqu [rdi + 32 * \n], ymm\n
        .endr
        vmovdqa ymm0, ymm7
        ret
        .size ut_avx_args, . - ut_avx_args

# void ut_call_avx_args(const void *in, void *out): ymm0-7 from in (256 bytes), then
# ut_avx_args(out), its result to out + 256 (32 bytes).
        .globl ut_call_avx_args
        .type ut_call_avx_args, @function
        .p2align 4
ut_call_avx_args:
        push rbx
        mov rbx, rsi
        .irp n, 0, 1, 2, 3, 4, 5, 6, 7
        vmovdqu ymm\n, [rdi + 32 * \n]
        .endr
        mov rdi, rsi
        call ut_avx_args
        vmovdqu [rbx + 256], ymm0
        vzeroupper
        pop rbx
        ret
        .size ut_call_avx_args, . - ut_call_avx_args

# void ut_avx512_mid(const void *in, void *out, const char *text): zmm16-31 from in (1024
# bytes), the point, zmm16-31 to out.
        .globl ut_avx512_mid
        .type ut_avx512_mid, @function
        .p2align 4
ut_avx512_mid:
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
.Lut_avx512_mid_point:
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00 # nopl 0(%rax,%rax,1): the probed instruction
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
        ret
        .size ut_avx512_mid, . - ut_avx512_mid

        .section .rodata
        .globl ut_avx_mid_point_offset
        .globl ut_avx512_mid_point_offset
        .p2align 3
ut_avx_mid_point_offset:
        .quad .Lut_avx_mid_point - ut_avx_mid
ut_avx512_mid_point_offset:
        .quad .Lut_avx512_mid_point - ut_avx512_mid
        .text

# long ut_lea4_tight(long x): x + 1 in 4 bytes, with another function right behind its ret: no
# fill a jump could run into, so only a trap probe goes there.
        .globl ut_lea4_tight
        .type ut_lea4_tight, @function
        .p2align 4
ut_lea4_tight:
        lea eax, [rdi + 1]
        ret
        .size ut_lea4_tight, . - ut_lea4_tight

# long ut_after_tight(long x): x + 2, right behind ut_lea4_tight.
        .globl ut_after_tight
        .type ut_after_tight, @function
ut_after_tight:
        lea eax, [rdi + 2]
        ret
        .size ut_after_tight, . - ut_after_tight
        .fill 8, 1, 0xcc

        .section .note.GNU-stack, "", @progbits

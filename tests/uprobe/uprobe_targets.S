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

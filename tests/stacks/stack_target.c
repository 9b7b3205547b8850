// SPDX-License-Identifier: MIT
// A program whose function stack_leaf is called from two known call paths, built with frame
// pointers so a user stack can be walked as the kernel walks it. Prints main's address, from
// which a test finds where the binary is loaded.
// Usage: stack_target CALLS
#include <stdio.h>
#include <stdlib.h>

// A real call each, kept apart (GCC would otherwise clone or inline them; clang has no
// noclone and does neither to noinline functions).
#if defined(__clang__)
#define KEEP_CALL __attribute__((noinline))
#else
#define KEEP_CALL __attribute__((noinline, noclone))
#endif

KEEP_CALL int stack_work(int x) {
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

// The probed function. It calls another so that it sets up a frame (compilers leave the frame
// pointer out of leaf functions) and its first instructions have room for a probe's jump.
KEEP_CALL int stack_leaf(int x) {
    return stack_work(x) + 1;
}

// Not tail calls: each uses the result, so the return address stays in its caller.
KEEP_CALL int stack_path_a(int x) {
    return stack_leaf(x) * 2;
}

KEEP_CALL int stack_path_b(int x) {
    return stack_leaf(x) * 3;
}

int main(int argc, char **argv) {
    int calls = argc > 1 ? atoi(argv[1]) : 0;
    long sum = 0;
    for (int i = 0; i < calls; i++) {
        sum += stack_path_a(i);
        sum += stack_path_b(i);
    }
    printf("main %p\ncalls %d sum %ld\n", (void *)main, calls, sum);
    return 0;
}

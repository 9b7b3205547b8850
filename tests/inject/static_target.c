// SPDX-License-Identifier: MIT
// A statically linked program that waits: `bpftime inject` must refuse it (it has no dlopen of
// a shared libc to load the agent with). Prints "ready PID", then sleeps SECONDS.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    sleep(argc > 1 ? (unsigned)atoi(argv[1]) : 30);
    return 0;
}

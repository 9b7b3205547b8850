// SPDX-License-Identifier: MIT
// A controller that stops while it holds a segment's writer lock (as under a debugger, or
// SIGSTOP in the middle of a command): takes the lock of segment NAME, prints "held", stops
// itself, and exits when continued. Killing it releases the lock (robust mutex).
#include <bpftime/store/store.hpp>

#include <csignal>
#include <cstdio>

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s SEGMENT\n", argv[0]);
        return 2;
    }
    auto seg = bpftime::store::segment::open(argv[1], {.create = false});
    if (!seg) {
        std::fprintf(stderr, "%s\n", seg.err().message.c_str());
        return 1;
    }
    (*seg)->lock_for_test();
    std::printf("held\n");
    std::fflush(stdout);
    raise(SIGSTOP);
    return 0;
}

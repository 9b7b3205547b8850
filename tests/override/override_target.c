// SPDX-License-Identifier: MIT
// A program whose open_config(FILE, WHICH) opens a file and reads its first line; a test
// injects an error into it with bpf_override_return. For WHICH = 0..N-1 it prints
// "WHICH: LINE" or "WHICH: error -ERRNO (TEXT)", then how many times the body ran.
// Usage: override_target FILE N
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile long bodies; // how many calls ran open_config's body

// The file's first line into buf; 0, or -errno.
__attribute__((noinline)) long open_config(const char *path, long which, char *buf, size_t len) {
    bodies++;
    (void)which;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0) {
        return -EIO;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE N\n", argv[0]);
        return 2;
    }
    long n = strtol(argv[2], NULL, 10);
    for (long which = 0; which < n; which++) {
        char line[128] = "";
        long rc = open_config(argv[1], which, line, sizeof line);
        if (rc == 0) {
            printf("%ld: %s\n", which, line);
        } else {
            printf("%ld: error %ld (%s)\n", which, rc, strerror((int)-rc));
        }
    }
    printf("body ran %ld times\n", (long)bodies);
    return 0;
}

// SPDX-License-Identifier: MIT
// A program making known system calls for the syscall tracepoint tests. Once DIR/go exists:
// GETPIDS getpid() calls through libc, RAWS getppid calls through a `syscall` instruction of
// its own, the opens listed in open_list (some fail), a fork whose child runs /bin/true, then
// "round 1 done". Once DIR/go2 exists: GETPIDS more getpid() calls, "round 2 done", exit 0.
// Usage: systp_target DIR GETPIDS RAWS
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void wait_for(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    const struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
        nanosleep(&tick, NULL);
}

static long raw_getppid(void) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"((long)SYS_getppid) : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s DIR GETPIDS RAWS\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    const long getpids = strtol(argv[2], NULL, 10), raws = strtol(argv[3], NULL, 10);
    printf("pid %d ready\n", (int)getpid());
    fflush(stdout);
    wait_for(dir, "go");

    long sum = 0;
    for (long i = 0; i < getpids; i++)
        sum += getpid();
    for (long i = 0; i < raws; i++)
        sum += raw_getppid();

    // The opens, as the tests expect them: path under DIR, flags.
    static const struct {
        const char *name;
        int flags;
    } open_list[] = {
        {"exists", O_RDONLY},
        {"missing", O_RDONLY},
        {"created", O_WRONLY | O_CREAT | O_TRUNC},
        {".", O_RDONLY | O_DIRECTORY},
        {"exists/below", O_RDONLY},
        {"exists", O_RDWR | O_APPEND},
    };
    for (size_t i = 0; i < sizeof open_list / sizeof open_list[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, open_list[i].name);
        int fd = open(path, open_list[i].flags, 0644);
        printf("open %s %d %d\n", open_list[i].name, open_list[i].flags, fd < 0 ? -errno : fd);
        if (fd >= 0)
            close(fd);
    }

    pid_t child = fork();
    if (child == 0) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    int status = -1;
    if (child < 0 || waitpid(child, &status, 0) != child)
        return 3;
    printf("child exit %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    printf("round 1 done %d\n", sum != 0);
    fflush(stdout);

    wait_for(dir, "go2");
    for (long i = 0; i < getpids; i++)
        sum += getpid();
    printf("round 2 done\n");
    return 0;
}

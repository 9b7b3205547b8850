// SPDX-License-Identifier: MIT
// A target whose threads are blocked in libc's read (a pipe) and nanosleep while syscall
// tracepoint links attach, detach and attach again, so their sites are rewritten under them;
// the kernel then restarts their calls (a SIGUSR1 handler with SA_RESTART, a stop and
// continue), sending them back to the `syscall` itself. Steps wait for files in DIR that the
// test creates; each result is a line on stdout:
//   "pid P ready"                      the reader is blocked in read
//   wait DIR/attachedN (N = 1, 2):     "round N read site rewritten|unchanged", MARKS reads of
//                                      4242 bytes, SIGUSR1 to the reader, "round N handled H
//                                      reader blocked|running", "round N done"
//   then "read R TEXT" once the data written to the pipe is read
//   wait DIR/detached: a thread sleeps 5 s, "sleeper blocked"
//   wait DIR/attached3: "sleep site rewritten|unchanged", "sleep ready"
//   wait DIR/continued (the test stopped and continued the process): SIGUSR1 to the sleeper,
//                                      "slept RC EINTRS MS" once its sleep is over
// Usage: systp_restart_target DIR MARKS
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int handled;
static void on_usr1(int sig) {
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

static void sleep_ms(long ms) {
    const struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void wait_for(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    for (int i = 0; i < 6000 && access(path, F_OK) != 0; i++)
        sleep_ms(10);
}

// The user pc of thread tid while it is blocked in system call nr, or 0.
static uintptr_t blocked_in(pid_t tid, long nr) {
    char path[64], buf[256] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    const int got = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    const char *last = strrchr(buf, ' ');
    if (!got || last == NULL || strtol(buf, NULL, 10) != nr || buf[0] == 'r')
        return 0;
    return (uintptr_t)strtoull(last + 1, NULL, 16);
}

// Waits up to 5 s for thread tid to block in nr; its pc or 0.
static uintptr_t wait_blocked(pid_t tid, long nr) {
    for (int i = 0; i < 500; i++) {
        const uintptr_t pc = blocked_in(tid, nr);
        if (pc != 0)
            return pc;
        sleep_ms(10);
    }
    return 0;
}

// Whether the 16 bytes before the `syscall` returning to pc differ from saved, within 2 s.
static int rewritten(uintptr_t pc, const unsigned char *saved) {
    for (int i = 0; i < 200; i++) {
        if (memcmp((const void *)(pc - 18), saved, 16) != 0)
            return 1;
        sleep_ms(10);
    }
    return 0;
}

static int pipe_fds[2];
static atomic_int reader_tid, sleeper_tid;
static char got[16];
static ssize_t got_n;

static void *reader(void *arg) {
    (void)arg;
    atomic_store(&reader_tid, (int)syscall(SYS_gettid));
    got_n = read(pipe_fds[0], got, sizeof got - 1); // libc's read
    return NULL;
}

static int sleep_rc, sleep_eintrs;
static long slept_ms;

static void *sleeper(void *arg) {
    (void)arg;
    atomic_store(&sleeper_tid, (int)syscall(SYS_gettid));
    struct timespec start, end, req = {5, 0}, rem = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &start);
    // The usual loop: a handled signal ends nanosleep with EINTR (the kernel does not restart
    // it for a handler); a stop and continue restarts it through restart_syscall.
    while ((sleep_rc = nanosleep(&req, &rem)) != 0 && errno == EINTR) {
        sleep_eintrs++;
        req = rem;
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    slept_ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR MARKS\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    const long marks = strtol(argv[2], NULL, 10);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || pipe(pipe_fds) != 0)
        return 3;
    const int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
    if (zero < 0)
        return 3;
    pthread_t rt, st;
    if (pthread_create(&rt, NULL, reader, NULL) != 0)
        return 3;
    while (atomic_load(&reader_tid) == 0)
        sleep_ms(1);
    const uintptr_t read_pc = wait_blocked(atomic_load(&reader_tid), SYS_read);
    if (read_pc == 0) {
        printf("reader not blocked in read\n");
        return 4;
    }
    unsigned char read_code[16];
    memcpy(read_code, (const void *)(read_pc - 18), 16);
    printf("pid %d ready\n", (int)getpid());

    static char buf[4242];
    for (int round = 1; round <= 2; round++) {
        char name[32];
        snprintf(name, sizeof name, "attached%d", round);
        wait_for(dir, name);
        printf("round %d read site %s\n", round,
               rewritten(read_pc, read_code) ? "rewritten" : "unchanged");
        for (long i = 0; i < marks; i++)
            if (read(zero, buf, sizeof buf) != (ssize_t)sizeof buf)
                return 5;
        pthread_kill(rt, SIGUSR1);
        for (int i = 0; i < 500 && atomic_load(&handled) != round; i++)
            sleep_ms(10);
        sleep_ms(20);
        const uintptr_t now = wait_blocked(atomic_load(&reader_tid), SYS_read);
        printf("round %d handled %d reader %s\n", round, atomic_load(&handled),
               now == read_pc ? "blocked" : "running");
        printf("round %d done\n", round);
    }
    if (write(pipe_fds[1], "hello", 5) != 5)
        return 5;
    pthread_join(rt, NULL);
    printf("read %zd %.*s\n", got_n, got_n > 0 ? (int)got_n : 0, got);

    wait_for(dir, "detached");
    if (pthread_create(&st, NULL, sleeper, NULL) != 0)
        return 3;
    while (atomic_load(&sleeper_tid) == 0)
        sleep_ms(1);
    const uintptr_t sleep_pc = wait_blocked(atomic_load(&sleeper_tid), SYS_clock_nanosleep);
    if (sleep_pc == 0) {
        printf("sleeper not blocked in clock_nanosleep\n");
        return 4;
    }
    unsigned char sleep_code[16];
    memcpy(sleep_code, (const void *)(sleep_pc - 18), 16);
    printf("sleeper blocked\n");
    wait_for(dir, "attached3");
    printf("sleep site %s\n", rewritten(sleep_pc, sleep_code) ? "rewritten" : "unchanged");
    printf("sleep ready\n");
    wait_for(dir, "continued");
    pthread_kill(st, SIGUSR1);
    pthread_join(st, NULL);
    printf("slept %d %d %ld\n", sleep_rc, sleep_eintrs, slept_ms);
    return 0;
}

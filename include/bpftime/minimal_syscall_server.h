/* SPDX-License-Identifier: MIT */
/**
 * @file
 * minimal_syscall_server: the C API that host processes (the nginx module) link.
 *
 * Opaque handles, bpftime_<object>__<verb> names, negative errno results; no C++ exception
 * crosses this boundary. One server per process (per nginx worker), used from one thread.
 */
#ifndef BPFTIME_MINIMAL_SYSCALL_SERVER_H
#define BPFTIME_MINIMAL_SYSCALL_SERVER_H

#include <bpftime/nginx_filter.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bpftime_server bpftime_server;

/** Log levels passed to the logger. */
enum bpftime_log_level { BPFTIME_LOG_ERROR = 0, BPFTIME_LOG_WARN = 1, BPFTIME_LOG_INFO = 2 };

/** Receives the server's messages. Each distinct problem is reported once, not per request. */
typedef void (*bpftime_log_fn)(void *user, int level, const char *message);

/**
 * Creates a server for the segment called shm_name (NULL or "": $BPFTIME_SHM or "bpftime")
 * with the nginx URL filter registered. A missing segment is not an error: filtering then
 * fails (see bpftime_server__filter_request) until the segment appears.
 * Returns 0 and sets *out, or a negative errno.
 */
int bpftime_server__create(const char *shm_name, bpftime_log_fn log, void *log_user,
                           bpftime_server **out);

/** Detaches everything and frees the server. NULL is fine. */
void bpftime_server__destroy(bpftime_server *server);

/**
 * Synchronises with the store now (attaches, detaches, recompiles). 0 or a negative errno.
 * Until the first synchronisation succeeded (here or in bpftime_server__create), a writer lock
 * held by another process (say the other workers of a server starting at the same moment) is
 * waited for, at most 500 ms, before filtering falls back to the fail policy.
 */
int bpftime_server__instantiate(bpftime_server *server);

/**
 * Runs the programs attached to the nginx URL filter, in link order, on one request, after
 * re-synchronising if the store changed. Returns 0 to accept, an HTTP status (400..599) to
 * refuse, or a negative errno when the filter could not decide (a program faulted or ran past
 * its budget, the segment is missing (-ENOENT) or corrupt, this process may not open it
 * (-EACCES: the message names the segment's owner, group and mode, this process's user and the
 * fix), or an enabled link of the filter cannot run in this process: its program does not
 * compile here, calls a helper nginx-url programs may not use, or could not be attached); the
 * host then applies its fail policy. A segment its group can write is used when this process
 * belongs to that group (nginx's `user`), and its owner is root or this process's user.
 */
int bpftime_server__filter_request(bpftime_server *server,
                                   const struct bpftime_nginx_request *request);

/**
 * Counts the host's fail policy applied to the request the last bpftime_server__filter_request
 * could not decide (open: let through; else refused), against the link that failed, so that
 * `bpftime list` and `bpftime metrics` show it. Failures no link caused (the segment missing,
 * damaged or locked) are not counted: there is no link to count them on. Returns 0.
 */
int bpftime_server__count_fail_policy(bpftime_server *server, int open);

/** The message of the last failure, or "". Valid until the next call. */
const char *bpftime_server__last_error(const bpftime_server *server);

/** Number of programs attached to the nginx URL filter now. */
int bpftime_server__attached(const bpftime_server *server);

#ifdef __cplusplus
}
#endif

#endif /* BPFTIME_MINIMAL_SYSCALL_SERVER_H */

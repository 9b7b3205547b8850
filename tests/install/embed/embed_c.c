/* SPDX-License-Identifier: MIT */
/*
 * A C host embedding bpftime through the installed C API (built with the flags of
 * `pkg-config libbpftime`): follows a segment in which the bpftime command loaded
 * url_allowlist.bpf.o, allowed /api/ and attached it to the nginx URL filter, and asks the
 * filter about two requests. Usage: embed_c SEGMENT_NAME. Prints the two verdicts
 * ("/api/users 0", "/admin 403") and exits 0 when the filter decided both.
 */
#include <bpftime/minimal_syscall_server.h>

#include <stdio.h>
#include <string.h>

static void log_message(void *user, int level, const char *message) {
    (void)user;
    fprintf(stderr, "embed_c: server log (level %d): %s\n", level, message);
}

static int ask(bpftime_server *server, const char *path) {
    struct bpftime_nginx_request req;
    memset(&req, 0, sizeof req);
    req.path = path;
    req.path_len = (__u32)strlen(path);
    req.uri = path;
    req.uri_len = req.path_len;
    req.method = "GET";
    req.method_len = 3;
    req.host = "";
    req.client = "127.0.0.1";
    req.client_len = 9;
    int verdict = bpftime_server__filter_request(server, &req);
    if (verdict < 0) {
        fprintf(stderr, "embed_c: %s: %s\n", path, bpftime_server__last_error(server));
    } else {
        printf("%s %d\n", path, verdict);
    }
    return verdict;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: embed_c SEGMENT_NAME\n");
        return 2;
    }
    bpftime_server *server = NULL;
    int err = bpftime_server__create(argv[1], log_message, NULL, &server);
    if (err < 0) {
        fprintf(stderr, "embed_c: bpftime_server__create: error %d\n", err);
        return 1;
    }
    int status = 0;
    if (bpftime_server__instantiate(server) < 0) {
        fprintf(stderr, "embed_c: instantiate: %s\n", bpftime_server__last_error(server));
        status = 1;
    }
    printf("attached %d\n", bpftime_server__attached(server));
    if (ask(server, "/api/users") < 0 || ask(server, "/admin") < 0) {
        status = 1;
    }
    bpftime_server__destroy(server);
    return status;
}

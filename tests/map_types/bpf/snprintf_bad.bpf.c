// SPDX-License-Identifier: MIT
// bpf_snprintf calls the kernel's verifier refuses when it loads the program (a conversion it
// does not know, more conversions than arguments, an argument array that is not whole u64s, more
// than 12 arguments); bpftime gives each -EINVAL when it runs. Each result goes to rc[i] of the
// array `out`.
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __s64[4]);
} out SEC(".maps");

static const char fmt_bad[] = "%q";
static const char fmt_two[] = "%d %d";
static const char fmt_one[] = "%d";

SEC("raw_tp")
int format_bad(void *ctx) {
    __u32 zero = 0;
    __s64 *rc = bpf_map_lookup_elem(&out, &zero);
    if (!rc) {
        return 0;
    }
    char text[16];
    __u64 args[13] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
    rc[0] = bpf_snprintf(text, sizeof text, fmt_bad, args, 8);
    rc[1] = bpf_snprintf(text, sizeof text, fmt_two, args, 8);
    rc[2] = bpf_snprintf(text, sizeof text, fmt_one, args, 7);
    rc[3] = bpf_snprintf(text, sizeof text, fmt_one, args, sizeof args);
    return 0;
}

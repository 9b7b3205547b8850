// SPDX-License-Identifier: MIT
// Linux's map type names (enum bpf_map_type, include/uapi/linux/bpf.h), for refusals that name a
// type bpftime does not have.
#include <bpftime/maps/maps.hpp>

#include <iterator>

namespace bpftime::maps {

const char *linux_map_type_name(uint32_t t) {
    static const char *const names[] = {
        "unspec",
        "hash",
        "array",
        "prog_array",
        "perf_event_array",
        "percpu_hash",
        "percpu_array",
        "stack_trace",
        "cgroup_array",
        "lru_hash",
        "lru_percpu_hash",
        "lpm_trie",
        "array_of_maps",
        "hash_of_maps",
        "devmap",
        "sockmap",
        "cpumap",
        "xskmap",
        "sockhash",
        "cgroup_storage",
        "reuseport_sockarray",
        "percpu_cgroup_storage",
        "queue",
        "stack",
        "sk_storage",
        "devmap_hash",
        "struct_ops",
        "ringbuf",
        "inode_storage",
        "task_storage",
        "bloom_filter",
        "user_ringbuf",
        "cgrp_storage",
    };
    return t < std::size(names) ? names[t] : "unknown";
}

} // namespace bpftime::maps

// SPDX-License-Identifier: MIT
// SUITE_LOOKUPS lookups of u32 keys in a hash map, summing the values found (most keys are
// present, some are not).
#include "suite.h"

SUITE_TABLE(suite_table);

SUITE_PROGRAM(map_lookups) {
    __u64 sum = 0;
    for (__u32 i = 0; i < SUITE_LOOKUPS; i++) {
        __u32 key = m->keys[i];
        __u64 *value = SUITE_TABLE_LOOKUP(suite_table, &key);
        if (value) {
            sum += *value;
        }
    }
    return sum ^ (sum >> 32);
}

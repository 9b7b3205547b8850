/* SPDX-License-Identifier: MIT */
/* What funclat's eBPF program and its loader share. */
#ifndef FUNCLAT_H
#define FUNCLAT_H

/* Histogram slots: slot i counts latencies in [2^i, 2^(i+1)) units (slot 0 also 0). */
#define FUNCLAT_SLOTS 32

enum funclat_units {
    FUNCLAT_NSEC = 0,
    FUNCLAT_USEC = 1,
    FUNCLAT_MSEC = 2,
};

#endif

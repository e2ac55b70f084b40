/*
 * net: host side of a VM's NICs. Bridge-mode NICs get a persistent tap
 * device enslaved to the named bridge before QEMU opens it, and lose it when
 * QEMU has ended. Blocking (runs `ip`): call from a worker.
 */
#ifndef HCA_NET_H
#define HCA_NET_H

#include <stddef.h>

#include "proto/hca.pb-c.h"

/* Create the taps of @spec's bridge NICs. On failure none is left. */
int net_taps_setup(const Hca__VmSpec *spec, char *err, size_t errlen);

/* Remove them (missing ones are fine). */
void net_taps_teardown(const Hca__VmSpec *spec);

#endif

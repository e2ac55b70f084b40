/*
 * rep_ga: the guest agent's file system freeze, for app-consistent
 * recovery points. A small blocking client of qemu-ga's protocol on the
 * VM's virtio-serial port (QEMU's chardev socket STATE/vm/NAME/qga.sock),
 * run on an executor worker; every wait bounded by a timeout.
 *
 * The protocol (measured with qemu-ga 10.0, replica/DESIGN.md section 6):
 * one JSON object a line; an exchange after any timeout must start with
 * 0xFF and `guest-sync-delimited` with a fresh id, and everything up to the
 * 0xFF the agent sends back and the matching return is dropped (a late
 * reply of an earlier exchange may still be in the pipe). A frozen guest
 * stays frozen until thawed: rep_ga_thaw() retries until the agent says
 * "thawed" or its deadline passes.
 *
 * Errors are -errno with one line in @err: -ENOENT / -ECONNREFUSED (no
 * socket: the VM has no agent channel), -ETIMEDOUT (no agent answers: none
 * runs in the guest, or it is stuck), -EIO (the agent refused: its message),
 * -EPROTO (not its protocol), -EMSGSIZE (a line over REP_GA_LINE_MAX).
 */
#ifndef HCA_REP_GA_H
#define HCA_REP_GA_H

#include <stddef.h>

#define REP_GA_LINE_MAX (64u << 10)
#define REP_GA_FREEZE_MS 10000u /* the longest a freeze may take */

/* Freeze the guest's file systems. The number frozen (>= 0), or -errno.
 * On any error the guest may be frozen anyway: call rep_ga_thaw(). */
int rep_ga_freeze(const char *sock, unsigned timeout_ms, char *err, size_t errlen);

/* Thaw them, until the agent says "thawed" or @timeout_ms passed. 0 or -errno. */
int rep_ga_thaw(const char *sock, unsigned timeout_ms, char *err, size_t errlen);

#endif /* HCA_REP_GA_H */

/*
 * hv_launch: start a daemonizing QEMU and find it again later. Internal to
 * the hypervisor module (hv_vm.c and tests).
 */
#ifndef HCA_HV_LAUNCH_H
#define HCA_HV_LAUNCH_H

#include <sys/types.h>

#include "hypervisor/hv.h"

struct hv_launch;

/*
 * Result of a launch: on success @pid is the QEMU daemon and @pidfd (owned by
 * the callee from now on) becomes readable when it ends; on failure @err is
 * -errno and @msg holds what QEMU printed to stderr.
 */
typedef void (*hv_launch_fn)(struct hv_launch *l, int err, pid_t pid, int pidfd,
			     const char *msg, void *opaque);

/*
 * Fork and exec @argv (which must contain -daemonize and -pidfile
 * @paths->pidfile) with stdout/stderr appended to @paths->qemu_log. @done runs
 * on @loop once QEMU's launcher process has exited. Returns NULL with errno.
 */
struct hv_launch *hv_launch_start(qb_loop_t *loop, const struct hv_argv *argv,
				  const struct hv_paths *paths, hv_launch_fn done,
				  void *opaque);

/* Cancel a launch (the launcher is reaped; QEMU, if already up, lives on). */
void hv_launch_free(struct hv_launch *l);

/*
 * Find the QEMU of the VM with @uuid from its pidfile. Returns 0 with @pid and
 * a pidfd (caller owns), -ESRCH with @why when no such live process exists
 * (no pidfile, process gone or a zombie, pid reused by something else), or
 * another -errno.
 */
int hv_proc_find(const struct hv_paths *paths, const char *uuid, pid_t *pid,
		 int *pidfd, char *why, size_t len);

/* Unix time at which @pid started, 0 if unknown. */
uint64_t hv_proc_start_time(pid_t pid);

/* SIGKILL through a pidfd, immune to pid reuse. Returns 0 or -errno. */
int hv_pidfd_kill(int pidfd);

#endif

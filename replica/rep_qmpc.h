/*
 * rep_qmpc: a small blocking QMP client over a unix socket, for the
 * replica store's qemu-storage-daemon (rep_store.c), which runs on executor
 * workers. hypervisor/hv_qmp.c is the loop-driven client of a VM's QEMU;
 * this one blocks, with a poll() timeout on every read and write.
 *
 * Every line read is bounded (REP_QMPC_LINE_MAX); events read while waiting
 * for a reply are kept (at most REP_QMPC_EVENTS, the oldest dropped) so a
 * caller can wait for one later. Errors are 0 / -errno with one line for
 * people in @err: -EIO (QEMU refused: its error's desc), -ETIMEDOUT,
 * -ECONNRESET (the daemon went away), -EPROTO (not QMP), -EMSGSIZE (a line
 * over the bound), -ENOMEM.
 *
 * Threads: one caller at a time per client.
 */
#ifndef HCA_REP_QMPC_H
#define HCA_REP_QMPC_H

#include <stddef.h>

#include <jansson.h>

#define REP_QMPC_LINE_MAX (1u << 20)
#define REP_QMPC_EVENTS 64u
#define REP_QMPC_TIMEOUT_MS 10000u /* default per command */

struct rep_qmpc;

/*
 * Connect to the QMP socket @path, read the greeting and negotiate
 * (qmp_capabilities), all within @timeout_ms. *@out is the caller's
 * (rep_qmpc_close). 0 or -errno (-ENOENT / -ECONNREFUSED: nothing listens).
 */
int rep_qmpc_connect(const char *path, unsigned timeout_ms, struct rep_qmpc **out, char *err,
		     size_t errlen);

/* The timeout of each later command (REP_QMPC_TIMEOUT_MS at connect). */
void rep_qmpc_set_timeout(struct rep_qmpc *c, unsigned timeout_ms);

/*
 * Run @cmd with @args (stolen, may be NULL). On 0, *@ret (if @ret is not
 * NULL) is the reply's "return" (the caller's reference). -EIO with QEMU's
 * error description in @err, or the errors above.
 */
int rep_qmpc_cmd(struct rep_qmpc *c, const char *cmd, json_t *args, json_t **ret, char *err,
		 size_t errlen);

/*
 * Wait up to @timeout_ms for the event @name whose data's "device" or "id"
 * is @id (NULL: any), looking first at the events already kept (a kept
 * event that matches is consumed). On 0, *@data (if not NULL) is its data
 * (the caller's reference). -ETIMEDOUT or the errors above.
 */
int rep_qmpc_wait_event(struct rep_qmpc *c, const char *name, const char *id,
			unsigned timeout_ms, json_t **data, char *err, size_t errlen);

/* Close the socket and free. NULL is a no-op. */
void rep_qmpc_close(struct rep_qmpc *c);

#endif /* HCA_REP_QMPC_H */

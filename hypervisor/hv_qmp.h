/*
 * hv_qmp: the QMP client, one connection to the monitor socket of one QEMU.
 *
 * Everything runs on the caller's qb_loop: the socket is non-blocking, the
 * greeting and `qmp_capabilities` are handled before ops->ready, replies are
 * matched to commands by "id" (so commands may be pipelined), and events are
 * delivered as they arrive, before or between replies. No callback is ever
 * invoked from inside a call into this API, except that hv_qmp_disconnect()
 * and hv_qmp_free() complete pending commands with -ECANCELED.
 *
 * Callbacks may call any function here on the same handle, including
 * hv_qmp_free() and hv_qmp_disconnect(); the handle stays valid until the
 * callback returns and nothing more is delivered for the ended connection.
 */
#ifndef HCA_HV_QMP_H
#define HCA_HV_QMP_H

#include <stdbool.h>

#include <jansson.h>
#include <qb/qbloop.h>

/* Longest QMP message accepted from QEMU, "\r\n" not counted. */
#define HV_QMP_MAX_LINE (1024u * 1024u)

struct hv_qmp; /* opaque: one QMP connection to one QEMU */

/* Any member may be NULL. @q is the handle the callback is about. */
struct hv_qmp_ops {
	/* Greeting read and qmp_capabilities accepted: commands may be sent. */
	void (*ready)(struct hv_qmp *q, void *opaque);
	/* An asynchronous event. @name and @data are borrowed (data may be
	 * NULL) and valid during the call only. */
	void (*event)(struct hv_qmp *q, const char *name, json_t *data, void *opaque);
	/* The connection ended: @err is 0 on a clean EOF from QEMU after
	 * ready, else -errno: -ECONNREFUSED/-ENOENT on connect, -ETIMEDOUT if
	 * the greeting or capabilities negotiation did not complete in time,
	 * -EPROTO on malformed JSON, a message over HV_QMP_MAX_LINE or a
	 * refused negotiation, -ECONNRESET if QEMU hung up before ready or
	 * reset the socket, another -errno from read/write. Pending commands
	 * have already completed with -ECONNRESET. Called at most once per
	 * hv_qmp_connect(), never after hv_qmp_disconnect()/hv_qmp_free(). */
	void (*closed)(struct hv_qmp *q, int err, void *opaque);
};

/*
 * New idle handle; nothing is connected until hv_qmp_connect().
 * @loop, @ops: borrowed, must outlive the handle. @path: copied.
 * @opaque: passed to every ops callback, not touched.
 * @timeout_ms: default per-command timeout, and the deadline for connect +
 * greeting + negotiation; 0 means no timeout.
 * Returns NULL on allocation failure or if @loop, @path or @ops is NULL.
 */
struct hv_qmp *hv_qmp_new(qb_loop_t *loop, const char *path, const struct hv_qmp_ops *ops,
			  void *opaque, unsigned timeout_ms);

/*
 * Start a non-blocking connect; the result comes later via ops->ready or
 * ops->closed (a missing socket is reported as closed(-ENOENT), not here).
 * May be called again after ops->closed or hv_qmp_disconnect() to reconnect,
 * including from inside those callbacks.
 * Returns 0, -EALREADY if connected or connecting, -ENAMETOOLONG if the path
 * does not fit a sockaddr_un, -ESHUTDOWN once hv_qmp_free() was called (from
 * a callback), or another -errno if the socket could not be created/watched.
 */
int hv_qmp_connect(struct hv_qmp *q);

/*
 * Reply to a command: err == 0 and @ret = the "return" value (borrowed, valid
 * during the call); err == -EIO with @errclass/@errdesc (borrowed) from
 * QEMU's "error" object; -ETIMEDOUT if no reply within the timeout (the
 * connection stays up, a late reply is discarded by id); -ECONNRESET if the
 * connection closed first; -ECANCELED when the handle is freed or
 * disconnected with the command pending. @ret is NULL unless err == 0,
 * @errclass/@errdesc NULL unless err == -EIO. Called exactly once per command
 * accepted by hv_qmp_command*(), never from inside that call.
 */
typedef void (*hv_qmp_reply_fn)(struct hv_qmp *q, int err, json_t *ret, const char *errclass,
				const char *errdesc, void *opaque);

/*
 * Send @cmd (copied) with @args (a JSON object or NULL; the reference is
 * stolen, also on failure). @cb may be NULL (fire and forget: a failure is
 * only logged). @opaque is passed to @cb. Every command carries a unique
 * "id". The command is queued and written from the loop.
 * Returns 0, -ENOTCONN if not ready, -EINVAL if @cmd is NULL or @args not an
 * object, -ENOMEM.
 */
int hv_qmp_command(struct hv_qmp *q, const char *cmd, json_t *args, hv_qmp_reply_fn cb,
		   void *opaque);

/* Same with an explicit timeout in ms for this command (0: none). */
int hv_qmp_command_timeout(struct hv_qmp *q, const char *cmd, json_t *args, unsigned timeout_ms,
			   hv_qmp_reply_fn cb, void *opaque);

/* True between ops->ready and the end of that connection. NULL: false. */
bool hv_qmp_is_ready(const struct hv_qmp *q);

/*
 * Close the connection (or abandon a connect in progress) without freeing the
 * handle. Pending commands complete with -ECANCELED, from inside this call;
 * ops->closed is NOT called. No-op when idle or @q is NULL.
 */
void hv_qmp_disconnect(struct hv_qmp *q);

/*
 * Disconnect and free. NULL ok. Pending commands complete with -ECANCELED
 * from inside this call; no ops callback follows. Safe from any callback of
 * this handle: the memory is released when that callback returns.
 */
void hv_qmp_free(struct hv_qmp *q);

#endif /* HCA_HV_QMP_H */

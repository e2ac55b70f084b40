/*
 * util_fake_qmp: a fake QEMU monitor for unit tests, after libvirt's
 * qemumonitortestutils.c. It listens on a real unix socket and, on its own
 * thread, replays a transcript (recorded from a real QEMU by
 * tests/unit/qmp/record.py, or written by a test); the first command that
 * differs from the transcript is recorded as a failure and the connection
 * is closed.
 *
 * Transcript, one item per line:
 *   # comment             (blank lines are skipped too)
 *   < TEXT                send TEXT + "\r\n". If TEXT is a reply ("return" or
 *                         "error") without an "id", the id of the oldest
 *                         unanswered '>' command is inserted.
 *   > JSON                the client must send this next; compared as JSON
 *                         with "id" ignored. No terminator is required.
 *   ! sleep MS            pause
 *   ! close               close the connection (accepting it first if need
 *                         be); the next item waits for a new one (a reconnect)
 *   ! hang                read and answer nothing more until the test ends
 *   ! longline BYTES      send a reply {"return": "xx..."} of BYTES before
 *                         its id is inserted (as for '<'), then "\r\n"
 * Consecutive '<' items go out in one write, so a client sees them in one
 * read whenever the socket buffer allows.
 * After the last item the fake keeps reading: any further command fails.
 */
#ifndef HCA_TESTS_UTIL_FAKE_QMP_H
#define HCA_TESTS_UTIL_FAKE_QMP_H

#include <stddef.h>

struct fake_qmp;

/*
 * Load @transcript_path and start serving it. The socket path is written to
 * @sock_path_out (@len bytes; 108 is always enough). Returns NULL, with the
 * reason on stderr, if the transcript cannot be read or parsed or the socket
 * or thread cannot be set up.
 */
struct fake_qmp *fake_qmp_start(const char *transcript_path, char *sock_path_out, size_t len);

/* Same, with the transcript as text; @name labels it in error messages. */
struct fake_qmp *fake_qmp_start_text(const char *name, const char *text, char *sock_path_out,
				     size_t len);

/*
 * Where the recorded transcripts are: $HCA_QMP_DIR, else the tests/unit/qmp
 * found walking up from the test binary (build/tests/x, build/asan/tests/x),
 * else "tests/unit/qmp".
 */
const char *fake_qmp_dir(void);

/*
 * fake_qmp_start() of the recorded transcript @name (in fake_qmp_dir()) with
 * @tail (may be NULL) appended: a recorded beginning, then what a test needs
 * QEMU to do next. Errors are labelled "@name+tail".
 */
struct fake_qmp *fake_qmp_start_recorded(const char *name, const char *tail,
					 char *sock_path_out, size_t len);

/*
 * Stop the peer, wait for its thread and free it (socket file included).
 * Returns 0 if every item was consumed and nothing unexpected happened, else
 * -1 with a description in @err (truncated to @errlen, always terminated),
 * e.g. "lifecycle.qmp:9: expected {...}, got {...}". @f NULL: -1.
 */
int fake_qmp_finish(struct fake_qmp *f, char *err, size_t errlen);

#endif /* HCA_TESTS_UTIL_FAKE_QMP_H */

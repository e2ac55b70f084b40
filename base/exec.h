/*
 * exec: the work executor. Blocking work (librados calls, qemu-img, bulk
 * zstd, fsync'd writes) runs on worker threads; its completion runs back on
 * the loop thread, which owns all state. Like sheepdog's work items: `fn` on
 * a worker, `done` on the loop.
 *
 * One `struct exec` per loop holds named queues, each with its own threads,
 * so a librados call stuck in a hung Ceph ("store") never delays qemu-img
 * ("vol") or bulk work ("io"), and the other way round.
 *
 * The work item is embedded in the structure that owns the operation, so
 * pushing it allocates nothing and cannot fail:
 *
 *	struct define_op {
 *		struct exec_item item;
 *		char vm[64];
 *		int rc;
 *	};
 *
 *	static void define_fn(struct exec_item *it)   // on a worker
 *	{
 *		struct define_op *op = EXEC_CONTAINER_OF(it, struct define_op, item);
 *
 *		op->rc = sto_store_put(...);
 *	}
 *
 *	static void define_done(struct exec_item *it) // on the loop thread
 *	{
 *		struct define_op *op = EXEC_CONTAINER_OF(it, struct define_op, item);
 *
 *		if (exec_item_cancelled(it))
 *			op->rc = -ECANCELED;
 *		reply(op);
 *		free(op);                             // done may free the owner
 *	}
 *
 *	exec_item_init(&op->item, define_fn, define_done);
 *	exec_push(store_q, &op->item, "vm/web1");
 *
 * Ordering: items pushed to one queue with the same key run in push order,
 * one at a time, and their done callbacks run in push order too. Items with
 * different keys, or a NULL key, run in parallel up to the queue's thread
 * count. A key orders one queue only; the same key on two queues orders
 * nothing between them. The key is released when fn returns, so fn of the
 * next item may run before done of the previous one.
 *
 * Item life cycle: idle (after exec_item_init, or once its done was called)
 * -> queued -> running -> finished -> idle. Only an idle item may be pushed;
 * pushing a queued, running or finished item is a bug and aborts. fn must
 * not free the item (the executor still uses it when fn returns); done may.
 *
 * Threads: exec_new, exec_queue_new and exec_free are called on the loop
 * thread (or before the loop runs); exec_push, exec_queue_pending and
 * exec_item_cancelled may be called from any thread.
 */
#ifndef HCA_EXEC_H
#define HCA_EXEC_H

#include <stdbool.h>
#include <stddef.h>

#include <qb/qbloop.h>

/* Keys are compared on their first EXEC_KEY_MAX bytes; longer keys that
 * share those bytes are ordered as one key (safe, only less parallel). */
#define EXEC_KEY_MAX 200u
/* Queue names: 1 to EXEC_QUEUE_NAME_MAX bytes, for logs and thread names. */
#define EXEC_QUEUE_NAME_MAX 31u

struct exec;
struct exec_queue;
struct exec_item;

/* Runs with the item that was pushed; see the top of this file for which
 * thread runs which. */
typedef void (*exec_fn)(struct exec_item *it);

/*
 * The owner's structure from a pointer to its embedded item: @it is the
 * struct exec_item pointer, @type the owner's type, @member the name of the
 * item in it. If @member is not a struct exec_item the compiler warns
 * ("pointer type mismatch"), an error under our -Werror.
 */
#define EXEC_CONTAINER_OF(it, type, member)                                  \
	((type *)(void *)((char *)(1 ? (it) : &((type *)0)->member) -        \
			  offsetof(type, member)))

/* Private: only exec.c reads or writes these fields. It is public so owners
 * can embed it; initialize it with exec_item_init. */
struct exec_item {
	exec_fn fn, done;
	struct exec_item *next;      /* in ready, finished or a key's waiters */
	struct exec_item *key_next;  /* bucket chain while holding its key */
	struct exec_item *wait_head; /* same-key items pushed after this one */
	struct exec_item *wait_tail;
	unsigned key_hash;
	unsigned char state;
	bool cancelled;
	bool has_key;
	char key[EXEC_KEY_MAX + 1];
};

/*
 * Create an executor whose completions run on @loop (borrowed; it must
 * outlive the executor). Registers one eventfd with qb_loop_poll_add at
 * QB_LOOP_MED. Has no threads until queues are added.
 * Returns the handle (free with exec_free) or NULL with errno set.
 * Loop thread.
 */
struct exec *exec_new(qb_loop_t *loop);

/*
 * Add a queue named @name (copied; 1 to EXEC_QUEUE_NAME_MAX bytes, e.g.
 * "store", "vol", "io") with @threads (>= 1) worker threads of its own.
 * The queue belongs to @e and is freed by exec_free; there is no other way
 * to free it. Worker threads block all signals so signals reach the loop
 * thread and blocking calls on workers see no EINTR.
 * Returns the queue or NULL with errno set: EINVAL (bad name, 0 threads),
 * ESHUTDOWN (exec_free has begun), ENOMEM, or pthread_create's error.
 * Loop thread.
 */
struct exec_queue *exec_queue_new(struct exec *e, const char *name,
				  unsigned threads);

/*
 * Make @it idle with @fn (runs on a worker, required) and @done (runs on the
 * loop thread, NULL if nothing is to be done). @it is owned by the caller,
 * who keeps it alive until done was called.
 * Any thread, but never on an item that is queued, running or finished.
 */
void exec_item_init(struct exec_item *it, exec_fn fn, exec_fn done);

/*
 * Queue @it, which must be idle (aborts otherwise), on @q. @key (copied,
 * may be NULL) orders it after every item pushed to @q with the same key;
 * NULL means no ordering. Never fails: once shutdown has begun (exec_free),
 * the item is completed as cancelled instead: fn does not run and done runs,
 * still in key order, with exec_item_cancelled true.
 * Any thread (a librados watch callback, a done callback, the loop), as long
 * as exec_free has not returned.
 */
void exec_push(struct exec_queue *q, struct exec_item *it, const char *key);

/*
 * True if shutdown completed @it without running its fn. Meaningful in
 * done; false before the item was pushed. Any thread that owns @it.
 */
bool exec_item_cancelled(const struct exec_item *it);

/*
 * Items on @q that are queued or running: pushed, and fn not yet returned
 * (items whose done is still to run are not counted). A snapshot, for
 * status output and tests. Any thread.
 */
size_t exec_queue_pending(const struct exec_queue *q);

/*
 * Shut @e down; NULL is a no-op. Loop thread, and never from inside a done
 * callback. In order:
 *   1. Stop accepting: later pushes are completed as cancelled.
 *   2. Run the done callbacks of items that already finished.
 *   3. Complete items not yet started as cancelled (fn does not run) and
 *      wait for running ones, for at most @deadline_ms in total, running
 *      done callbacks as items complete, in key order.
 *   4. An item still running after the deadline (a librados call in a hung
 *      Ceph) is abandoned: its queue and key are logged at LOG_WARNING, its
 *      done never runs, and the items queued behind it are completed as
 *      cancelled. Its thread is not joined, and its queue (which that
 *      thread still uses) is deliberately leaked, kept reachable so leak
 *      checkers stay quiet: the process is exiting anyway. The owner must
 *      not free an abandoned item either, as its fn may still return.
 *   5. Join the other workers, unregister the eventfd, free the rest.
 * Every done callback of this call runs on the caller's thread. A done may
 * push (the new item is completed as cancelled, so a done that always
 * pushes again would never let this return) but must not call exec_free.
 * No thread may push once this returns.
 */
void exec_free(struct exec *e, unsigned deadline_ms);

#endif /* HCA_EXEC_H */

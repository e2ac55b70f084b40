/*
 * work: blocking jobs (qemu-img, fsync'd record writes, later librados) run
 * on worker threads; their completion runs back on the loop thread, which
 * owns all state. Like sheepdog's work items: `fn` on a worker, `done` on
 * the loop.
 */
#ifndef HCA_WORK_H
#define HCA_WORK_H

#include <qb/qbloop.h>

struct work_queue;

typedef void (*work_fn)(void *arg);

/* @loop borrowed. Returns NULL on failure (errno set). */
struct work_queue *work_queue_new(qb_loop_t *loop, unsigned threads);

/* Queue @fn(@arg) on a worker, then @done(@arg) on the loop. 0 or -errno. */
int work_queue_push(struct work_queue *q, work_fn fn, work_fn done, void *arg);

/* Finish queued jobs, join the workers, free. Pending @done callbacks run
 * first, on the caller's thread. NULL is a no-op. */
void work_queue_free(struct work_queue *q);

#endif

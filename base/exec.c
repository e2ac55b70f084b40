/*
 * exec: named queues of worker threads whose completions are dispatched on
 * a qb_loop through one eventfd.
 *
 * Per-key ordering costs no allocation: the first queued or running item of
 * a key "holds" it and sits in a small hash table; items pushed with the
 * same key wait in a list hung off the holder. When the holder completes,
 * the first waiter inherits the rest of the list and becomes runnable. So
 * only runnable items are ever on the ready list, and any worker may take
 * the head.
 *
 * Locking: each queue's mutex guards its lists, its key table, the state of
 * the items on it and its workers' `cur`. Done callbacks run with no lock
 * held, on the loop thread (or exec_free's caller).
 */
#include "base/exec.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>

enum item_state { ITEM_IDLE, ITEM_QUEUED, ITEM_RUNNING, ITEM_FINISHED };

static const char *const state_names[] = {
	[ITEM_IDLE] = "idle",
	[ITEM_QUEUED] = "queued",
	[ITEM_RUNNING] = "running",
	[ITEM_FINISHED] = "finished (done not yet run)",
};

#define KEY_BUCKETS 64u

struct list {
	struct exec_item *head, *tail;
};

struct worker {
	pthread_t tid;
	struct exec_queue *q;
	struct exec_item *cur; /* whose fn runs now, NULL while idle */
};

struct exec_queue {
	struct exec *e;
	struct exec_queue *next;  /* e's queues; loop thread only */
	struct exec_queue *grave; /* graveyard link once abandoned */
	char name[EXEC_QUEUE_NAME_MAX + 1];
	pthread_mutex_t lock;
	pthread_cond_t cond; /* idle workers wait for ready items */
	struct list ready;   /* runnable: no earlier item of its key is left */
	struct list finished;
	struct exec_item *keys[KEY_BUCKETS]; /* key holders */
	size_t pending;                      /* queued + running */
	bool stopping;
	bool abandoned; /* exec_free gave up waiting; workers must not touch e */
	unsigned nworkers;
	struct worker workers[];
};

struct exec {
	qb_loop_t *loop;
	int efd;
	bool polled;
	bool stopping; /* exec_free has begun: no new queues */
	struct exec_queue *queues;
};

/*
 * Queues abandoned by exec_free, with the threads stuck in them. Kept
 * reachable so that leak checkers do not report memory we leak on purpose.
 */
static pthread_mutex_t grave_lock = PTHREAD_MUTEX_INITIALIZER;
static struct exec_queue *graveyard;

static void list_append(struct list *l, struct exec_item *it)
{
	it->next = NULL;
	if (l->tail)
		l->tail->next = it;
	else
		l->head = it;
	l->tail = it;
}

static struct exec_item *list_pop(struct list *l)
{
	struct exec_item *it = l->head;

	if (it) {
		l->head = it->next;
		if (!l->head)
			l->tail = NULL;
		it->next = NULL;
	}
	return it;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void wake(struct exec *e)
{
	uint64_t one = 1;

	/* Can only fail when the counter saturates; the loop wakes anyway. */
	(void)!write(e->efd, &one, sizeof(one));
}

/* ---- keys ---- */

/* FNV-1a: short strings, no adversary; only spreads the buckets. */
static unsigned hash_key(const char *key)
{
	uint32_t h = 2166136261u;

	for (; *key; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	return h;
}

static void key_set(struct exec_item *it, const char *key)
{
	size_t n;

	it->has_key = key != NULL;
	it->key[0] = '\0';
	it->key_hash = 0;
	if (!key)
		return;
	n = strnlen(key, EXEC_KEY_MAX);
	memcpy(it->key, key, n);
	it->key[n] = '\0';
	it->key_hash = hash_key(it->key);
}

static struct exec_item **key_slot(struct exec_queue *q, const struct exec_item *it)
{
	return &q->keys[it->key_hash % KEY_BUCKETS];
}

static struct exec_item *key_holder(struct exec_queue *q, const struct exec_item *it)
{
	struct exec_item *h;

	for (h = *key_slot(q, it); h; h = h->key_next)
		if (h->key_hash == it->key_hash && strcmp(h->key, it->key) == 0)
			return h;
	return NULL;
}

/* Put @succ (NULL: nobody) in @old's place in the key table. */
static void key_replace(struct exec_queue *q, struct exec_item *old, struct exec_item *succ)
{
	struct exec_item **p = key_slot(q, old);

	while (*p != old)
		p = &(*p)->key_next;
	if (succ) {
		succ->key_next = old->key_next;
		*p = succ;
	} else {
		*p = old->key_next;
	}
	old->key_next = NULL;
}

/* @it completed: its first waiter inherits the key and the other waiters. */
static void key_release(struct exec_queue *q, struct exec_item *it)
{
	struct exec_item *w = it->wait_head;

	if (w) {
		w->wait_head = w->next;
		w->wait_tail = w->next ? it->wait_tail : NULL;
	}
	key_replace(q, it, w);
	it->wait_head = it->wait_tail = NULL;
	if (w) {
		list_append(&q->ready, w);
		pthread_cond_signal(&q->cond);
	}
}

/* ---- the queue, under its lock ---- */

/* fn returned, or the item was cancelled: hand it to the loop. */
static void complete(struct exec_queue *q, struct exec_item *it)
{
	if (it->has_key)
		key_release(q, it);
	it->state = ITEM_FINISHED;
	list_append(&q->finished, it);
	q->pending--;
}

static void *worker_main(void *data)
{
	struct worker *w = data;
	struct exec_queue *q = w->q;
	struct exec_item *it;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->ready.head && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		/* After stop, exec_free cancels what is left, in key order. */
		if (q->stopping)
			break;
		it = list_pop(&q->ready);
		it->state = ITEM_RUNNING;
		w->cur = it;
		pthread_mutex_unlock(&q->lock);
		it->fn(it);
		pthread_mutex_lock(&q->lock);
		/* Given up on: the item and the exec may be gone by now. */
		if (q->abandoned)
			break;
		w->cur = NULL;
		complete(q, it);
		wake(q->e);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

void exec_item_init(struct exec_item *it, exec_fn fn, exec_fn done)
{
	assert(fn);
	memset(it, 0, sizeof(*it));
	it->fn = fn;
	it->done = done;
	it->state = ITEM_IDLE;
}

bool exec_item_cancelled(const struct exec_item *it)
{
	return it->cancelled;
}

void exec_push(struct exec_queue *q, struct exec_item *it, const char *key)
{
	struct exec_item *h = NULL;

	pthread_mutex_lock(&q->lock);
	if (it->state != ITEM_IDLE) {
		/* The lists would be corrupted: better to stop here. */
		qb_log(LOG_CRIT, "exec: queue %s: item pushed while %s (key %s)",
		       q->name, state_names[it->state], it->has_key ? it->key : "none");
		abort();
	}
	key_set(it, key);
	it->cancelled = q->stopping;
	if (q->abandoned) {
		/* No worker is left; the item's key may be held for ever. */
		it->state = ITEM_FINISHED;
		list_append(&q->finished, it);
		wake(q->e);
		goto out;
	}
	it->state = ITEM_QUEUED;
	q->pending++;
	if (it->has_key)
		h = key_holder(q, it);
	if (h) {
		if (h->wait_tail)
			h->wait_tail->next = it;
		else
			h->wait_head = it;
		h->wait_tail = it;
		it->next = NULL;
		goto out;
	}
	if (it->has_key) {
		it->key_next = *key_slot(q, it);
		*key_slot(q, it) = it;
	}
	list_append(&q->ready, it);
	if (q->stopping)
		wake(q->e); /* exec_free is waiting; it cancels this */
	else
		pthread_cond_signal(&q->cond);
out:
	pthread_mutex_unlock(&q->lock);
}

size_t exec_queue_pending(const struct exec_queue *q)
{
	/* The lock is the only thing written; the queue stays const to callers. */
	struct exec_queue *mq = (struct exec_queue *)q;
	size_t n;

	pthread_mutex_lock(&mq->lock);
	n = mq->pending;
	pthread_mutex_unlock(&mq->lock);
	return n;
}

/* ---- the loop side ---- */

/* Run the done callbacks of @q's finished items; true if there were any. */
static bool run_finished(struct exec_queue *q)
{
	struct exec_item *it, *next;

	pthread_mutex_lock(&q->lock);
	it = q->finished.head;
	q->finished.head = q->finished.tail = NULL;
	pthread_mutex_unlock(&q->lock);
	if (!it)
		return false;
	for (; it; it = next) {
		next = it->next;
		it->next = NULL;
		/* Idle before done, so done may push it again or free it. */
		it->state = ITEM_IDLE;
		if (it->done)
			it->done(it);
	}
	return true;
}

static int on_event(int fd, int revents, void *data)
{
	struct exec *e = data;
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		qb_log(LOG_ERR, "exec: cannot read eventfd: %s", strerror(errno));
	for (struct exec_queue *q = e->queues; q; q = q->next)
		run_finished(q);
	return 0;
}

struct exec *exec_new(qb_loop_t *loop)
{
	struct exec *e = calloc(1, sizeof(*e));
	int rc;

	if (!e)
		return NULL;
	e->loop = loop;
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->efd < 0)
		goto fail;
	rc = qb_loop_poll_add(loop, QB_LOOP_MED, e->efd, POLLIN, e, on_event);
	if (rc < 0) {
		errno = -rc;
		goto fail;
	}
	e->polled = true;
	return e;
fail:
	rc = errno;
	exec_free(e, 0);
	errno = rc;
	return NULL;
}

/* ---- queues ---- */

static void queue_stop(struct exec_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

static void queue_destroy(struct exec_queue *q)
{
	for (unsigned i = 0; i < q->nworkers; i++)
		pthread_join(q->workers[i].tid, NULL);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

/* Signals go to the loop thread; blocking calls on workers see no EINTR. */
static int workers_start(struct exec_queue *q, unsigned threads)
{
	char tname[16];
	sigset_t all, old;
	int rc = 0;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; q->nworkers < threads; q->nworkers++) {
		struct worker *w = &q->workers[q->nworkers];

		w->q = q;
		rc = pthread_create(&w->tid, NULL, worker_main, w);
		if (rc != 0)
			break;
		snprintf(tname, sizeof(tname), "hca-%.11s", q->name);
		pthread_setname_np(w->tid, tname); /* cosmetic: ps, gdb */
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -rc;
}

struct exec_queue *exec_queue_new(struct exec *e, const char *name, unsigned threads)
{
	struct exec_queue *q = NULL;
	size_t len = name ? strnlen(name, EXEC_QUEUE_NAME_MAX + 1) : 0;
	int rc;

	if (len == 0 || len > EXEC_QUEUE_NAME_MAX || threads == 0) {
		errno = EINVAL;
		return NULL;
	}
	if (e->stopping) {
		/* From a done run by exec_free: it would never stop this queue. */
		errno = ESHUTDOWN;
		return NULL;
	}
	q = calloc(1, sizeof(*q) + threads * sizeof(q->workers[0]));
	if (!q)
		return NULL;
	q->e = e;
	memcpy(q->name, name, len);
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	rc = workers_start(q, threads);
	if (rc < 0) {
		qb_log(LOG_ERR, "exec: queue %s: cannot start a worker thread: %s",
		       q->name, strerror(-rc));
		queue_stop(q);
		queue_destroy(q);
		errno = -rc;
		return NULL;
	}
	q->next = e->queues;
	e->queues = q;
	return q;
}

/* ---- shutdown ---- */

/* Complete every runnable item as cancelled; waiters of their keys follow. */
static void cancel_ready_locked(struct exec_queue *q)
{
	struct exec_item *it;

	while ((it = list_pop(&q->ready))) {
		it->cancelled = true;
		complete(q, it);
	}
}

static void cancel_ready(struct exec_queue *q)
{
	pthread_mutex_lock(&q->lock);
	cancel_ready_locked(q);
	pthread_mutex_unlock(&q->lock);
}

/* One pass: cancel what has not started, run the done callbacks. */
static bool sweep(struct exec *e)
{
	bool ran = false;

	for (struct exec_queue *q = e->queues; q; q = q->next)
		cancel_ready(q);
	for (struct exec_queue *q = e->queues; q; q = q->next)
		ran |= run_finished(q);
	return ran;
}

static bool all_idle(struct exec *e)
{
	for (struct exec_queue *q = e->queues; q; q = q->next)
		if (exec_queue_pending(q) > 0)
			return false;
	return true;
}

/* Sleep until a worker completes something, or @ms passed. */
static void wait_wake(struct exec *e, uint64_t ms)
{
	struct pollfd pfd = { .fd = e->efd, .events = POLLIN };
	uint64_t n;

	if (poll(&pfd, 1, ms > INT32_MAX ? INT32_MAX : (int)ms) > 0)
		(void)!read(e->efd, &n, sizeof(n));
}

/*
 * The deadline passed with fn still running on @q: give up on those items.
 * Their waiters are cancelled now, since their holder may never complete.
 */
static void queue_abandon(struct exec_queue *q, unsigned deadline_ms)
{
	struct exec_item *it, *w;
	bool stuck = false;

	pthread_mutex_lock(&q->lock);
	/* A holder may have finished since the last sweep: its waiter is ready. */
	cancel_ready_locked(q);
	for (unsigned i = 0; i < q->nworkers; i++)
		stuck |= q->workers[i].cur != NULL;
	if (!stuck)
		goto out;
	q->abandoned = true;
	for (unsigned i = 0; i < q->nworkers; i++) {
		it = q->workers[i].cur;
		if (!it)
			continue;
		qb_log(LOG_WARNING, "exec: queue %s: work on key %s still running after %u ms;"
		       " leaving its thread behind", q->name, it->has_key ? it->key : "(none)",
		       deadline_ms);
		while ((w = it->wait_head)) {
			it->wait_head = w->next;
			w->cancelled = true;
			w->state = ITEM_FINISHED;
			list_append(&q->finished, w);
			q->pending--;
		}
		it->wait_tail = NULL;
	}
out:
	pthread_mutex_unlock(&q->lock);
}

/* Join the workers that are free, leave the stuck ones, keep @q reachable. */
static void queue_bury(struct exec_queue *q)
{
	for (unsigned i = 0; i < q->nworkers; i++) {
		struct worker *w = &q->workers[i];
		bool stuck;

		pthread_mutex_lock(&q->lock);
		stuck = w->cur != NULL; /* abandoned: a stuck worker never clears it */
		pthread_mutex_unlock(&q->lock);
		if (stuck)
			pthread_detach(w->tid);
		else
			pthread_join(w->tid, NULL);
	}
	pthread_mutex_lock(&grave_lock);
	q->grave = graveyard;
	graveyard = q;
	pthread_mutex_unlock(&grave_lock);
}

void exec_free(struct exec *e, unsigned deadline_ms)
{
	struct exec_queue *q, *next;
	uint64_t end, now;

	if (!e)
		return;
	end = now_ms() + deadline_ms;
	e->stopping = true;
	for (q = e->queues; q; q = q->next)
		queue_stop(q);
	for (q = e->queues; q; q = q->next)
		run_finished(q);
	for (;;) {
		if (sweep(e))
			continue; /* a done may have pushed */
		if (all_idle(e))
			break;
		now = now_ms();
		if (now >= end)
			break;
		wait_wake(e, end - now);
	}
	for (q = e->queues; q; q = q->next)
		queue_abandon(q, deadline_ms);
	while (sweep(e))
		;
	for (q = e->queues; q; q = next) {
		next = q->next;
		if (q->abandoned)
			queue_bury(q);
		else
			queue_destroy(q);
	}
	if (e->polled)
		qb_loop_poll_del(e->loop, e->efd);
	if (e->efd >= 0)
		close(e->efd);
	free(e);
}

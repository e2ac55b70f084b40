/* exec: which thread runs fn and done, per-key ordering under contention,
 * parallelism proven with barriers (never with timing), shutdown with
 * queued and stuck items, pushes from foreign threads, re-use of an item.
 * Each test drives a real qb_loop on the main thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "base/exec.h"

/* Bounds for things that must happen; reaching one is a failure. */
#define GENEROUS_MS 10000u

static pthread_t main_thread;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- a counter threads can wait on: gates, latches, barriers ---- */

struct count {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned n;
};

#define COUNT_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static void count_add(struct count *k)
{
	pthread_mutex_lock(&k->m);
	k->n++;
	pthread_cond_broadcast(&k->c);
	pthread_mutex_unlock(&k->m);
}

/* Wait until @k reaches @n or @ms passed; whether it reached @n. */
static bool count_wait(struct count *k, unsigned n, unsigned ms)
{
	struct timespec until;
	bool met;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&k->m);
	while (k->n < n && pthread_cond_timedwait(&k->c, &k->m, &until) == 0)
		;
	met = k->n >= n;
	pthread_mutex_unlock(&k->m);
	return met;
}

/* ---- the loop ---- */

struct until {
	qb_loop_t *loop;
	bool (*cond)(void *);
	void *arg;
	uint64_t end;
	qb_loop_timer_handle th;
};

static void until_tick(void *data)
{
	struct until *u = data;

	u->th = 0;
	if (u->cond(u->arg) || now_ms() >= u->end) {
		qb_loop_stop(u->loop);
		return;
	}
	qb_loop_timer_add(u->loop, QB_LOOP_LOW, QB_TIME_NS_IN_MSEC, u, until_tick, &u->th);
}

/* Run @loop until @cond(@arg) or @ms passed; @cond's last value. */
static bool run_until(qb_loop_t *loop, bool (*cond)(void *), void *arg, unsigned ms)
{
	struct until u = { loop, cond, arg, now_ms() + ms, 0 };

	if (cond(arg))
		return true;
	qb_loop_timer_add(loop, QB_LOOP_LOW, QB_TIME_NS_IN_MSEC, &u, until_tick, &u.th);
	qb_loop_run(loop);
	if (u.th)
		qb_loop_timer_del(loop, u.th);
	return cond(arg);
}

/* ---- log capture ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[8192];

static void log_fn(int32_t t, struct qb_log_callsite *cs, struct timespec *ts, const char *msg)
{
	size_t len;

	pthread_mutex_lock(&log_lock);
	len = strlen(log_text);
	snprintf(log_text + len, sizeof(log_text) - len, "%d %s\n", cs->priority, msg);
	pthread_mutex_unlock(&log_lock);
	if (getenv("HCA_TEST_VERBOSE"))
		fprintf(stderr, "  log: %s\n", msg);
}

static void log_clear(void)
{
	pthread_mutex_lock(&log_lock);
	log_text[0] = '\0';
	pthread_mutex_unlock(&log_lock);
}

/* A line of priority @prio that contains both @a and @b? */
static bool log_has(int prio, const char *a, const char *b)
{
	char head[16];
	bool found = false;

	snprintf(head, sizeof(head), "%d ", prio);
	pthread_mutex_lock(&log_lock);
	for (char *line = log_text; *line && !found;) {
		char *end = strchr(line, '\n');

		*end = '\0';
		found = strncmp(line, head, strlen(head)) == 0 && strstr(line, a) && strstr(line, b);
		*end = '\n';
		line = end + 1;
	}
	pthread_mutex_unlock(&log_lock);
	return found;
}

/* ---- a job: an owner with an embedded item ---- */

struct job {
	const char *name;
	struct exec_item item;
	void (*body)(struct job *j); /* what fn does besides recording */
	struct count *gate;          /* body_gated: wait for it */
	struct count *arrived;       /* body_gated: say fn started */
	bool gate_opened;
	atomic_int fn_runs;
	int done_runs;
	pthread_t fn_thread, done_thread;
	bool cancelled;
	void (*on_done)(struct job *j);
};

/* Done order, for tests that check it. Written on the loop thread only. */
static const char *trace[64];
static unsigned ntrace;

static void job_fn(struct exec_item *it)
{
	struct job *j = EXEC_CONTAINER_OF(it, struct job, item);

	j->fn_thread = pthread_self();
	atomic_fetch_add(&j->fn_runs, 1);
	if (j->body)
		j->body(j);
}

static void job_done(struct exec_item *it)
{
	struct job *j = EXEC_CONTAINER_OF(it, struct job, item);

	j->done_thread = pthread_self();
	j->done_runs++;
	j->cancelled = exec_item_cancelled(it);
	if (ntrace < sizeof(trace) / sizeof(trace[0]))
		trace[ntrace++] = j->name;
	if (j->on_done)
		j->on_done(j);
}

static void job_init(struct job *j, const char *name)
{
	memset(j, 0, sizeof(*j));
	j->name = name;
	exec_item_init(&j->item, job_fn, job_done);
}

static void body_gated(struct job *j)
{
	if (j->arrived)
		count_add(j->arrived);
	j->gate_opened = count_wait(j->gate, 1, 2 * GENEROUS_MS);
}

static bool job_done_cond(void *arg)
{
	return ((struct job *)arg)->done_runs > 0;
}

/* Position of @name in the done trace, or -1. */
static int trace_pos(const char *name)
{
	for (unsigned i = 0; i < ntrace; i++)
		if (strcmp(trace[i], name) == 0)
			return (int)i;
	return -1;
}

/* ---- fixture ---- */

struct t {
	qb_loop_t *loop;
	struct exec *e;
};

static int setup(void **state)
{
	struct t *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->loop = qb_loop_create();
	assert_non_null(t->loop);
	t->e = exec_new(t->loop);
	assert_non_null(t->e);
	ntrace = 0;
	log_clear();
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	exec_free(t->e, GENEROUS_MS);
	qb_loop_destroy(t->loop);
	free(t);
	return 0;
}

/* ---- tests ---- */

static void fn_on_worker_done_on_loop(void **state)
{
	struct t *t = *state;
	struct exec_queue *q = exec_queue_new(t->e, "io", 1);
	struct count gate = COUNT_INIT, arrived = COUNT_INIT;
	struct job j;

	assert_non_null(q);
	job_init(&j, "j");
	j.body = body_gated;
	j.gate = &gate;
	j.arrived = &arrived;
	assert_false(exec_item_cancelled(&j.item));
	assert_int_equal(exec_queue_pending(q), 0);
	exec_push(q, &j.item, NULL);
	assert_true(count_wait(&arrived, 1, GENEROUS_MS));
	assert_int_equal(exec_queue_pending(q), 1);
	count_add(&gate);
	/* fn returned, but done waits for the loop. */
	for (uint64_t end = now_ms() + GENEROUS_MS; exec_queue_pending(q) && now_ms() < end;)
		usleep(1000);
	assert_int_equal(exec_queue_pending(q), 0);
	assert_int_equal(j.done_runs, 0);
	assert_true(run_until(t->loop, job_done_cond, &j, GENEROUS_MS));
	assert_true(j.gate_opened);
	assert_int_equal(atomic_load(&j.fn_runs), 1);
	assert_int_equal(j.done_runs, 1);
	assert_false(pthread_equal(j.fn_thread, main_thread));
	assert_true(pthread_equal(j.done_thread, main_thread));
	assert_false(j.cancelled);
}

/* -- per-key ordering under contention -- */

#define ORD_KEYS 3
#define ORD_PER_KEY 300
#define ORD_UNKEYED 100

struct ord_item {
	struct exec_item item;
	int key; /* -1: pushed without a key */
	int seq;
};

static struct {
	atomic_int active[ORD_KEYS];  /* fn of this key running now */
	atomic_int last_fn[ORD_KEYS]; /* seq of the last fn of this key */
	int last_done[ORD_KEYS];
	atomic_int overlaps, fn_disorder;
	int done_disorder, done_off_loop, dones;
} ord;

static void ord_fn(struct exec_item *it)
{
	struct ord_item *o = EXEC_CONTAINER_OF(it, struct ord_item, item);
	unsigned seed = (unsigned)(o->key * 7919 + o->seq);

	if (o->key >= 0) {
		if (atomic_fetch_add(&ord.active[o->key], 1) != 0)
			atomic_fetch_add(&ord.overlaps, 1);
		if (atomic_load(&ord.last_fn[o->key]) != o->seq - 1)
			atomic_fetch_add(&ord.fn_disorder, 1);
	}
	usleep((useconds_t)(rand_r(&seed) % 200));
	if (o->key >= 0) {
		atomic_store(&ord.last_fn[o->key], o->seq);
		atomic_fetch_sub(&ord.active[o->key], 1);
	}
}

static void ord_done(struct exec_item *it)
{
	struct ord_item *o = EXEC_CONTAINER_OF(it, struct ord_item, item);

	if (!pthread_equal(pthread_self(), main_thread))
		ord.done_off_loop++;
	if (o->key >= 0) {
		if (ord.last_done[o->key] != o->seq - 1)
			ord.done_disorder++;
		ord.last_done[o->key] = o->seq;
	}
	ord.dones++;
}

static bool ord_all_done(void *arg)
{
	return ord.dones == *(int *)arg;
}

static void same_key_in_push_order_never_overlapping(void **state)
{
	static struct ord_item items[ORD_KEYS * ORD_PER_KEY + ORD_UNKEYED];
	static const char *const keys[ORD_KEYS] = { "vm/web1", "vm/db", "vm/cache" };
	struct t *t = *state;
	struct exec_queue *q = exec_queue_new(t->e, "store", 2);
	int n = 0;

	assert_non_null(q);
	memset(&ord, 0, sizeof(ord));
	for (int k = 0; k < ORD_KEYS; k++) {
		atomic_store(&ord.last_fn[k], -1);
		ord.last_done[k] = -1;
	}
	for (int seq = 0; seq < ORD_PER_KEY; seq++) {
		for (int k = 0; k < ORD_KEYS; k++, n++) {
			items[n].key = k;
			items[n].seq = seq;
			exec_item_init(&items[n].item, ord_fn, ord_done);
			exec_push(q, &items[n].item, keys[k]);
		}
		if (seq % (ORD_PER_KEY / ORD_UNKEYED) == 0) {
			items[n].key = -1;
			exec_item_init(&items[n].item, ord_fn, ord_done);
			exec_push(q, &items[n++].item, NULL);
		}
	}
	assert_int_equal(n, sizeof(items) / sizeof(items[0]));
	assert_true(run_until(t->loop, ord_all_done, &n, 6 * GENEROUS_MS));
	assert_int_equal(atomic_load(&ord.overlaps), 0);
	assert_int_equal(atomic_load(&ord.fn_disorder), 0);
	assert_int_equal(ord.done_disorder, 0);
	assert_int_equal(ord.done_off_loop, 0);
	for (int k = 0; k < ORD_KEYS; k++)
		assert_int_equal(ord.last_done[k], ORD_PER_KEY - 1);
	assert_int_equal(exec_queue_pending(q), 0);
}

/* -- parallelism, proven by a barrier both fns must reach -- */

static void body_barrier(struct job *j)
{
	count_add(j->arrived);
	j->gate_opened = count_wait(j->arrived, 2, GENEROUS_MS);
}

static bool both_done(void *arg)
{
	struct job *j = arg;

	return j[0].done_runs && j[1].done_runs;
}

static void barrier_pair(struct t *t, struct exec_queue *q, const char *k0, const char *k1)
{
	struct count arrived = COUNT_INIT;
	struct job j[2];

	job_init(&j[0], "0");
	job_init(&j[1], "1");
	for (int i = 0; i < 2; i++) {
		j[i].body = body_barrier;
		j[i].arrived = &arrived;
	}
	exec_push(q, &j[0].item, k0);
	exec_push(q, &j[1].item, k1);
	assert_true(run_until(t->loop, both_done, j, 3 * GENEROUS_MS));
	/* Run one after the other, the first would have waited in vain. */
	assert_true(j[0].gate_opened);
	assert_true(j[1].gate_opened);
}

static void different_keys_run_in_parallel(void **state)
{
	struct t *t = *state;
	struct exec_queue *q = exec_queue_new(t->e, "store", 2);
	char long0[EXEC_KEY_MAX + 1], long1[EXEC_KEY_MAX + 1];

	assert_non_null(q);
	barrier_pair(t, q, "vm/a", "vm/b");
	barrier_pair(t, q, NULL, NULL);
	barrier_pair(t, q, "vm/a", NULL);
	/* Keys of the full length that differ only in their last byte. */
	memset(long0, 'k', EXEC_KEY_MAX);
	memset(long1, 'k', EXEC_KEY_MAX);
	long0[EXEC_KEY_MAX - 1] = '0';
	long1[EXEC_KEY_MAX - 1] = '1';
	long0[EXEC_KEY_MAX] = long1[EXEC_KEY_MAX] = '\0';
	barrier_pair(t, q, long0, long1);
}

/* An item waiting for its key does not hold a thread: a later key passes it. */
static void waiting_key_does_not_block_others(void **state)
{
	struct t *t = *state;
	struct exec_queue *q = exec_queue_new(t->e, "store", 2);
	struct count gate = COUNT_INIT, arrived = COUNT_INIT;
	struct job a, b, c;

	assert_non_null(q);
	job_init(&a, "a");
	job_init(&b, "b");
	job_init(&c, "c");
	a.body = body_gated;
	a.gate = &gate;
	a.arrived = &arrived;
	exec_push(q, &a.item, "vm/k");
	assert_true(count_wait(&arrived, 1, GENEROUS_MS));
	exec_push(q, &b.item, "vm/k");
	exec_push(q, &c.item, "vm/other");
	assert_true(run_until(t->loop, job_done_cond, &c, GENEROUS_MS));
	assert_int_equal(atomic_load(&b.fn_runs), 0);
	assert_int_equal(exec_queue_pending(q), 2);
	count_add(&gate);
	assert_true(run_until(t->loop, job_done_cond, &b, GENEROUS_MS));
	assert_true(trace_pos("c") < trace_pos("a"));
	assert_true(trace_pos("a") < trace_pos("b"));
}

/* A hung "store" call does not delay "vol" work. */
static void queues_are_independent(void **state)
{
	struct t *t = *state;
	struct exec_queue *store = exec_queue_new(t->e, "store", 1);
	struct exec_queue *vol = exec_queue_new(t->e, "vol", 1);
	struct count gate = COUNT_INIT, arrived = COUNT_INIT;
	struct job hung, img;

	assert_non_null(store);
	assert_non_null(vol);
	job_init(&hung, "hung");
	job_init(&img, "img");
	hung.body = body_gated;
	hung.gate = &gate;
	hung.arrived = &arrived;
	exec_push(store, &hung.item, NULL);
	assert_true(count_wait(&arrived, 1, GENEROUS_MS));
	exec_push(vol, &img.item, NULL);
	assert_true(run_until(t->loop, job_done_cond, &img, GENEROUS_MS));
	assert_int_equal(exec_queue_pending(store), 1);
	count_add(&gate);
	assert_true(run_until(t->loop, job_done_cond, &hung, GENEROUS_MS));
}

/* -- shutdown -- */

static void open_gate_of(struct job *j)
{
	count_add(j->gate);
}

/*
 * f finished on "vol" before shutdown; a runs on "store" with b, c, d, x
 * queued behind it. Queues are made in both orders so that f's done must
 * come first by design, not by the order exec_free walks its queues.
 */
static void cancel_scenario(struct t *t, bool vol_first)
{
	struct exec_queue *vol = vol_first ? exec_queue_new(t->e, "vol", 1) : NULL;
	struct exec_queue *store = exec_queue_new(t->e, "store", 1);
	struct count gate = COUNT_INIT, arrived = COUNT_INIT;
	struct job f, a, b, c, d, x;

	if (!vol_first)
		vol = exec_queue_new(t->e, "vol", 1);
	assert_non_null(store);
	assert_non_null(vol);
	ntrace = 0;
	job_init(&f, "f");
	job_init(&a, "a");
	job_init(&b, "b");
	job_init(&c, "c");
	job_init(&d, "d");
	job_init(&x, "x");
	/* f finished before shutdown; its done, run first, lets a finish. */
	f.on_done = open_gate_of;
	f.gate = &gate;
	exec_push(vol, &f.item, NULL);
	for (uint64_t end = now_ms() + GENEROUS_MS; exec_queue_pending(vol) && now_ms() < end;)
		usleep(1000);
	assert_int_equal(exec_queue_pending(vol), 0);
	a.body = body_gated;
	a.gate = &gate;
	a.arrived = &arrived;
	exec_push(store, &a.item, "vm/k");
	assert_true(count_wait(&arrived, 1, GENEROUS_MS));
	exec_push(store, &b.item, "vm/k");
	exec_push(store, &c.item, NULL);
	exec_push(store, &d.item, "vm/k");
	exec_push(store, &x.item, "vm/x");
	assert_int_equal(exec_queue_pending(store), 5);

	exec_free(t->e, GENEROUS_MS);
	t->e = NULL;

	assert_int_equal(ntrace, 6);
	assert_string_equal(trace[0], "f");
	assert_false(f.cancelled);
	assert_true(a.gate_opened);
	assert_int_equal(atomic_load(&a.fn_runs), 1);
	assert_false(a.cancelled);
	for (struct job **jp = (struct job *[]){ &b, &c, &d, &x, NULL }; *jp; jp++) {
		struct job *j = *jp;

		assert_int_equal(atomic_load(&j->fn_runs), 0);
		assert_int_equal(j->done_runs, 1);
		assert_true(j->cancelled);
		assert_true(pthread_equal(j->done_thread, main_thread));
	}
	assert_true(pthread_equal(a.done_thread, main_thread));
	assert_true(trace_pos("a") < trace_pos("b"));
	assert_true(trace_pos("b") < trace_pos("d"));
}

static void shutdown_cancels_queued_items(void **state)
{
	struct t *t = *state;

	cancel_scenario(t, true);
	t->e = exec_new(t->loop);
	assert_non_null(t->e);
	cancel_scenario(t, false);
}

/* Static: the abandoned worker may still touch the item after the test. */
static struct job stuck;
static struct count stuck_gate = COUNT_INIT, stuck_arrived = COUNT_INIT;
static atomic_bool stuck_returned;

static void body_stuck(struct job *j)
{
	body_gated(j);
	atomic_store(&stuck_returned, true);
}

static void shutdown_leaves_stuck_item_behind(void **state)
{
	struct t *t = *state;
	struct exec_queue *store = exec_queue_new(t->e, "store", 1);
	struct exec_queue *vol = exec_queue_new(t->e, "vol", 2);
	struct job w, n, v;
	uint64_t t0, took;

	assert_non_null(store);
	assert_non_null(vol);
	job_init(&stuck, "stuck");
	job_init(&w, "w");
	job_init(&n, "n");
	job_init(&v, "v");
	stuck.body = body_stuck;
	stuck.gate = &stuck_gate;
	stuck.arrived = &stuck_arrived;
	exec_push(store, &stuck.item, "vm/stuck");
	assert_true(count_wait(&stuck_arrived, 1, GENEROUS_MS));
	exec_push(store, &w.item, "vm/stuck");
	exec_push(store, &n.item, NULL);
	exec_push(vol, &v.item, "vm/other");

	t0 = now_ms();
	exec_free(t->e, 200);
	took = now_ms() - t0;
	t->e = NULL;

	/* The stuck fn gives up after 2 * GENEROUS_MS: waiting for it fails. */
	assert_true(took < GENEROUS_MS);
	assert_false(atomic_load(&stuck_returned));
	assert_int_equal(stuck.done_runs, 0);
	assert_true(log_has(LOG_WARNING, "store", "vm/stuck"));
	assert_int_equal(v.done_runs, 1);
	for (struct job **jp = (struct job *[]){ &w, &n, NULL }; *jp; jp++) {
		struct job *j = *jp;

		assert_int_equal(atomic_load(&j->fn_runs), 0);
		assert_int_equal(j->done_runs, 1);
		assert_true(j->cancelled);
	}
	/* Let it return: it must touch nothing exec_free freed (ASan says). */
	count_add(&stuck_gate);
	for (uint64_t end = now_ms() + GENEROUS_MS; !atomic_load(&stuck_returned) && now_ms() < end;)
		usleep(1000);
	assert_true(atomic_load(&stuck_returned));
	usleep(50 * 1000); /* for the worker to get past its last lock */
}

static struct exec *late_e;
static struct exec_queue *late_q;
static struct job late;
static bool late_queue_refused;

/* A done run by exec_free pushes more work, as a chained operation would. */
static void push_late(struct job *j)
{
	job_init(&late, "late");
	exec_push(late_q, &late.item, "vm/k");
	errno = 0;
	late_queue_refused = !exec_queue_new(late_e, "late", 1) && errno == ESHUTDOWN;
}

static void push_during_shutdown_is_cancelled(void **state)
{
	struct t *t = *state;
	struct job p;

	late_e = t->e;
	late_q = exec_queue_new(t->e, "store", 1);
	assert_non_null(late_q);
	job_init(&p, "p");
	p.on_done = push_late;
	exec_push(late_q, &p.item, "vm/k");
	for (uint64_t end = now_ms() + GENEROUS_MS; exec_queue_pending(late_q) && now_ms() < end;)
		usleep(1000);

	exec_free(t->e, GENEROUS_MS);
	t->e = NULL;

	assert_int_equal(ntrace, 2);
	assert_string_equal(trace[0], "p");
	assert_false(p.cancelled);
	assert_string_equal(trace[1], "late");
	assert_true(late.cancelled);
	assert_int_equal(atomic_load(&late.fn_runs), 0);
	assert_true(pthread_equal(late.done_thread, main_thread));
	assert_true(late_queue_refused);
}

/* -- pushes from other threads -- */

#define PUSHERS 4
#define PER_PUSHER 50

struct pushed {
	struct exec_item item;
	int pusher, seq;
};

static struct {
	struct exec_queue *q;
	struct pushed items[PUSHERS][2 * PER_PUSHER];
	atomic_int active, overlaps, disorder;
	atomic_int last_seq[PUSHERS];
	atomic_int dones, done_off_loop;
} fg;

static void fg_fn(struct exec_item *it)
{
	struct pushed *p = EXEC_CONTAINER_OF(it, struct pushed, item);

	if (p->seq % 2 == 0) { /* the keyed ones */
		if (atomic_fetch_add(&fg.active, 1) != 0)
			atomic_fetch_add(&fg.overlaps, 1);
		if (atomic_load(&fg.last_seq[p->pusher]) != p->seq - 2)
			atomic_fetch_add(&fg.disorder, 1);
		usleep(20);
		atomic_store(&fg.last_seq[p->pusher], p->seq);
		atomic_fetch_sub(&fg.active, 1);
	}
}

static void fg_done(struct exec_item *it)
{
	if (!pthread_equal(pthread_self(), main_thread))
		atomic_fetch_add(&fg.done_off_loop, 1);
	atomic_fetch_add(&fg.dones, 1);
}

static void *pusher_main(void *arg)
{
	int id = (int)(intptr_t)arg;

	for (int seq = 0; seq < 2 * PER_PUSHER; seq++) {
		struct pushed *p = &fg.items[id][seq];

		p->pusher = id;
		p->seq = seq;
		exec_item_init(&p->item, fg_fn, fg_done);
		exec_push(fg.q, &p->item, seq % 2 == 0 ? "vm/shared" : NULL);
	}
	return NULL;
}

static bool fg_all_done(void *arg)
{
	return atomic_load(&fg.dones) == PUSHERS * 2 * PER_PUSHER;
}

static void push_from_foreign_threads(void **state)
{
	struct t *t = *state;
	pthread_t th[PUSHERS];

	memset(&fg, 0, sizeof(fg));
	fg.q = exec_queue_new(t->e, "store", 3);
	assert_non_null(fg.q);
	for (int i = 0; i < PUSHERS; i++)
		atomic_store(&fg.last_seq[i], -2);
	for (int i = 0; i < PUSHERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, pusher_main, (void *)(intptr_t)i), 0);
	/* The loop runs dones while the pushers push. */
	assert_true(run_until(t->loop, fg_all_done, NULL, 3 * GENEROUS_MS));
	for (int i = 0; i < PUSHERS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&fg.overlaps), 0);
	assert_int_equal(atomic_load(&fg.disorder), 0);
	assert_int_equal(atomic_load(&fg.done_off_loop), 0);
	for (int i = 0; i < PUSHERS; i++)
		assert_int_equal(atomic_load(&fg.last_seq[i]), 2 * PER_PUSHER - 2);
	assert_int_equal(exec_queue_pending(fg.q), 0);
}

/* -- re-use -- */

static struct exec_queue *reuse_q;

static void push_again_until_five(struct job *j)
{
	if (j->done_runs < 5)
		exec_push(reuse_q, &j->item, "vm/r");
}

static bool done_six_times(void *arg)
{
	return ((struct job *)arg)->done_runs == 6;
}

static bool done_five_times(void *arg)
{
	return ((struct job *)arg)->done_runs == 5;
}

static void item_reused_after_done(void **state)
{
	struct t *t = *state;
	struct job j;

	reuse_q = exec_queue_new(t->e, "io", 2);
	assert_non_null(reuse_q);
	job_init(&j, "r");
	j.on_done = push_again_until_five;
	exec_push(reuse_q, &j.item, "vm/r");
	assert_true(run_until(t->loop, done_five_times, &j, GENEROUS_MS));
	/* From outside a done too, with another key. */
	exec_push(reuse_q, &j.item, NULL);
	assert_true(run_until(t->loop, done_six_times, &j, GENEROUS_MS));
	assert_int_equal(atomic_load(&j.fn_runs), 6);
	assert_false(j.cancelled);
	assert_int_equal(exec_queue_pending(reuse_q), 0);
}

/* Pushing an item that is still queued aborts, in a child process. */
static void push_while_queued_aborts(void **state)
{
	struct t *t = *state;
	pid_t pid;
	int status = 0;

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		qb_loop_t *loop = qb_loop_create();
		struct exec *e = exec_new(loop);
		struct exec_queue *q = e ? exec_queue_new(e, "io", 1) : NULL;
		struct count gate = COUNT_INIT;
		struct job a, b;

		if (!q)
			_exit(2);
		job_init(&a, "a");
		job_init(&b, "b");
		a.body = body_gated;
		a.gate = &gate;
		exec_push(q, &a.item, NULL);
		exec_push(q, &b.item, NULL);
		exec_push(q, &b.item, NULL); /* b is queued: must abort */
		_exit(0);
	}
	for (uint64_t end = now_ms() + GENEROUS_MS; now_ms() < end;) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		usleep(1000);
	}
	if (!WIFSIGNALED(status) && !WIFEXITED(status)) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		fail_msg("child neither aborted nor exited");
	}
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	(void)t;
}

static void bad_arguments(void **state)
{
	struct t *t = *state;
	char name[EXEC_QUEUE_NAME_MAX + 2];

	exec_free(NULL, 0);
	errno = 0;
	assert_null(exec_queue_new(t->e, "io", 0));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(exec_queue_new(t->e, "", 1));
	assert_int_equal(errno, EINVAL);
	assert_null(exec_queue_new(t->e, NULL, 1));
	memset(name, 'q', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	errno = 0;
	assert_null(exec_queue_new(t->e, name, 1));
	assert_int_equal(errno, EINVAL);
	name[EXEC_QUEUE_NAME_MAX] = '\0';
	assert_non_null(exec_queue_new(t->e, name, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* First, while the process has the fewest threads to fork. */
		cmocka_unit_test_setup_teardown(push_while_queued_aborts, setup, teardown),
		cmocka_unit_test_setup_teardown(fn_on_worker_done_on_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(same_key_in_push_order_never_overlapping, setup, teardown),
		cmocka_unit_test_setup_teardown(different_keys_run_in_parallel, setup, teardown),
		cmocka_unit_test_setup_teardown(waiting_key_does_not_block_others, setup, teardown),
		cmocka_unit_test_setup_teardown(queues_are_independent, setup, teardown),
		cmocka_unit_test_setup_teardown(shutdown_cancels_queued_items, setup, teardown),
		cmocka_unit_test_setup_teardown(push_during_shutdown_is_cancelled, setup, teardown),
		cmocka_unit_test_setup_teardown(shutdown_leaves_stuck_item_behind, setup, teardown),
		cmocka_unit_test_setup_teardown(push_from_foreign_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(item_reused_after_done, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_arguments, setup, teardown),
	};
	int rc;

	main_thread = pthread_self();
	qb_log_init("test_exec", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	{
		int32_t lt = qb_log_custom_open(log_fn, NULL, NULL, NULL);

		qb_log_ctl(lt, QB_LOG_CONF_ENABLED, QB_TRUE);
		qb_log_filter_ctl(lt, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", LOG_DEBUG);
	}
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	qb_log_fini();
	return rc;
}

/*
 * sto_store_rados_watch: watches on the rados store (sto_store_rados.c),
 * and the notify that tells them of every put and del. Each namespace has
 * the helper object ".watch" (no key can start with '.'), watched by
 * sto_watch and notified with the key after every put and del. A watcher
 * that died without unwatching delays each notify by up to
 * NOTIFY_TIMEOUT_MS until its OSD drops the watch (osd_client_watch_timeout,
 * 30 s by default).
 *
 * No call waits for Ceph for ever (sto_store_rados.c): the op timeouts
 * bound watch registration and unwatch; the notify that follows a write,
 * which librados would wait for without limit once the OSD has taken it,
 * is waited for here with one. A watch whose OSD stops answering raises no
 * error by itself (the OSD is still "up" until the monitors hear
 * otherwise), so the watch thread also asks librados how long ago the
 * watch was last confirmed, and re-watches a stale one: changes notified
 * meanwhile may be lost, which the NULL callback says.
 */
#include "storage/sto_rados_priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WATCH_OBJ ".watch"
#define NOTIFY_TIMEOUT_MS 1000
#define REWATCH_DELAY_S 1
/* How often the watch thread checks its watch, and how old the last
 * confirmation may be: librados confirms a watch with a ping every
 * objecter_tick_interval (5 s), so three missed pings mean a hung OSD. */
#define WATCH_CHECK_S 2
#define WATCH_STALE_MS 15000

/* ---- notify ---- */

/*
 * A notify in flight. librados's synchronous notify waits for the OSD's
 * "all watchers answered" without a limit once the OSD has taken the
 * notify, so it is sent async and waited for with one. A notify given up
 * on may still complete: what librados writes into lives here, freed by
 * the last of the caller and the completion callback.
 */
struct notify_call {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* CLOCK_MONOTONIC */
	int refs;
	bool done;
	rados_completion_t c;
	char *reply;
	size_t reply_len;
};

static void notify_unref(struct notify_call *n)
{
	bool last;

	pthread_mutex_lock(&n->mu);
	last = --n->refs == 0;
	pthread_mutex_unlock(&n->mu);
	if (!last)
		return;
	if (n->reply)
		rados_buffer_free(n->reply);
	if (n->c)
		rados_aio_release(n->c);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mu);
	free(n);
}

static void on_notified(rados_completion_t c, void *arg)
{
	struct notify_call *n = arg;

	pthread_mutex_lock(&n->mu);
	n->done = true;
	pthread_cond_signal(&n->cv);
	pthread_mutex_unlock(&n->mu);
	notify_unref(n);
}

static struct notify_call *notify_call_new(void)
{
	struct notify_call *n = calloc(1, sizeof(*n));
	pthread_condattr_t ca;

	if (!n)
		return NULL;
	n->refs = 1;
	pthread_mutex_init(&n->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (rados_aio_create_completion2(n, on_notified, &n->c) < 0) {
		n->c = NULL;
		notify_unref(n);
		return NULL;
	}
	n->refs = 2; /* the caller's and the callback's */
	return n;
}

/* Wait for @n up to the OSD's notify timeout plus the op timeout: its
 * result, or -ETIMEDOUT. */
static int notify_wait(struct notify_call *n, unsigned op_timeout_s)
{
	struct timespec until;
	bool done;
	int rc = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += op_timeout_s + NOTIFY_TIMEOUT_MS / 1000 + 1;
	pthread_mutex_lock(&n->mu);
	while (!n->done && rc == 0)
		rc = pthread_cond_timedwait(&n->cv, &n->mu, &until);
	done = n->done;
	pthread_mutex_unlock(&n->mu);
	return done ? rados_aio_get_return_value(n->c) : -ETIMEDOUT;
}

void sto_rados_notify(rados_ioctx_t io, const char *key, const char *subject,
		      unsigned op_timeout_s)
{
	struct notify_call *n = notify_call_new();
	int rc = n ? 0 : -ENOMEM;

	if (n) {
		rc = rados_aio_notify(io, WATCH_OBJ, n->c, key,
				      (int)strlen(key), NOTIFY_TIMEOUT_MS,
				      &n->reply, &n->reply_len);
		if (rc < 0) /* never sent: no callback to come */
			notify_unref(n);
		else
			rc = notify_wait(n, op_timeout_s);
		notify_unref(n);
	}
	if (rc == -ETIMEDOUT) /* the OSD, or a watcher that never acked */
		STO_FAIL(LOG_WARNING, NULL, 0, rc,
			 "%s: cannot notify its watchers (the change itself is done): not all answered in time",
			 subject);
	else if (rc < 0 && rc != -ENOENT)
		sto_rados_fail(op_timeout_s, LOG_WARNING, subject,
			       "notify its watchers (the change itself is done)",
			       rc, NULL, 0);
}

/* ---- watches ---- */

struct watch_rados {
	struct sto_watch base; /* first: the front end's handle */
	rados_ioctx_t io;      /* in the watched namespace */
	rados_t cluster;
	char ns[STO_KEY_MAX + 1]; /* as the caller named it */
	char subject[STO_KEY_MAX + 16];
	sto_watch_fn fn;
	void *opaque;
	uint64_t handle;
	bool watching;
	unsigned op_timeout_s; /* the store's, for messages */
	/* A broken or stale watch is re-established by a thread of its own:
	 * librados must not be called back into from its callbacks. */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool broken, stop, started;
	pthread_t thread;
};

static void on_notify(void *arg, uint64_t notify_id, uint64_t handle,
		      uint64_t notifier_id, void *data, size_t len)
{
	struct watch_rados *w = arg;
	size_t ns_len = strlen(w->ns);
	char key[STO_KEY_MAX + 1];

	/* Ack first, so the writer's notify returns at once. */
	rados_notify_ack(w->io, WATCH_OBJ, notify_id, handle, NULL, 0);
	if (!data || len == 0 || len > STO_KEY_MAX)
		return;
	memcpy(key, data, len);
	key[len] = '\0';
	if (sto_key_valid(key) && !strncmp(key, w->ns, ns_len) &&
	    key[ns_len] == '/')
		w->fn(key, w->opaque);
}

static void on_error(void *arg, uint64_t handle, int err)
{
	struct watch_rados *w = arg;

	sto_rados_fail(w->op_timeout_s, LOG_WARNING, w->subject,
		       "keep watching (re-watching)", err, NULL, 0);
	pthread_mutex_lock(&w->mu);
	w->broken = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Make sure the watch object exists, then watch it. Raw librados result. */
static int watch_register(struct watch_rados *w)
{
	rados_write_op_t op = rados_create_write_op();
	int rc = op ? 0 : -ENOMEM;

	if (op) {
		rados_write_op_create(op, LIBRADOS_CREATE_IDEMPOTENT, NULL);
		rc = rados_write_op_operate(op, w->io, WATCH_OBJ, NULL, 0);
		rados_release_write_op(op);
	}
	if (rc == 0)
		rc = rados_watch2(w->io, WATCH_OBJ, &w->handle, on_notify,
				  on_error, w);
	w->watching = rc == 0;
	return rc;
}

static bool rewatch(struct watch_rados *w)
{
	int rc;

	if (w->watching)
		rados_unwatch2(w->io, w->handle);
	rc = watch_register(w);
	if (rc < 0)
		sto_rados_fail(w->op_timeout_s, LOG_WARNING, w->subject,
			       "watch it again (retrying)", rc, NULL, 0);
	else
		qb_log(LOG_NOTICE, "%s: watching again (changes meanwhile may be missed: re-reading)",
		       w->subject);
	return rc == 0;
}

/* Whether a watch with no error reported needs re-watching all the same:
 * its OSD has not confirmed it for WATCH_STALE_MS (hung, or cut off), or
 * librados knows an error on_error has not told yet. No round trip. */
static bool watch_stale(struct watch_rados *w)
{
	int age = w->watching ? rados_watch_check(w->io, w->handle) : -ENOTCONN;

	if (age >= 0 && age < WATCH_STALE_MS)
		return false;
	if (age >= 0)
		qb_log(LOG_WARNING,
		       "%s: its OSD has not confirmed the watch for %d s (re-watching)",
		       w->subject, age / 1000);
	else
		sto_rados_fail(w->op_timeout_s, LOG_DEBUG, w->subject,
			       "keep watching (re-watching)", age, NULL, 0);
	return true;
}

/* Sleep @s seconds or until signalled; @w->mu held. */
static void watch_wait(struct watch_rados *w, unsigned s)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += s;
	pthread_cond_timedwait(&w->cv, &w->mu, &until);
}

static void *rewatch_thread(void *arg)
{
	struct watch_rados *w = arg;
	bool broken, rewatched;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		broken = w->broken;
		pthread_mutex_unlock(&w->mu);
		if (!broken)
			broken = watch_stale(w);
		rewatched = broken && rewatch(w);
		if (rewatched) /* what happened while it was broken is unknown */
			w->fn(NULL, w->opaque);
		pthread_mutex_lock(&w->mu);
		/* An error meanwhile was the old watch's once re-watched; the
		 * new one's shows in the next check. */
		w->broken = rewatched ? false : broken || w->broken;
		if (!w->stop)
			watch_wait(w, w->broken ? REWATCH_DELAY_S : WATCH_CHECK_S);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

void sto_rados_watch_free(struct sto_watch *base)
{
	struct watch_rados *w = (struct watch_rados *)base;

	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	if (w->watching)
		rados_unwatch2(w->io, w->handle);
	rados_watch_flush(w->cluster); /* no callback runs after this */
	sto_rados_io_close(w->io);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

struct sto_watch *sto_rados_watch_new(struct sto_store *st, const char *ns,
				      sto_watch_fn fn, void *opaque,
				      char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	struct watch_rados *w = calloc(1, sizeof(*w));
	char rns[STO_RADOS_NS_PREFIX_MAX + STO_KEY_MAX + 1];
	int rc;

	if (!w) {
		STO_FAIL(LOG_ERR, err, errlen, -ENOMEM,
			 "namespace %s: cannot watch it: out of memory", ns);
		return NULL;
	}
	w->base.st = st;
	w->cluster = r->cluster;
	w->op_timeout_s = r->op_timeout_s;
	w->fn = fn;
	w->opaque = opaque;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	snprintf(w->ns, sizeof(w->ns), "%s", ns);
	snprintf(w->subject, sizeof(w->subject), "namespace %s", ns);
	snprintf(rns, sizeof(rns), "%s%s", r->prefix, ns);
	rc = sto_rados_io_open(r, w->subject, rns, &w->io, err, errlen);
	if (rc == 0 && (rc = watch_register(w)) < 0)
		sto_rados_fail(r->op_timeout_s, LOG_ERR, w->subject, "watch it",
			       rc, err, errlen);
	if (rc == 0 && (rc = sto_thread_start(&w->thread, rewatch_thread, w)) < 0)
		STO_FAIL(LOG_ERR, err, errlen, rc,
			 "namespace %s: cannot start the watch thread: %s", ns,
			 sto_errstr(-rc));
	w->started = rc == 0;
	if (rc < 0) {
		sto_rados_watch_free(&w->base);
		return NULL;
	}
	return &w->base;
}

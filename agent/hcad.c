/*
 * hcad: the node agent. Wires config, logging, the state store, volumes, the
 * VM manager and the local API onto one qb_loop. Runs in the foreground
 * (systemd's job to daemonize); VMs are separate daemonized QEMUs, so hcad
 * may stop, crash or restart without touching them.
 *
 * Storage faults are bounded here in two ways. A probe thread of its own
 * (not the work queue, which a hung Ceph fills with stuck calls) asks the
 * store every PROBE_EVERY_S whether it answers, and the loop turns the
 * results into the storage health every request and `cluster status` see.
 * And a stop signal arms a hard deadline: teardown may block in librados
 * (unwatch, rados_shutdown) when Ceph hangs, so after STOP_DEADLINE_S the
 * process simply ends, leaving its VMs as any stop does.
 */
#include "agent/api_server.h"
#include "agent/conf.h"
#include "agent/memb.h"
#include "agent/peers.h"
#include "agent/vmm.h"
#include "base/exec.h"
#include "hypervisor/hv.h"
#include "storage/sto.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <qb/qbdefs.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

struct probe;

struct hcad {
	struct conf conf;
	const char *conf_path;
	qb_loop_t *loop;
	int pidfd;
	int log_fd;          /* qb_log target of conf.log_file, -1 if none */
	char pidfile[128];
	struct sto_store *store;
	struct sto_vols *vols;
	struct sto_vols *rbd;
	qb_loop_timer_handle ceph_retry;
	struct exec *exec;
	struct exec_queue *q_store; /* Ceph and volume calls, keyed by record */
	struct exec_queue *q_sys;   /* connecting to Ceph, taps */
	struct memb *memb;
	struct peers *peers;
	struct vmm *vmm;
	struct api_server *api;
	struct probe *probe;         /* NULL until the store is open */
	qb_loop_timer_handle health_timer;
	bool degraded;               /* as last told to the vmm and the log */
	uint64_t degraded_since_ms;
	char health[160];            /* what the vmm was last told */
	bool stopping;               /* a stop signal came: start nothing new */
	Hca__Accel accel;
	char accel_reason[160];
	char qemu_version[160];
};

/* Logging is up by the time anything can die: one line, to the log targets. */
static void die(const char *msg)
{
	qb_log(LOG_CRIT, "%s", msg);
	qb_log_fini();
	exit(1);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: hcad [-c CONFIG] [--check-config] [--version]\n"
		   "  -c, --config PATH   configuration file (default " CONF_DEFAULT_PATH ")\n"
		   "  --check-config      parse the configuration, report and exit\n");
}

/* Let messages up to @level through on every log target in use. */
static void log_level_apply(const struct hcad *d, int level)
{
	qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_CLEAR_ALL, QB_LOG_FILTER_FILE, "*", LOG_TRACE);
	qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", level);
	if (d->log_fd < 0)
		return;
	qb_log_filter_ctl(d->log_fd, QB_LOG_FILTER_CLEAR_ALL, QB_LOG_FILTER_FILE, "*", LOG_TRACE);
	qb_log_filter_ctl(d->log_fd, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", level);
}

static void log_setup(struct hcad *d)
{
	const struct conf *c = &d->conf;
	int fd = -1;

	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	qb_log_format_set(QB_LOG_STDERR, "%t [%p] %b");
	qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, QB_TRUE);
	if (c->log_file[0] && (fd = qb_log_file_open(c->log_file)) >= 0) {
		qb_log_format_set(fd, "%t [%p] %b");
		qb_log_ctl(fd, QB_LOG_CONF_ENABLED, QB_TRUE);
	}
	d->log_fd = fd < 0 ? -1 : fd;
	log_level_apply(d, c->log_level);
	if (c->log_file[0] && fd < 0)
		qb_log(LOG_ERR, "cannot open log file %s: %s", c->log_file, strerror(-fd));
}

static void load_conf(struct hcad *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	char err[512];
	int o, check = 0;

	conf_defaults(&d->conf);
	while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (o) {
		case 'c': d->conf_path = optarg; break;
		case 'C': check = 1; break;
		case 'V': printf("hcad 0.1.0\n"); exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hcad: unexpected argument '%s'\n", argv[optind]);
		exit(2);
	}
	if (conf_load(&d->conf, d->conf_path ? d->conf_path : CONF_DEFAULT_PATH,
		      !d->conf_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "hcad: %s\n", err);
		exit(2);
	}
	if (check) {
		printf("%s: ok\n", d->conf_path ? d->conf_path : CONF_DEFAULT_PATH);
		exit(0);
	}
}

static void make_dir(const char *path)
{
	char msg[512];

	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		snprintf(msg, sizeof(msg), "cannot create %s: %s", path, strerror(errno));
		die(msg);
	}
}

/* One hcad per state dir: the lock outlives a crash only as long as the process. */
static void take_pidfile(struct hcad *d)
{
	char msg[256], buf[32] = "";

	snprintf(d->pidfile, sizeof(d->pidfile), "%s/hcad.pid", d->conf.state_dir);
	d->pidfd = open(d->pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->pidfd < 0) {
		snprintf(msg, sizeof(msg), "cannot open %s: %s", d->pidfile, strerror(errno));
		die(msg);
	}
	if (flock(d->pidfd, LOCK_EX | LOCK_NB) < 0) {
		if (pread(d->pidfd, buf, sizeof(buf) - 1, 0) < 0)
			buf[0] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		snprintf(msg, sizeof(msg), "another hcad (pid %s) already uses %s",
			 buf[0] ? buf : "?", d->conf.state_dir);
		die(msg);
	}
	snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(d->pidfd, 0) < 0 || pwrite(d->pidfd, buf, strlen(buf), 0) < 0)
		qb_log(LOG_WARNING, "cannot write %s: %s", d->pidfile, strerror(errno));
}

static void check_qemu(struct hcad *d)
{
	int major = 0, minor = 0;
	char text[160], msg[512];

	if (hv_qemu_version(d->conf.qemu, &major, &minor, text, sizeof(text)) < 0) {
		snprintf(msg, sizeof(msg), "QEMU at %s unusable: %s", d->conf.qemu, text);
		die(msg);
	}
	if (major < HV_QEMU_MIN_MAJOR) {
		snprintf(msg, sizeof(msg), "QEMU %d.%d at %s is too old: hca needs QEMU %d.0 or "
			 "newer (Debian 12: qemu-system-x86 from bookworm-backports, see "
			 "deploy/install-deps.sh)", major, minor, d->conf.qemu, HV_QEMU_MIN_MAJOR);
		die(msg);
	}
	snprintf(d->qemu_version, sizeof(d->qemu_version), "%d.%d", major, minor);
}

static void choose_accel(struct hcad *d)
{
	char why[160];
	Hca__Accel detected = hv_accel_detect(why, sizeof(why));

	switch (d->conf.accel) {
	case CONF_ACCEL_KVM:
		if (detected != HCA__ACCEL__ACCEL_KVM) {
			char msg[256];
			snprintf(msg, sizeof(msg), "accel = kvm, but KVM cannot run guests here (%s)", why);
			die(msg);
		}
		break;
	case CONF_ACCEL_TCG:
		detected = HCA__ACCEL__ACCEL_TCG;
		snprintf(why, sizeof(why), "tcg: forced by the configuration");
		break;
	}
	d->accel = detected;
	snprintf(d->accel_reason, sizeof(d->accel_reason), "%s", why);
	qb_log(LOG_INFO, "accelerator: %s", why);
}

/* ---- the stop deadline ---- */

#define STOP_DEADLINE_S 3

/*
 * Whatever Ceph does, hcad ends within STOP_DEADLINE_S of a stop signal: a
 * librados call in teardown (unwatch, rados_shutdown, a worker's op) may
 * wait up to the op timeout each, and several add up; and the loop that
 * handles the signal may itself be in a store call. So the clock starts in
 * the signal handler: libqb's handler (which wakes the loop) is chained
 * behind one that posts a semaphore, and a thread waiting on it gives
 * teardown STOP_DEADLINE_S, then writes one line and ends the process.
 */
static struct {
	sem_t armed;              /* posted by the signal handler */
	struct sigaction qb_term; /* libqb's handlers, called after ours */
	struct sigaction qb_int;
	pthread_t thread;
	const char *log_file;     /* conf.log_file, or "" */
} deadline;

static void on_stop_raw(int sig, siginfo_t *si, void *ctx)
{
	const struct sigaction *qb = sig == SIGINT ? &deadline.qb_int : &deadline.qb_term;
	int saved = errno;

	sem_post(&deadline.armed); /* async-signal-safe */
	errno = saved;
	if (qb->sa_flags & SA_SIGINFO)
		qb->sa_sigaction(sig, si, ctx);
	else if (qb->sa_handler != SIG_DFL && qb->sa_handler != SIG_IGN)
		qb->sa_handler(sig);
}

/* One line in the log's own format, to stderr and the log file, with
 * write(2): the main thread may be anywhere in teardown, qb_log included. */
static void deadline_write(void)
{
	time_t now = time(NULL);
	char stamp[32] = "", line[192];
	struct tm tm;
	int fd = deadline.log_file[0] ? open(deadline.log_file, O_WRONLY | O_APPEND | O_CLOEXEC) : -1;
	ssize_t w;
	int n;

	if (localtime_r(&now, &tm))
		strftime(stamp, sizeof(stamp), "%b %d %H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s [crit] teardown not done %d s after the stop "
		     "signal (storage not answering?): exiting now, VMs keep running\n",
		     stamp, STOP_DEADLINE_S);
	n = n < 0 ? 0 : n >= (int)sizeof(line) ? (int)sizeof(line) - 1 : n;
	w = write(STDERR_FILENO, line, (size_t)n);
	if (fd >= 0)
		w = write(fd, line, (size_t)n);
	(void)w; /* a failure has nowhere left to be told */
}

static void *deadline_thread(void *arg)
{
	struct timespec left = { .tv_sec = STOP_DEADLINE_S };

	while (sem_wait(&deadline.armed) < 0)
		; /* EINTR */
	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &left, &left) == EINTR)
		;
	deadline_write();
	_exit(0);
}

/* After qb_loop_signal_add() for SIGTERM and SIGINT, which install the
 * handlers chained here. Dies if the thread cannot start. */
static void deadline_setup(const struct hcad *d)
{
	struct sigaction sa = { .sa_sigaction = on_stop_raw, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigset_t all, old;
	int rc;

	deadline.log_file = d->conf.log_file;
	sem_init(&deadline.armed, 0, 0);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&deadline.thread, NULL, deadline_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		die("cannot start the stop deadline thread");
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, NULL, &deadline.qb_term);
	sigaction(SIGINT, NULL, &deadline.qb_int);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

static int32_t on_stop_signal(int32_t sig, void *data)
{
	struct hcad *d = data;

	if (d->stopping)
		return 0;
	qb_log(LOG_NOTICE, "signal %d: stopping within %d s (VMs keep running)", sig,
	       STOP_DEADLINE_S);
	d->stopping = true;
	qb_loop_stop(d->loop);
	return 0;
}

static int32_t on_hup(int32_t sig, void *data)
{
	struct hcad *d = data;
	struct conf c;
	char err[512];

	conf_defaults(&c);
	if (conf_load(&c, d->conf_path ? d->conf_path : CONF_DEFAULT_PATH, !d->conf_path,
		      err, sizeof(err)) < 0) {
		qb_log(LOG_ERR, "SIGHUP: configuration not reloaded: %s", err);
		return 0;
	}
	/* Only what can change safely at run time; the rest needs a restart. */
	d->conf.log_level = c.log_level;
	d->conf.qmp_timeout_ms = c.qmp_timeout_ms;
	d->conf.shutdown_timeout_s = c.shutdown_timeout_s;
	log_level_apply(d, c.log_level); /* the log file too, not only stderr */
	if (d->peers && peers_reload(d->peers, err, sizeof(err)) < 0)
		qb_log(LOG_ERR, "SIGHUP: %s", err);
	qb_log(LOG_NOTICE, "SIGHUP: configuration reloaded");
	return 0;
}

/* ---- storage health: a probe thread, judged on the loop ---- */

#define PROBE_EVERY_S 2
#define PROBE_STALE_S 6 /* no probe has succeeded for this long: degraded */
#define HEALTH_TICK_MS 500

/* Shared between the probe thread and the loop, under mu. */
struct probe {
	struct sto_store *store; /* borrowed; closed only after probe_free */
	int efd;                 /* eventfd: a result came, for the loop */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* CLOCK_MONOTONIC: wakes a stop */
	bool stop;
	uint64_t done_ms;        /* when the last probe came back */
	uint64_t ok_ms;          /* when the last one succeeded */
	int rc;                  /* the last one's result */
	char err[256];           /* its error */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sleep until @until_ms or a stop; mu held. */
static void probe_sleep(struct probe *p, uint64_t until_ms)
{
	struct timespec ts = { .tv_sec = (time_t)(until_ms / 1000),
			       .tv_nsec = (long)(until_ms % 1000) * 1000000 };

	while (!p->stop && now_ms() < until_ms)
		if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
			break;
}

static void *probe_thread(void *arg)
{
	struct probe *p = arg;
	const uint64_t one = 1;
	char err[sizeof(p->err)];
	uint64_t start;
	int rc;

	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		pthread_mutex_unlock(&p->mu);
		start = now_ms();
		err[0] = '\0';
		rc = sto_store_probe(p->store, err, sizeof(err));
		pthread_mutex_lock(&p->mu);
		p->rc = rc;
		p->done_ms = now_ms();
		if (rc == 0)
			p->ok_ms = p->done_ms;
		memcpy(p->err, err, sizeof(err));
		if (write(p->efd, &one, sizeof(one)) < 0) /* full: the loop knows */
			qb_log(LOG_DEBUG, "storage probe: cannot wake the loop: %m");
		probe_sleep(p, start + PROBE_EVERY_S * 1000u);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Stop and free @p: waits for a probe in flight (bounded by the op timeout). */
static void probe_free(struct probe *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->thread, NULL);
	close(p->efd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* Its thread blocks every signal: they stay with the loop. NULL, errno set. */
static struct probe *probe_new(struct sto_store *store)
{
	struct probe *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;
	sigset_t all, old;
	int rc;

	if (!p)
		return NULL;
	p->store = store;
	p->done_ms = p->ok_ms = now_ms();
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&p->thread, NULL, probe_thread, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		close(p->efd);
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->mu);
		free(p);
		errno = rc;
		return NULL;
	}
	return p;
}

/* Tell the vmm (and the log, once per transition) what @health now is. */
static void health_set(struct hcad *d, bool degraded, const char *health)
{
	uint64_t now = now_ms();

	if (degraded && !d->degraded) {
		qb_log(LOG_WARNING, "storage %s", health);
		d->degraded_since_ms = now;
	} else if (!degraded && d->degraded) {
		qb_log(LOG_NOTICE, "storage ok again (degraded for %u s)",
		       (unsigned)((now - d->degraded_since_ms + 500) / 1000));
	}
	d->degraded = degraded;
	if (strcmp(health, d->health)) {
		snprintf(d->health, sizeof(d->health), "%s", health);
		vmm_set_storage_health(d->vmm, d->health);
	}
}

/*
 * The health from the probes so far: degraded if the last probe to come
 * back failed (its error says why), or if none has succeeded for
 * PROBE_STALE_S, a probe still hanging included.
 */
static void health_judge(struct hcad *d)
{
	struct probe *p = d->probe;
	const char *who = strcmp(sto_store_backend(d->store), "rados") ? "the store" : "Ceph";
	uint64_t now = now_ms(), done, ok;
	char err[sizeof(p->err)], health[sizeof(d->health)];
	int rc;

	pthread_mutex_lock(&p->mu);
	done = p->done_ms;
	ok = p->ok_ms;
	rc = p->rc;
	memcpy(err, p->err, sizeof(err));
	pthread_mutex_unlock(&p->mu);
	if (rc < 0 && now - done < PROBE_STALE_S * 1000u)
		snprintf(health, sizeof(health), "degraded: %s", err);
	else if (now - ok >= PROBE_STALE_S * 1000u)
		snprintf(health, sizeof(health), "degraded: no answer from %s for %u s",
			 who, (unsigned)((now - ok) / 1000));
	else
		snprintf(health, sizeof(health), "ok");
	health_set(d, strcmp(health, "ok") != 0, health);
}

static int32_t on_probe_result(int32_t fd, int32_t revents, void *data)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		qb_log(LOG_DEBUG, "storage probe: cannot read its eventfd: %m");
	health_judge(data);
	return 0;
}

/* A probe that hangs sends no result: judge by the clock as well. */
static void on_health_timer(void *data)
{
	struct hcad *d = data;

	health_judge(d);
	qb_loop_timer_add(d->loop, QB_LOOP_LOW, HEALTH_TICK_MS * QB_TIME_NS_IN_MSEC, d,
			  on_health_timer, &d->health_timer);
}

/* The store is open: watch its health from now on. */
static void health_start(struct hcad *d)
{
	d->probe = probe_new(d->store);
	if (!d->probe) {
		qb_log(LOG_ERR, "storage probe: cannot start its thread: %m; "
		       "storage health is not watched");
		return;
	}
	snprintf(d->health, sizeof(d->health), "ok");
	qb_loop_poll_add(d->loop, QB_LOOP_MED, d->probe->efd, POLLIN, d, on_probe_result);
	qb_loop_timer_add(d->loop, QB_LOOP_LOW, HEALTH_TICK_MS * QB_TIME_NS_IN_MSEC, d,
			  on_health_timer, &d->health_timer);
}

/* Nothing more reaches the loop; the thread keeps running until
 * probe_free, which may wait for a hung probe. */
static void health_stop(struct hcad *d)
{
	if (!d->probe)
		return;
	if (d->health_timer)
		qb_loop_timer_del(d->loop, d->health_timer);
	d->health_timer = 0;
	qb_loop_poll_del(d->loop, d->probe->efd);
	pthread_mutex_lock(&d->probe->mu);
	d->probe->stop = true; /* no new probe starts */
	pthread_cond_signal(&d->probe->cv);
	pthread_mutex_unlock(&d->probe->mu);
}

/* ---- Ceph: connecting blocks, so it runs on a worker, and retries ---- */

#define CEPH_RETRY_MS 5000u

struct ceph_open {
	struct exec_item item;
	struct hcad *d;
	struct sto_store *store;
	struct sto_vols *rbd;
	char err[512];
};

static void ceph_open_fn(struct exec_item *it)
{
	struct ceph_open *c = EXEC_CONTAINER_OF(it, struct ceph_open, item);
	const struct conf *cf = &c->d->conf;
	unsigned timeout_s = (unsigned)cf->ceph_op_timeout_s;

	c->store = sto_store_open_rados(cf->ceph_conf, cf->ceph_client, cf->rados_pool,
					timeout_s, c->err, sizeof(c->err));
	if (c->store)
		c->rbd = sto_vols_open_rbd(cf->ceph_conf, cf->ceph_client, cf->rados_pool,
					   timeout_s, c->err, sizeof(c->err));
	if (c->store && !c->rbd) {
		sto_store_close(c->store);
		c->store = NULL;
	}
}

static void ceph_retry(void *data);

static void ceph_open_done(struct exec_item *it)
{
	struct ceph_open *c = EXEC_CONTAINER_OF(it, struct ceph_open, item);
	struct hcad *d = c->d;
	char err[512];

	if (d->stopping) {
		/* Run by exec_free in teardown: the handles are only
		 * kept so that they are closed. */
		d->store = c->store;
		d->rbd = c->rbd;
	} else if (!c->store) {
		qb_log(LOG_ERR, "storage unavailable: %s; retrying in %u s", c->err,
		       CEPH_RETRY_MS / 1000);
		vmm_set_storage_health(d->vmm, c->err);
		qb_loop_timer_add(d->loop, QB_LOOP_LOW, CEPH_RETRY_MS * QB_TIME_NS_IN_MSEC, d,
				  ceph_retry, &d->ceph_retry);
	} else {
		d->store = c->store;
		d->rbd = c->rbd;
		qb_log(LOG_NOTICE, "storage: connected to Ceph pool %s (op timeout %u s)",
		       d->conf.rados_pool, (unsigned)d->conf.ceph_op_timeout_s);
		if (vmm_set_storage(d->vmm, d->store, d->rbd, err, sizeof(err)) < 0)
			qb_log(LOG_ERR, "storage: %s", err);
		health_start(d);
	}
	free(c);
}

static void ceph_retry(void *data)
{
	struct hcad *d = data;
	struct ceph_open *c = calloc(1, sizeof(*c));

	d->ceph_retry = 0;
	if (!c || d->stopping) {
		free(c);
		return;
	}
	c->d = d;
	exec_item_init(&c->item, ceph_open_fn, ceph_open_done);
	exec_push(d->q_sys, &c->item, NULL);
}

/* Membership changed: what depends on it is rebuilt here, in one place. */
static void on_memb_resync(const struct memb_view *v, void *opaque)
{
	struct hcad *d = opaque;

	if (d->vmm)
		vmm_resync(d->vmm);
}

static const struct memb_ops memb_ops = { .resync = on_memb_resync };

static void open_storage(struct hcad *d)
{
	char path[128], err[512];

	make_dir(d->conf.state_dir);
	snprintf(path, sizeof(path), "%s/vm", d->conf.state_dir);
	make_dir(path);
	take_pidfile(d);
	if (d->conf.store == CONF_STORE_DIR) {
		snprintf(path, sizeof(path), "%s/store", d->conf.state_dir);
		d->store = sto_store_open_dir(path, err, sizeof(err));
		if (!d->store)
			die(err);
	}
	d->vols = sto_vols_open_file(d->conf.storage_dir, d->conf.qemu_img, err, sizeof(err));
	if (!d->vols)
		die(err);
}

int main(int argc, char **argv)
{
	struct hcad d = { .pidfd = -1, .log_fd = -1 };
	char err[512];

	load_conf(&d, argc, argv);
	qb_log_init("hcad", LOG_DAEMON, d.conf.log_level);
	log_setup(&d);
	if (geteuid() != 0)
		die("must run as root (it manages QEMU processes, taps and root-only sockets)");
	signal(SIGPIPE, SIG_IGN);
	umask(077);
	open_storage(&d); /* first: takes the state dir's lock */
	check_qemu(&d);
	choose_accel(&d);
	d.loop = qb_loop_create();
	d.exec = d.loop ? exec_new(d.loop) : NULL;
	/* four for the store: a call stuck in Ceph holds a thread for at most
	 * the op timeout, and steps of one record wait without holding one */
	d.q_store = d.exec ? exec_queue_new(d.exec, "store", 4) : NULL;
	d.q_sys = d.q_store ? exec_queue_new(d.exec, "sys", 2) : NULL;
	if (!d.q_sys)
		die("cannot create the event loop and its workers");
	d.memb = memb_new(d.loop, d.conf.cluster == CONF_CLUSTER_COROSYNC ? "corosync" : "local",
			  d.conf.node_name, &memb_ops, &d, err, sizeof(err));
	if (!d.memb)
		die(err);
	d.vmm = vmm_new(&(struct vmm_cfg){
		.loop = d.loop, .conf = &d.conf, .store = d.store, .vols = d.vols, .rbd = NULL,
		.exec = d.exec, .q_store = d.q_store, .q_sys = d.q_sys, .memb = d.memb, .accel = d.accel, .accel_reason = d.accel_reason,
		.qemu_version = d.qemu_version });
	if (!d.vmm || (d.store && vmm_load(d.vmm, err, sizeof(err)) < 0))
		die(d.vmm ? err : "out of memory");
	if (d.store)
		health_start(&d);
	else
		ceph_retry(&d); /* first attempt now, on a worker */
	if (d.conf.cluster == CONF_CLUSTER_COROSYNC) {
		/* A node without its certificate still runs VMs; it only cannot
		 * talk to its peers, and says why. */
		d.peers = peers_new(d.loop, &d.conf, d.memb, err, sizeof(err));
		if (!d.peers)
			qb_log(LOG_ERR, "%s; node channel off", err);
		vmm_set_peers(d.vmm, d.peers, d.peers ? NULL : err);
	}
	d.api = api_server_new(d.loop, d.conf.api_name, d.vmm, err, sizeof(err));
	if (!d.api)
		die(err);
	qb_loop_signal_add(d.loop, QB_LOOP_HIGH, SIGTERM, &d, on_stop_signal, NULL);
	qb_loop_signal_add(d.loop, QB_LOOP_HIGH, SIGINT, &d, on_stop_signal, NULL);
	qb_loop_signal_add(d.loop, QB_LOOP_HIGH, SIGHUP, &d, on_hup, NULL);
	deadline_setup(&d);
	qb_log(LOG_NOTICE, "hcad ready: node %s, API '%s', state %s, QEMU %s, %s",
	       d.conf.node_name, d.conf.api_name, d.conf.state_dir, d.qemu_version,
	       hv_accel_name(d.accel));
	qb_loop_run(d.loop);

	/* Nothing new comes in, then nothing new is queued, then what is
	 * queued finishes, then what it used goes: the store last. Any step
	 * may wait on a hung Ceph; the stop deadline bounds them all. */
	api_server_free(d.api);
	health_stop(&d);
	if (d.ceph_retry)
		qb_loop_timer_del(d.loop, d.ceph_retry);
	vmm_shutdown(d.vmm);
	exec_free(d.exec, 2000); /* inside STOP_DEADLINE_S */
	vmm_free(d.vmm);
	peers_free(d.peers);
	memb_free(d.memb);
	qb_loop_destroy(d.loop);
	probe_free(d.probe);
	sto_vols_close(d.vols);
	sto_vols_close(d.rbd);
	sto_store_close(d.store);
	unlink(d.pidfile);
	qb_log(LOG_NOTICE, "hcad stopped");
	qb_log_fini();
	return 0;
}

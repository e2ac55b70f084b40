/*
 * hcad: the node agent. Wires config, logging, the state store, volumes, the
 * VM manager and the local API onto one qb_loop. Runs in the foreground
 * (systemd's job to daemonize); VMs are separate daemonized QEMUs, so hcad
 * may stop, crash or restart without touching them.
 */
#include "agent/api_server.h"
#include "agent/conf.h"
#include "agent/memb.h"
#include "agent/peers.h"
#include "agent/vmm.h"
#include "agent/work.h"
#include "hypervisor/hv.h"
#include "storage/sto.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <qb/qbdefs.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

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
	struct work_queue *work;
	struct memb *memb;
	struct peers *peers;
	struct vmm *vmm;
	struct api_server *api;
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

static int32_t on_stop_signal(int32_t sig, void *data)
{
	struct hcad *d = data;

	qb_log(LOG_NOTICE, "signal %d: stopping (VMs keep running)", sig);
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

/* ---- Ceph: connecting blocks, so it runs on a worker, and retries ---- */

#define CEPH_RETRY_MS 5000u

struct ceph_open {
	struct hcad *d;
	struct sto_store *store;
	struct sto_vols *rbd;
	char err[512];
};

static void ceph_open_fn(void *arg)
{
	struct ceph_open *c = arg;
	const struct conf *cf = &c->d->conf;

	c->store = sto_store_open_rados(cf->ceph_conf, cf->ceph_client, cf->rados_pool,
					c->err, sizeof(c->err));
	if (c->store)
		c->rbd = sto_vols_open_rbd(cf->ceph_conf, cf->ceph_client, cf->rados_pool,
					   c->err, sizeof(c->err));
	if (c->store && !c->rbd) {
		sto_store_close(c->store);
		c->store = NULL;
	}
}

static void ceph_retry(void *data);

static void ceph_open_done(void *arg)
{
	struct ceph_open *c = arg;
	struct hcad *d = c->d;
	char err[512];

	if (!c->store) {
		qb_log(LOG_ERR, "storage unavailable: %s; retrying in %u s", c->err,
		       CEPH_RETRY_MS / 1000);
		vmm_set_storage_health(d->vmm, c->err);
		qb_loop_timer_add(d->loop, QB_LOOP_LOW, CEPH_RETRY_MS * QB_TIME_NS_IN_MSEC, d,
				  ceph_retry, &d->ceph_retry);
	} else {
		d->store = c->store;
		d->rbd = c->rbd;
		qb_log(LOG_NOTICE, "storage: connected to Ceph pool %s", d->conf.rados_pool);
		if (vmm_set_storage(d->vmm, d->store, d->rbd, err, sizeof(err)) < 0)
			qb_log(LOG_ERR, "storage: %s", err);
	}
	free(c);
}

static void ceph_retry(void *data)
{
	struct hcad *d = data;
	struct ceph_open *c = calloc(1, sizeof(*c));

	d->ceph_retry = 0;
	if (!c)
		return;
	c->d = d;
	if (work_queue_push(d->work, ceph_open_fn, ceph_open_done, c) < 0)
		free(c);
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
	d.work = d.loop ? work_queue_new(d.loop, 2) : NULL;
	if (!d.work)
		die("cannot create the event loop");
	d.memb = memb_new(d.loop, d.conf.cluster == CONF_CLUSTER_COROSYNC ? "corosync" : "local",
			  d.conf.node_name, &memb_ops, &d, err, sizeof(err));
	if (!d.memb)
		die(err);
	d.vmm = vmm_new(&(struct vmm_cfg){
		.loop = d.loop, .conf = &d.conf, .store = d.store, .vols = d.vols, .rbd = NULL,
		.work = d.work, .memb = d.memb, .accel = d.accel, .accel_reason = d.accel_reason,
		.qemu_version = d.qemu_version });
	if (!d.vmm || (d.store && vmm_load(d.vmm, err, sizeof(err)) < 0))
		die(d.vmm ? err : "out of memory");
	if (!d.store)
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
	qb_log(LOG_NOTICE, "hcad ready: node %s, API '%s', state %s, QEMU %s, %s",
	       d.conf.node_name, d.conf.api_name, d.conf.state_dir, d.qemu_version,
	       hv_accel_name(d.accel));
	qb_loop_run(d.loop);

	api_server_free(d.api);
	if (d.ceph_retry)
		qb_loop_timer_del(d.loop, d.ceph_retry);
	work_queue_free(d.work);
	vmm_free(d.vmm);
	peers_free(d.peers);
	memb_free(d.memb);
	qb_loop_destroy(d.loop);
	sto_vols_close(d.vols);
	sto_vols_close(d.rbd);
	sto_store_close(d.store);
	unlink(d.pidfile);
	qb_log(LOG_NOTICE, "hcad stopped");
	qb_log_fini();
	return 0;
}

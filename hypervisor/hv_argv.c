/*
 * hv_argv: VM spec -> QEMU argv, a pure function so golden files can pin
 * every option (tests/unit/golden/). Block devices use -blockdev JSON, which
 * needs no comma escaping of paths; character devices escape commas.
 */
#include "hypervisor/hv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

void hv_argv_free(struct hv_argv *a)
{
	if (!a || !a->v)
		return;
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

static int push_owned(struct hv_argv *a, char *s)
{
	if (!s)
		return -ENOMEM;
	if (a->n + 2 > a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		char **v = realloc(a->v, cap * sizeof(*v));
		if (!v) {
			free(s);
			return -ENOMEM;
		}
		a->v = v;
		a->cap = cap;
	}
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
	return 0;
}

static int push(struct hv_argv *a, const char *s)
{
	return push_owned(a, strdup(s));
}

__attribute__((format(printf, 2, 3)))
static int pushf(struct hv_argv *a, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	return push_owned(a, n < 0 ? NULL : s);
}

/* QemuOpts values: a comma is written as ",,". */
static char *opt_escape(const char *s)
{
	size_t n = strlen(s), commas = 0;
	char *out, *o;

	for (size_t i = 0; i < n; i++)
		commas += s[i] == ',';
	out = malloc(n + commas + 1);
	if (!out)
		return NULL;
	o = out;
	for (size_t i = 0; i < n; i++) {
		*o++ = s[i];
		if (s[i] == ',')
			*o++ = ',';
	}
	*o = '\0';
	return out;
}

static int push_base(struct hv_argv *a, const Hca__VmSpec *s,
		     const struct hv_argv_ctx *c)
{
	bool kvm = c->accel == HCA__ACCEL__ACCEL_KVM;
	char *pid = opt_escape(c->paths->pidfile);
	int rc = push(a, c->qemu) || pushf(a, "-name") ||
		 pushf(a, "guest=%s,debug-threads=on", s->name) ||
		 push(a, "-uuid") || push(a, s->uuid) ||
		 push(a, "-no-user-config") || push(a, "-nodefaults") ||
		 push(a, "-machine") || push(a, "q35") ||
		 push(a, "-accel") || push(a, kvm ? "kvm" : "tcg") ||
		 push(a, "-cpu") || push(a, kvm ? "host" : "max") ||
		 push(a, "-smp") || pushf(a, "%u", s->vcpus) ||
		 push(a, "-m") || pushf(a, "%llu", (unsigned long long)s->memory_mib) ||
		 push(a, "-display") || push(a, "none") ||
		 push(a, "-msg") || push(a, "timestamp=on") ||
		 /* elevateprivileges=deny and spawn=deny kill a daemonizing
		  * QEMU 10.0 silently (exit 1, nothing on stderr). */
		 push(a, "-sandbox") ||
		 push(a, "on,obsolete=deny,resourcecontrol=deny") ||
		 push(a, "-daemonize") || push(a, "-pidfile") || push_owned(a, pid);
	return rc ? -ENOMEM : 0;
}

static int push_chardevs(struct hv_argv *a, const struct hv_paths *p)
{
	char *qmp = opt_escape(p->qmp), *con = opt_escape(p->console);
	char *log = opt_escape(p->serial_log), *qga = opt_escape(p->qga);
	int rc = -ENOMEM;

	if (!qmp || !con || !log || !qga)
		goto out;
	/* The serial console is a socket for `hcactl vm console`; QEMU keeps
	 * logging it to a file whether or not anyone is attached. */
	rc = push(a, "-qmp") || pushf(a, "unix:%s,server=on,wait=off", qmp) ||
	     push(a, "-chardev") ||
	     pushf(a, "socket,id=console0,path=%s,server=on,wait=off,logfile=%s,logappend=on",
		   con, log) ||
	     push(a, "-serial") || push(a, "chardev:console0") ||
	     /* the guest agent's port (qemu-ga's protocol): app-consistent
	      * replica points freeze the guest's file systems through it */
	     push(a, "-chardev") || pushf(a, "socket,id=qga0,path=%s,server=on,wait=off", qga) ||
	     push(a, "-device") || push(a, "virtio-serial-pci,id=vser0") ||
	     push(a, "-device") ||
	     push(a, "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0")
		     ? -ENOMEM : 0;
out:
	free(qmp);
	free(con);
	free(log);
	free(qga);
	return rc;
}

static int push_boot(struct hv_argv *a, const Hca__VmSpec *s)
{
	const Hca__BootSpec *b = s->boot;

	if (!b || !b->kernel[0])
		return 0;
	if (push(a, "-kernel") || push(a, b->kernel))
		return -ENOMEM;
	if (b->initrd[0] && (push(a, "-initrd") || push(a, b->initrd)))
		return -ENOMEM;
	if (b->cmdline[0] && (push(a, "-append") || push(a, b->cmdline)))
		return -ENOMEM;
	return 0;
}

/* The protocol layer: a local file, or an RBD image in the cluster's pool. */
static json_t *disk_file_json(const struct hv_disk *hd, const struct hv_argv_ctx *c)
{
	const char *img;

	if (strncmp(hd->path, "rbd:", 4))
		return hd->discard && !hd->readonly
			       ? json_pack("{s:s, s:s, s:b, s:s}", "driver", "file", "filename",
					   hd->path, "read-only", hd->readonly, "discard", "unmap")
			       : json_pack("{s:s, s:s, s:b}", "driver", "file", "filename",
					   hd->path, "read-only", hd->readonly);
	img = strchr(hd->path + 4, '/');
	if (!img)
		return NULL;
	return json_pack("{s:s, s:s%, s:s, s:s, s:s, s:b}", "driver", "rbd",
			 "pool", hd->path + 4, (size_t)(img - hd->path - 4), "image", img + 1,
			 "conf", c->ceph_conf ? c->ceph_conf : "/etc/ceph/ceph.conf",
			 "user", c->ceph_user ? c->ceph_user : "admin", "read-only", hd->readonly);
}

/*
 * An image the user attached is opened alone unless its spec says otherwise:
 * a qcow2 header may name any file on the host as its backing file, and the
 * VM would read it. Volumes hcad created have no such history.
 */
static bool backing_cut(const Hca__DiskSpec *d, const struct hv_disk *hd)
{
	return hd->format == HCA__DISK_FORMAT__DISK_FORMAT_QCOW2 && d->path[0] && !d->backing;
}

/* The format layer as -blockdev JSON text (free() it), NULL on ENOMEM. */
static char *disk_json(const Hca__DiskSpec *d, const struct hv_disk *hd,
		       const struct hv_argv_ctx *c, const char *node)
{
	const char *fmt = hd->format == HCA__DISK_FORMAT__DISK_FORMAT_RAW ? "raw" : "qcow2";
	json_t *bd = json_pack("{s:s, s:s, s:b, s:o?}", "driver", fmt, "node-name", node,
			       "read-only", hd->readonly, "file", disk_file_json(hd, c));
	char *js = NULL;

	if (bd && backing_cut(d, hd) && json_object_set_new(bd, "backing", json_null()) < 0)
		goto out;
	if (bd && hd->discard && !hd->readonly &&
	    json_object_set_new(bd, "discard", json_string("unmap")) < 0)
		goto out;
	js = bd ? json_dumps(bd, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
out:
	json_decref(bd);
	return js;
}

static int push_disk(struct hv_argv *a, const Hca__DiskSpec *d,
		     const struct hv_disk *hd, const struct hv_argv_ctx *c, bool boot)
{
	char node[48];
	int rc;

	/* QEMU node names must start with a letter; disk names need not. */
	snprintf(node, sizeof(node), "drive-%s", d->name);
	rc = push(a, "-blockdev") || push_owned(a, disk_json(d, hd, c, node)) ||
	     push(a, "-device") ||
	     pushf(a, "virtio-blk-pci,drive=%s,id=disk-%s%s", node, d->name,
		   boot ? ",bootindex=1" : "");
	return rc ? -ENOMEM : 0;
}

static int push_nic(struct hv_argv *a, const Hca__VmSpec *s, size_t i)
{
	const Hca__NicSpec *n = s->nics[i];
	char mac[18], tap[16];
	int rc;

	hv_nic_mac(s, i, mac);
	if (n->mode == HCA__NIC_MODE__NIC_MODE_BRIDGE) {
		hv_nic_tap(s, i, tap);
		rc = push(a, "-netdev") ||
		     pushf(a, "tap,id=net%zu,ifname=%s,script=no,downscript=no", i, tap);
	} else {
		rc = push(a, "-netdev") || pushf(a, "user,id=net%zu", i);
	}
	rc = rc || push(a, "-device") ||
	     pushf(a, "virtio-net-pci,netdev=net%zu,id=nic%zu,mac=%s", i, i, mac);
	return rc ? -ENOMEM : 0;
}

int hv_argv_build(const Hca__VmSpec *s, const struct hv_argv_ctx *c,
		  struct hv_argv *a)
{
	bool disk_boot = !s->boot || !s->boot->kernel[0];
	int rc;

	memset(a, 0, sizeof(*a));
	if ((rc = push_base(a, s, c)) || (rc = push_chardevs(a, c->paths)) ||
	    (rc = push_boot(a, s)))
		goto out;
	for (size_t i = 0; i < s->n_disks; i++)
		if ((rc = push_disk(a, s->disks[i], &c->disks[i], c, disk_boot && i == 0)))
			goto out;
	for (size_t i = 0; i < s->n_nics; i++)
		if ((rc = push_nic(a, s, i)))
			goto out;
	/* Last, so an incoming VM's argv is its source's plus this. -S: the
	 * guest runs on only after whoever drives the migration says `cont`
	 * (once the owner record names this node), never by itself when the
	 * stream ends. */
	if (c->incoming && (push(a, "-S") || push(a, "-incoming") || push(a, c->incoming)))
		rc = -ENOMEM;
out:
	if (rc)
		hv_argv_free(a);
	return rc;
}

int hv_paths_init(struct hv_paths *p, const char *dir)
{
	int n = snprintf(p->dir, sizeof(p->dir), "%s", dir);

	/* sun_path holds 108 bytes: refuse rather than truncate a socket path. */
	if (n < 0 || (size_t)n >= sizeof(p->dir) || (size_t)n + sizeof("/console.sock") > 108)
		return -ENAMETOOLONG;
	snprintf(p->qmp, sizeof(p->qmp), "%s/qmp.sock", dir);
	snprintf(p->console, sizeof(p->console), "%s/console.sock", dir);
	snprintf(p->pidfile, sizeof(p->pidfile), "%s/qemu.pid", dir);
	snprintf(p->qemu_log, sizeof(p->qemu_log), "%s/qemu.log", dir);
	snprintf(p->serial_log, sizeof(p->serial_log), "%s/serial.log", dir);
	snprintf(p->qga, sizeof(p->qga), "%s/qga.sock", dir);
	return 0;
}

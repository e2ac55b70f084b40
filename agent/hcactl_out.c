/*
 * hcactl_out: how hcactl prints. Errors are one line "hcactl: ..." on
 * stderr; results go to stdout as aligned text (one key/value printer for
 * every `show`, one table printer for every `list`) or, with --json, as
 * JSON. No request to hcad is made here.
 */
#include "agent/hcactl_priv.h"
#include "agent/spec_json.h"
#include "hypervisor/hv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REASON_MAX 60
#define CELL_MAX 96
#define TABLE_COLS_MAX 16

/* ---- errors and JSON ---- */

int hcactl_complain(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("hcactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* A message from elsewhere on one line, as promised: no control characters. */
const char *hcactl_one_line(char *s)
{
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return s;
}

int hcactl_print_json(json_t *o)
{
	int rc = 0;

	if (!o)
		return hcactl_complain(EXIT_HCAD, "out of memory");
	rc = json_dumpf(o, stdout, JSON_INDENT(2));
	json_decref(o);
	putchar('\n');
	return rc ? hcactl_complain(EXIT_HCAD, "cannot write JSON output") : 0;
}

/* ---- values ---- */

void hcactl_size(uint64_t bytes, bool compact, char *buf, size_t len)
{
	static const char *const units[] = { "", "K", "M", "G", "T" };
	size_t u = 0;

	while (u + 1 < sizeof(units) / sizeof(units[0]) && bytes && !(bytes % 1024)) {
		bytes /= 1024;
		u++;
	}
	if (compact)
		snprintf(buf, len, "%llu%s", (unsigned long long)bytes, units[u]);
	else
		snprintf(buf, len, "%llu %s%s", (unsigned long long)bytes, units[u],
			 u ? "iB" : "bytes");
}

void hcactl_duration(uint64_t s, char *buf, size_t len)
{
	if (s < 60)
		snprintf(buf, len, "%llus", (unsigned long long)s);
	else if (s < 3600)
		snprintf(buf, len, "%llum%02llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else if (s < 86400)
		snprintf(buf, len, "%lluh%02llum", (unsigned long long)(s / 3600),
			 (unsigned long long)(s % 3600 / 60));
	else
		snprintf(buf, len, "%llud%02lluh", (unsigned long long)(s / 86400),
			 (unsigned long long)(s % 86400 / 3600));
}

void hcactl_elapsed(uint64_t ms, char *buf, size_t len)
{
	if (ms < 60000)
		snprintf(buf, len, "%.1f s", (double)ms / 1000.0);
	else
		hcactl_duration(ms / 1000, buf, len);
}

void hcactl_amount(uint64_t v, const char *unit, char *buf, size_t len)
{
	static const char *const units[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double x = (double)v;
	size_t u = 0;

	if (strcmp(unit, "bytes")) {
		snprintf(buf, len, "%llu%s%s", (unsigned long long)v, unit[0] ? " " : "", unit);
		return;
	}
	while (x >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		x /= 1024;
		u++;
	}
	if (u)
		snprintf(buf, len, "%.1f %s", x, units[u]);
	else
		snprintf(buf, len, "%llu bytes", (unsigned long long)v);
}

void hcactl_line_add(struct line_buf *l, const char *sep, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->used && l->used < l->len)
		l->used += (size_t)snprintf(l->buf + l->used, l->len - l->used, "%s", sep);
	if (l->used >= l->len)
		return;
	va_start(ap, fmt);
	n = vsnprintf(l->buf + l->used, l->len - l->used, fmt, ap);
	va_end(ap);
	l->used += n > 0 ? (size_t)n : 0;
}

static void pid_text(int pid, char *buf, size_t len)
{
	if (pid > 0)
		snprintf(buf, len, "%d", pid);
	else
		snprintf(buf, len, "-");
}

static bool has_qemu(Hca__VmState s)
{
	return s != HCA__VM_STATE__VM_STATE_STOPPED && s != HCA__VM_STATE__VM_STATE_CRASHED;
}

static void uptime_text(const Hca__VmStatus *st, char *buf, size_t len)
{
	time_t now = time(NULL);

	if (!has_qemu(st->state) || !st->started_at)
		snprintf(buf, len, "-");
	else
		hcactl_duration(now > (time_t)st->started_at ? (uint64_t)now - st->started_at : 0,
				buf, len);
}

/* ---- the two printers ---- */

/* One "key: value" line of `vm show`, `node info` and the like, aligned. */
void hcactl_kv(const char *key, const char *fmt, ...)
{
	char k[64], v[4096];
	va_list ap;

	snprintf(k, sizeof(k), "%s:", key);
	va_start(ap, fmt);
	vsnprintf(v, sizeof(v), fmt, ap);
	va_end(ap);
	printf("%-14s%s\n", k, v[0] ? v : "-");
}

/* Row @i of the table, the header being row 0. */
static const char *cell(const char *const *head, const char *const *cells, size_t ncols,
			size_t i, size_t c)
{
	return i ? cells[(i - 1) * ncols + c] : head[c];
}

void hcactl_table(const char *const *head, size_t ncols, size_t fixed, const char *const *cells,
		  size_t nrows)
{
	size_t width[TABLE_COLS_MAX] = { 0 };
	size_t shown = fixed < ncols ? fixed : ncols;

	for (size_t c = 0; c < ncols && c < TABLE_COLS_MAX; c++) {
		for (size_t i = 0; i <= nrows; i++) {
			size_t w = strlen(cell(head, cells, ncols, i, c));

			if (i && w && c >= shown)
				shown = c + 1;
			width[c] = w > width[c] ? w : width[c];
		}
	}
	shown = shown < TABLE_COLS_MAX ? shown : TABLE_COLS_MAX;
	for (size_t i = 0; i <= nrows && shown; i++) {
		size_t last = shown - 1;

		while (last && !cell(head, cells, ncols, i, last)[0])
			last--; /* no trailing blanks */
		for (size_t c = 0; c < last; c++)
			printf("%-*s  ", (int)width[c], cell(head, cells, ncols, i, c));
		printf("%s\n", cell(head, cells, ncols, i, last));
	}
}

/* ---- vm list ---- */

enum { COL_NAME, COL_STATE, COL_ACCEL, COL_VCPUS, COL_MEMORY, COL_PID, COL_UPTIME,
       COL_OWNER, COL_REASON, NCOLS };

static int by_name(const void *x, const void *y)
{
	const Hca__VmStatus *a = *(Hca__VmStatus *const *)x, *b = *(Hca__VmStatus *const *)y;

	return strcmp(a->spec ? a->spec->name : "", b->spec ? b->spec->name : "");
}

static void fill_row(const Hca__VmStatus *st, char (*col)[CELL_MAX])
{
	bool ended = !has_qemu(st->state);

	snprintf(col[COL_NAME], CELL_MAX, "%s", st->spec->name);
	snprintf(col[COL_STATE], CELL_MAX, "%s", hv_state_name(st->state));
	snprintf(col[COL_ACCEL], CELL_MAX, "%s", ended ? "-" : hv_accel_name(st->accel));
	snprintf(col[COL_VCPUS], CELL_MAX, "%u", st->spec->vcpus);
	hcactl_size(st->spec->memory_mib << 20, true, col[COL_MEMORY], CELL_MAX);
	pid_text(st->pid, col[COL_PID], CELL_MAX);
	uptime_text(st, col[COL_UPTIME], CELL_MAX);
	snprintf(col[COL_OWNER], CELL_MAX, "%s", st->owner[0] ? st->owner : "-");
	/* Why a VM is down is what people look for; running ones need no reason. */
	snprintf(col[COL_REASON], CELL_MAX, "%.*s%s", REASON_MAX, ended ? st->reason : "",
		 ended && strlen(st->reason) > REASON_MAX ? "..." : "");
	hcactl_one_line(col[COL_REASON]);
}

static int list_json(Hca__VmStatus **vms, size_t n)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < n; i++) {
		if (json_array_append_new(arr, status_to_json(vms[i]))) {
			json_decref(arr);
			arr = NULL;
		}
	}
	return hcactl_print_json(arr);
}

int hcactl_vm_list(bool json, Hca__VmStatus **vms, size_t n)
{
	static const char *const head[NCOLS] = { "NAME", "STATE", "ACCEL", "VCPUS", "MEMORY",
						 "PID", "UPTIME", "OWNER", "REASON" };
	char (*text)[NCOLS][CELL_MAX] = NULL;
	const char **cells = NULL;

	qsort(vms, n, sizeof(*vms), by_name);
	if (json)
		return list_json(vms, n);
	if (n && (!(text = calloc(n, sizeof(*text))) || !(cells = calloc(n * NCOLS, sizeof(*cells))))) {
		free(text);
		return hcactl_complain(EXIT_HCAD, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		fill_row(vms[i], text[i]);
		for (size_t c = 0; c < NCOLS; c++)
			cells[i * NCOLS + c] = text[i][c];
	}
	hcactl_table(head, NCOLS, COL_REASON, cells, n);
	free(cells);
	free(text);
	return 0;
}

/* ---- an operation's outcome, vm show ---- */

int hcactl_vm_outcome(bool json, const Hca__VmStatus *st, const char *name, const char *done)
{
	if (json)
		return hcactl_print_json(status_to_json(st));
	printf("%s: %s\n", name, done ? done : hv_state_name(st->state));
	return 0;
}

static void show_devices(const Hca__VmStatus *st)
{
	const Hca__VmSpec *s = st->spec;
	char key[64], size[32], mac[18];

	for (size_t i = 0; i < s->n_disks; i++) {
		const Hca__DiskSpec *d = s->disks[i];
		bool created = false;
		const char *path = status_disk_path(st, i, &created);
		const char *fmt = spec_format_name(d->format);

		snprintf(key, sizeof(key), "disk %s", d->name);
		/* An attached image has no size in the spec; a volume has. */
		if (d->path[0])
			snprintf(size, sizeof(size), "image");
		else
			hcactl_size(d->size_bytes, false, size, sizeof(size));
		hcactl_kv(key, "%s %s %s%s", size, fmt ? fmt : "?", path[0] ? path : "(no volume yet)",
		   d->readonly ? " readonly" : "");
	}
	for (size_t i = 0; i < s->n_nics; i++) {
		const Hca__NicSpec *n = s->nics[i];

		hv_nic_mac(s, i, mac);
		snprintf(key, sizeof(key), "nic %zu", i);
		hcactl_kv(key, "%s%s%s mac %s", n->mode == HCA__NIC_MODE__NIC_MODE_BRIDGE ? "bridge" : "user",
		   n->bridge[0] ? " " : "", n->bridge, mac);
	}
}

static void show_boot(const Hca__BootSpec *b)
{
	if (!b || !b->kernel[0]) {
		hcactl_kv("boot", "first disk");
		return;
	}
	hcactl_kv("kernel", "%s", b->kernel);
	if (b->initrd[0])
		hcactl_kv("initrd", "%s", b->initrd);
	if (b->cmdline[0])
		hcactl_kv("cmdline", "%s", b->cmdline);
}

static void show_human(const Hca__VmStatus *st)
{
	const Hca__VmSpec *s = st->spec;
	char buf[64], up[32];
	time_t t = (time_t)st->started_at;

	hcactl_kv("name", "%s", s->name);
	hcactl_kv("uuid", "%s", s->uuid);
	hcactl_kv("state", "%s", hv_state_name(st->state));
	if (st->reason[0])
		hcactl_kv("reason", "%s", st->reason);
	if (st->job[0])
		hcactl_kv("job", "%s (hcactl job show %s)", st->job, st->job);
	pid_text(st->pid, buf, sizeof(buf));
	hcactl_kv("pid", "%s", buf);
	hcactl_kv("accel", "%s", has_qemu(st->state) ? hv_accel_name(st->accel) : "-");
	if (st->started_at && has_qemu(st->state)) {
		strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %Z", localtime(&t));
		uptime_text(st, up, sizeof(up));
		hcactl_kv("started", "%s (up %s)", buf, up);
	}
	hcactl_kv("vcpus", "%u", s->vcpus);
	hcactl_size(s->memory_mib << 20, false, buf, sizeof(buf));
	hcactl_kv("memory", "%s", buf);
	show_devices(st);
	show_boot(s->boot);
	hcactl_kv("console", "%s", st->console_path);
	hcactl_kv("serial log", "%s", st->serial_log);
	hcactl_kv("qemu log", "%s", st->qemu_log);
	hcactl_kv("owner", "%s", st->owner);
	hcactl_kv("version", "%llu", (unsigned long long)st->version);
}

int hcactl_vm_show(bool json, Hca__VmStatus *st)
{
	if (json)
		return hcactl_print_json(status_to_json(st));
	hcactl_one_line(st->reason);
	hcactl_one_line(st->job);
	show_human(st);
	return 0;
}

/* ---- node info, cluster status ---- */

int hcactl_node_info(bool json, const Hca__NodeInfo *n)
{
	if (json)
		return hcactl_print_json(node_to_json(n));
	hcactl_kv("node", "%s", n->node_name);
	hcactl_kv("hcad version", "%s", n->version);
	hcactl_kv("qemu version", "%s", n->qemu_version);
	hcactl_kv("accel", "%s", hv_accel_name(n->accel));
	hcactl_kv("accel reason", "%s", hcactl_one_line(n->accel_reason));
	hcactl_kv("state dir", "%s", n->state_dir);
	hcactl_kv("vms", "%u defined, %u running", n->vms, n->running);
	return 0;
}

static json_t *cluster_to_json(const Hca__ClusterStatus *c)
{
	json_t *nodes = json_array(), *o;

	for (size_t i = 0; i < c->n_nodes; i++)
		json_array_append_new(nodes, json_pack("{s:i, s:s, s:s, s:b, s:b}",
			"id", (int)c->nodes[i]->id, "name", c->nodes[i]->name,
			"address", c->nodes[i]->address, "online", c->nodes[i]->online,
			"agent", c->nodes[i]->agent));
	o = json_pack("{s:s, s:b, s:b, s:i, s:i, s:i, s:s, s:o, s:s, s:s}",
		      "driver", c->driver, "connected", c->connected, "quorate", c->quorate,
		      "votes", (int)c->votes, "expected_votes", (int)c->expected_votes,
		      "quorum", (int)c->quorum, "local_node", c->local_node, "nodes", nodes,
		      "store", c->store_backend, "storage_health", c->storage_health);
	return o;
}

int hcactl_cluster_status(bool json, const Hca__ClusterStatus *c)
{
	if (json)
		return hcactl_print_json(cluster_to_json(c));
	hcactl_kv("membership", "%s (%s)", c->driver, !c->connected ? "not connected" :
	   c->quorate ? "quorate" : "NOT QUORATE");
	hcactl_kv("votes", "%u of %u expected, %u needed", c->votes, c->expected_votes, c->quorum);
	hcactl_kv("this node", "%s", c->local_node);
	hcactl_kv("storage", "%s: %s", c->store_backend, c->storage_health);
	printf("\n%-4s %-16s %-18s %-8s %s\n", "ID", "NODE", "ADDRESS", "STATE", "HCAD");
	for (size_t i = 0; i < c->n_nodes; i++)
		printf("%-4u %-16s %-18s %-8s %s\n", c->nodes[i]->id, c->nodes[i]->name,
		       c->nodes[i]->address, c->nodes[i]->online ? "online" : "offline",
		       c->nodes[i]->agent ? "up" : "-");
	return 0;
}

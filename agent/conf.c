/* conf: a small table-driven parser for hcad.conf (see conf.h). */
#include "agent/conf.h"
#include "storage/sto.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

enum kind { K_STR, K_PATH, K_UINT, K_ENUM };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	size_t size;             /* K_STR/K_PATH: buffer size */
	uint64_t min, max;       /* K_UINT */
	const char *const *names; /* K_ENUM: values, index = stored int */
	const int *values;       /* K_ENUM: stored value per name, or NULL */
};

static const char *const accel_names[] = { "auto", "kvm", "tcg", NULL };
static const char *const cluster_names[] = { "local", "corosync", NULL };
static const char *const store_names[] = { "dir", "rados", NULL };
static const char *const level_names[] = { "error", "warning", "info", "debug", NULL };
static const int level_values[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

#define STR(k, kd) { #k, kd, offsetof(struct conf, k), sizeof(((struct conf *)0)->k), 0, 0, NULL, NULL }
#define UINT(k, lo, hi) { #k, K_UINT, offsetof(struct conf, k), 0, lo, hi, NULL, NULL }

static const struct key keys[] = {
	STR(node_name, K_STR),
	STR(state_dir, K_PATH),
	STR(storage_dir, K_PATH),
	STR(api_name, K_STR),
	STR(qemu, K_PATH),
	STR(qemu_img, K_PATH),
	STR(log_file, K_PATH),
	STR(ceph_conf, K_PATH),
	STR(ceph_client, K_STR),
	STR(rados_pool, K_STR),
	STR(pki_dir, K_PATH),
	STR(chan_listen, K_STR),
	UINT(chan_port, 1, 65535),
	UINT(ceph_op_timeout_s, STO_CEPH_TIMEOUT_MIN, STO_CEPH_TIMEOUT_MAX),
	{ "accel", K_ENUM, offsetof(struct conf, accel), 0, 0, 0, accel_names, NULL },
	{ "cluster", K_ENUM, offsetof(struct conf, cluster), 0, 0, 0, cluster_names, NULL },
	{ "store", K_ENUM, offsetof(struct conf, store), 0, 0, 0, store_names, NULL },
	{ "log_level", K_ENUM, offsetof(struct conf, log_level), 0, 0, 0, level_names, level_values },
	UINT(qmp_timeout_ms, 100, 600000),
	UINT(shutdown_timeout_s, 1, 3600),
	UINT(max_vcpus, 1, 64),
	UINT(max_memory_mib, 16, 16u << 20),
	UINT(mig_max_out, 1, 16),
	UINT(mig_max_in, 1, 16),
};

void conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	if (gethostname(c->node_name, sizeof(c->node_name) - 1) != 0 || !c->node_name[0])
		snprintf(c->node_name, sizeof(c->node_name), "localhost");
	snprintf(c->state_dir, sizeof(c->state_dir), "/var/lib/hca");
	snprintf(c->storage_dir, sizeof(c->storage_dir), "/var/lib/hca/volumes");
	snprintf(c->api_name, sizeof(c->api_name), "hcad");
	snprintf(c->qemu, sizeof(c->qemu), "/usr/bin/qemu-system-x86_64");
	snprintf(c->qemu_img, sizeof(c->qemu_img), "/usr/bin/qemu-img");
	c->accel = CONF_ACCEL_AUTO;
	c->cluster = CONF_CLUSTER_LOCAL;
	c->store = CONF_STORE_DIR;
	snprintf(c->ceph_conf, sizeof(c->ceph_conf), "/etc/ceph/ceph.conf");
	snprintf(c->ceph_client, sizeof(c->ceph_client), "admin");
	snprintf(c->rados_pool, sizeof(c->rados_pool), "hca");
	c->ceph_op_timeout_s = 5;
	snprintf(c->pki_dir, sizeof(c->pki_dir), "/etc/hca/pki");
	snprintf(c->chan_listen, sizeof(c->chan_listen), "0.0.0.0");
	c->chan_port = 7010;
	c->log_level = LOG_INFO;
	c->qmp_timeout_ms = 5000;
	c->shutdown_timeout_s = 120;
	c->max_vcpus = 16;
	c->max_memory_mib = 1024 * 1024;
	c->mig_max_out = 2;
	c->mig_max_in = 2;
}

__attribute__((format(printf, 5, 6)))
static int fail(char *err, size_t len, const char *f, int line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, len, "%s:%d: ", f, line);

	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < len)
		vsnprintf(err + n, len - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const struct key *key_find(const char *name)
{
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

static int set_enum(const struct key *k, void *dst, const char *v)
{
	for (int i = 0; k->names[i]; i++) {
		if (!strcmp(k->names[i], v)) {
			*(int *)dst = k->values ? k->values[i] : i;
			return 0;
		}
	}
	return -EINVAL;
}

static char *enum_list(const struct key *k, char *buf, size_t len)
{
	size_t o = 0;

	for (int i = 0; k->names[i] && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", k->names[i]);
	return buf;
}

static int set_value(const struct key *k, struct conf *c, const char *v,
		     const char *f, int line, char *err, size_t len)
{
	void *dst = (char *)c + k->off;
	char *end;
	unsigned long long u;

	switch (k->kind) {
	case K_PATH:
		if (v[0] != '/')
			return fail(err, len, f, line, "%s: '%s' must be an absolute path", k->name, v);
		/* fall through */
	case K_STR:
		if (strlen(v) >= k->size)
			return fail(err, len, f, line, "%s: value longer than %zu characters",
				    k->name, k->size - 1);
		memcpy(dst, v, strlen(v) + 1);
		return 0;
	case K_UINT:
		errno = 0;
		u = strtoull(v, &end, 10);
		if (!isdigit((unsigned char)v[0]) || *end || errno)
			return fail(err, len, f, line, "%s: '%s' is not a number", k->name, v);
		if (u < k->min || u > k->max)
			return fail(err, len, f, line, "%s: %llu out of range (%llu to %llu)", k->name,
				    u, (unsigned long long)k->min, (unsigned long long)k->max);
		*(uint64_t *)dst = u;
		return 0;
	case K_ENUM:
		if (set_enum(k, dst, v) == 0)
			return 0;
		return fail(err, len, f, line, "%s: '%s' is not one of %s", k->name, v,
			    enum_list(k, (char[96]){ 0 }, 96));
	}
	return -EINVAL;
}

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int parse_line(struct conf *c, char *s, const char *f, int line,
		      unsigned char *seen, char *err, size_t len)
{
	char *eq, *k, *v;
	const struct key *key;

	s = trim(s);
	if (!*s || *s == '#')
		return 0;
	eq = strchr(s, '=');
	if (!eq)
		return fail(err, len, f, line, "expected 'key = value', got '%.40s'", s);
	*eq = '\0';
	k = trim(s);
	v = trim(eq + 1);
	key = key_find(k);
	if (!key)
		return fail(err, len, f, line, "unknown key '%.40s'", k);
	if (seen[key - keys]++)
		return fail(err, len, f, line, "duplicate key '%s'", k);
	if (!*v)
		return fail(err, len, f, line, "%s: empty value", k);
	return set_value(key, c, v, f, line, err, len);
}

int conf_parse(struct conf *c, const char *text, const char *f, char *err,
	       size_t len)
{
	unsigned char seen[sizeof(keys) / sizeof(keys[0])] = { 0 };
	char *copy = strdup(text), *s, *next;
	int line = 1, rc = 0;

	if (!copy)
		return -ENOMEM;
	for (s = copy; s && !rc; s = next, line++) {
		next = strchr(s, '\n');
		if (next)
			*next++ = '\0';
		rc = parse_line(c, s, f, line, seen, err, len);
	}
	free(copy);
	return rc;
}

int conf_load(struct conf *c, const char *path, int optional, char *err, size_t len)
{
	FILE *f = fopen(path, "re");
	char *text = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc;

	if (!f) {
		if (optional && errno == ENOENT)
			return 0;
		snprintf(err, len, "%s: %s", path, strerror(errno));
		return -errno;
	}
	n = getdelim(&text, &cap, '\0', f);
	fclose(f);
	if (n < 0) {
		free(text);
		snprintf(err, len, "%s: cannot read", path);
		return -EIO;
	}
	if ((size_t)n != strlen(text)) {
		free(text);
		snprintf(err, len, "%s: contains a NUL byte", path);
		return -EINVAL;
	}
	rc = conf_parse(c, text, path, err, len);
	free(text);
	return rc;
}

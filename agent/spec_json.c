/*
 * spec_json: spec files and hcactl flags -> Hca__VmSpec, and VmStatus /
 * NodeInfo -> JSON (see spec_json.h). Error messages name the field the way
 * the user wrote it ("disks[1].size"), because that is where they will look.
 */
#include "agent/spec_json.h"
#include "hypervisor/hv.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIB (1ull << 20)

/* Where the parser is: the object ("disks[1]", "" at top) and the output. */
struct where {
	const char *obj;
	char *err;
	size_t len;
};

/* ---- building a spec ---- */

Hca__VmSpec *spec_new(void)
{
	Hca__VmSpec *s = malloc(sizeof(*s));

	if (!s)
		return NULL;
	hca__vm_spec__init(s);
	s->vcpus = SPEC_DEFAULT_VCPUS;
	s->memory_mib = SPEC_DEFAULT_MEMORY_MIB;
	return s;
}

void spec_free(Hca__VmSpec *spec)
{
	/* Everything is malloc'ed and unset strings point at the descriptor's
	 * default, so protobuf-c's own destructor fits. */
	if (spec)
		hca__vm_spec__free_unpacked(spec, NULL);
}

int spec_set_string(char **field, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	if (*field != protobuf_c_empty_string)
		free(*field);
	*field = copy;
	return 0;
}

Hca__BootSpec *spec_boot(Hca__VmSpec *spec)
{
	if (!spec->boot) {
		spec->boot = malloc(sizeof(*spec->boot));
		if (spec->boot)
			hca__boot_spec__init(spec->boot);
	}
	return spec->boot;
}

/* Grow a repeated field by one slot; 0 or -ENOMEM. */
static int grow(void ***arr, size_t n)
{
	void **a = realloc(*arr, (n + 1) * sizeof(*a));

	if (!a)
		return -ENOMEM;
	*arr = a;
	return 0;
}

Hca__DiskSpec *spec_add_disk(Hca__VmSpec *spec)
{
	Hca__DiskSpec *d = malloc(sizeof(*d));
	char name[32];

	if (!d || grow((void ***)&spec->disks, spec->n_disks)) {
		free(d);
		return NULL;
	}
	hca__disk_spec__init(d);
	snprintf(name, sizeof(name), "disk%zu", spec->n_disks);
	if (spec_set_string(&d->name, name)) {
		free(d);
		return NULL;
	}
	spec->disks[spec->n_disks++] = d;
	return d;
}

Hca__NicSpec *spec_add_nic(Hca__VmSpec *spec)
{
	Hca__NicSpec *n = malloc(sizeof(*n));

	if (!n || grow((void ***)&spec->nics, spec->n_nics)) {
		free(n);
		return NULL;
	}
	hca__nic_spec__init(n);
	spec->nics[spec->n_nics++] = n;
	return n;
}

/* Undo the last spec_add_disk()/spec_add_nic() after a parse error. */
static void drop_last_disk(Hca__VmSpec *spec)
{
	hca__disk_spec__free_unpacked(spec->disks[--spec->n_disks], NULL);
}

static void drop_last_nic(Hca__VmSpec *spec)
{
	hca__nic_spec__free_unpacked(spec->nics[--spec->n_nics], NULL);
}

const char *spec_format_name(Hca__DiskFormat f)
{
	switch (f) {
	case HCA__DISK_FORMAT__DISK_FORMAT_QCOW2: return "qcow2";
	case HCA__DISK_FORMAT__DISK_FORMAT_RAW: return "raw";
	default: return NULL;
	}
}

const char *spec_nic_mode_name(Hca__NicMode m)
{
	switch (m) {
	case HCA__NIC_MODE__NIC_MODE_USER: return "user";
	case HCA__NIC_MODE__NIC_MODE_BRIDGE: return "bridge";
	default: return NULL;
	}
}

/* Enum names -> values, as int so get_enum() can take either. */
static int format_parse(const char *s, int *f)
{
	if (!strcmp(s, "qcow2"))
		*f = HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;
	else if (!strcmp(s, "raw"))
		*f = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
	else
		return -EINVAL;
	return 0;
}

static int nic_mode_parse(const char *s, int *m)
{
	if (!strcmp(s, "user"))
		*m = HCA__NIC_MODE__NIC_MODE_USER;
	else if (!strcmp(s, "bridge"))
		*m = HCA__NIC_MODE__NIC_MODE_BRIDGE;
	else
		return -EINVAL;
	return 0;
}

/*
 * The structural rules of a disk, shared by files and flags: a created
 * volume (size) or an attached image (path), never both. Returns NULL or
 * the problem.
 */
static const char *disk_finish(Hca__DiskSpec *d, bool have_size, bool have_format)
{
	bool have_path = d->path[0] != '\0';

	if (have_size && have_path)
		return "give either 'size' (a new volume) or 'path' (an existing image), not both";
	if (!have_size && !have_path)
		return "needs 'size' (a new volume) or 'path' (an existing image)";
	if (d->backend[0] && strcmp(d->backend, "file") && strcmp(d->backend, "rbd"))
		return "unknown backend (file or rbd)";
	if (d->backend[0] && have_path)
		return "'backend' is for new volumes, not an existing image's 'path'";
	if (!strcmp(d->backend, "rbd")) {
		if (have_format && d->format != HCA__DISK_FORMAT__DISK_FORMAT_RAW)
			return "rbd volumes are raw";
		d->format = HCA__DISK_FORMAT__DISK_FORMAT_RAW;
		return NULL;
	}
	/* Images people bring are mostly raw; volumes we create are qcow2. */
	if (!have_format)
		d->format = have_path ? HCA__DISK_FORMAT__DISK_FORMAT_RAW
				      : HCA__DISK_FORMAT__DISK_FORMAT_QCOW2;
	return NULL;
}

static const char *nic_finish(const Hca__NicSpec *n)
{
	if (n->mode == HCA__NIC_MODE__NIC_MODE_BRIDGE && !n->bridge[0])
		return "mode bridge needs 'bridge' (the host bridge)";
	if (n->mode == HCA__NIC_MODE__NIC_MODE_USER && n->bridge[0])
		return "'bridge' needs mode bridge";
	return NULL;
}

/* ---- sizes ---- */

static int unit_shift(const char *u, unsigned *shift)
{
	static const char units[] = "kmgt";
	const char *p = *u ? strchr(units, tolower((unsigned char)*u)) : NULL;

	if (!*u) {
		*shift = 0;
		return 0;
	}
	if (!p || (u[1] && strcasecmp(u + 1, "ib")))
		return -EINVAL;
	*shift = 10 * (unsigned)(p - units + 1);
	return 0;
}

int spec_parse_size(const char *s, uint64_t *bytes)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end = NULL;
	int range;

	/* strtoull alone would take spaces, signs and hex. */
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	range = errno == ERANGE;
	if (unit_shift(end, &shift))
		return -EINVAL;
	if (range || v > UINT64_MAX >> shift)
		return -ERANGE;
	*bytes = (uint64_t)v << shift;
	return 0;
}

int spec_set_memory(Hca__VmSpec *spec, uint64_t bytes, char *err, size_t errlen)
{
	if (bytes == 0) {
		snprintf(err, errlen, "memory must be positive");
		return -EINVAL;
	}
	if (bytes % MIB) {
		/* A bare number is bytes; "128" almost always meant 128M. */
		if (bytes < MIB)
			snprintf(err, errlen, "%llu bytes is not a whole number of MiB "
				 "(did you mean %lluM?)", (unsigned long long)bytes,
				 (unsigned long long)bytes);
		else
			snprintf(err, errlen, "%llu bytes is not a whole number of MiB",
				 (unsigned long long)bytes);
		return -EINVAL;
	}
	spec->memory_mib = bytes / MIB;
	return 0;
}

/* ---- JSON field access ---- */

__attribute__((format(printf, 3, 4)))
static int fail(const struct where *w, const char *key, const char *fmt, ...)
{
	const char *dot = w->obj[0] && key ? "." : "";
	const char *sep = w->obj[0] || key ? ": " : "";
	va_list ap;
	int n;

	n = snprintf(w->err, w->len, "%s%s%s%s", w->obj, dot, key ? key : "", sep);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < w->len)
		vsnprintf(w->err + n, w->len - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int nomem(const struct where *w)
{
	snprintf(w->err, w->len, "out of memory");
	return -ENOMEM;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a fractional number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

static int wrong_type(const struct where *w, const char *key, const char *want,
		      const json_t *v)
{
	return fail(w, key, "expected %s, got %s", want, type_name(v));
}

/* The first key of @o (in file order) that is not in @allowed is an error. */
static int check_keys(json_t *o, const char *const *allowed, const struct where *w)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		size_t i = 0;

		while (allowed[i] && strcmp(allowed[i], key))
			i++;
		if (!allowed[i])
			return fail(w, NULL, "unknown key '%s'", key);
	}
	return 0;
}

/* A key's value, NULL when absent or null (both mean "not given"). */
static json_t *field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_null(v) ? NULL : v;
}

static int get_string(json_t *o, const char *key, char **dst, const struct where *w)
{
	json_t *v = field(o, key);

	if (!v)
		return 0;
	if (!json_is_string(v))
		return wrong_type(w, key, "a string", v);
	return spec_set_string(dst, json_string_value(v)) ? nomem(w) : 0;
}

static int get_bool(json_t *o, const char *key, protobuf_c_boolean *dst,
		    const struct where *w)
{
	json_t *v = field(o, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return wrong_type(w, key, "true or false", v);
	*dst = json_is_true(v);
	return 0;
}

/* An integer in 0..@max. */
static int get_uint(json_t *o, const char *key, uint64_t max, uint64_t *dst,
		    bool *found, const struct where *w)
{
	json_t *v = field(o, key);
	json_int_t i;

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return wrong_type(w, key, "an integer", v);
	i = json_integer_value(v);
	if (i < 0 || (uint64_t)i > max)
		return fail(w, key, "%lld out of range (0 to %llu)", (long long)i,
			    (unsigned long long)max);
	*dst = (uint64_t)i;
	*found = true;
	return 0;
}

/* A positive size: integer bytes or a string with a unit. */
static int get_size(json_t *o, const char *key, uint64_t *dst, bool *found,
		    const struct where *w)
{
	json_t *v = field(o, key);
	const char *s;
	int rc;

	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) <= 0)
		return fail(w, key, "size must be positive, got %lld",
			    (long long)json_integer_value(v));
	if (json_is_integer(v)) {
		*dst = (uint64_t)json_integer_value(v);
		*found = true;
		return 0;
	}
	if (!json_is_string(v))
		return wrong_type(w, key, "a size (bytes, or a string like \"64M\")", v);
	s = json_string_value(v);
	rc = spec_parse_size(s, dst);
	if (rc == -ERANGE)
		return fail(w, key, "size '%s' is too large", s);
	if (rc)
		return fail(w, key, "invalid size '%s' (bytes, or a number with K, M, G or T)", s);
	if (*dst == 0)
		return fail(w, key, "size must be positive, got '%s'", s);
	*found = true;
	return 0;
}

/* An enum given by name, through @parse; @what names the values for people. */
static int get_enum(json_t *o, const char *key, int (*parse)(const char *, int *),
		    const char *what, int *dst, bool *found, const struct where *w)
{
	json_t *v = field(o, key);

	if (!v)
		return 0;
	if (!json_is_string(v))
		return wrong_type(w, key, "a string", v);
	if (parse(json_string_value(v), dst))
		return fail(w, key, "unknown %s '%s' (%s)", key, json_string_value(v), what);
	*found = true;
	return 0;
}

/* ---- JSON objects ---- */

static int disk_from_json(Hca__VmSpec *spec, json_t *o, const struct where *w)
{
	static const char *const keys[] = { "name", "size", "path", "format", "readonly",
					     "backend", NULL };
	bool have_size = false, have_format = false;
	Hca__DiskSpec *d = NULL;
	const char *msg = NULL;
	int format = 0;
	int rc;

	if (!json_is_object(o))
		return wrong_type(w, NULL, "an object", o);
	if ((rc = check_keys(o, keys, w)))
		return rc;
	if (!(d = spec_add_disk(spec)))
		return nomem(w);
	if ((rc = get_string(o, "name", &d->name, w)) ||
	    (rc = get_size(o, "size", &d->size_bytes, &have_size, w)) ||
	    (rc = get_string(o, "path", &d->path, w)) ||
	    (rc = get_enum(o, "format", format_parse, "qcow2 or raw", &format, &have_format, w)) ||
	    (rc = get_bool(o, "readonly", &d->readonly, w)) ||
	    (rc = get_string(o, "backend", &d->backend, w)))
		return rc;
	d->format = (Hca__DiskFormat)format;
	msg = disk_finish(d, have_size, have_format);
	return msg ? fail(w, NULL, "%s", msg) : 0;
}

static int nic_from_json(Hca__VmSpec *spec, json_t *o, const struct where *w)
{
	static const char *const keys[] = { "mode", "bridge", "mac", NULL };
	Hca__NicSpec *n = NULL;
	const char *msg = NULL;
	bool found = false;
	int mode = 0;
	int rc;

	if (!json_is_object(o))
		return wrong_type(w, NULL, "an object", o);
	if ((rc = check_keys(o, keys, w)))
		return rc;
	if (!(n = spec_add_nic(spec)))
		return nomem(w);
	if ((rc = get_enum(o, "mode", nic_mode_parse, "user or bridge", &mode, &found, w)) ||
	    (rc = get_string(o, "bridge", &n->bridge, w)) ||
	    (rc = get_string(o, "mac", &n->mac, w)))
		return rc;
	n->mode = (Hca__NicMode)mode;
	msg = nic_finish(n);
	return msg ? fail(w, NULL, "%s", msg) : 0;
}

static int boot_from_json(Hca__VmSpec *spec, json_t *o, const struct where *w)
{
	static const char *const keys[] = { "kernel", "initrd", "cmdline", NULL };
	Hca__BootSpec *b = NULL;
	int rc;

	if (!json_is_object(o))
		return wrong_type(w, NULL, "an object", o);
	if ((rc = check_keys(o, keys, w)))
		return rc;
	if (!(b = spec_boot(spec)))
		return nomem(w);
	if ((rc = get_string(o, "kernel", &b->kernel, w)) ||
	    (rc = get_string(o, "initrd", &b->initrd, w)))
		return rc;
	return get_string(o, "cmdline", &b->cmdline, w);
}

typedef int (*item_fn)(Hca__VmSpec *spec, json_t *o, const struct where *w);

/* Run @fn on each element of the array @key, naming it "key[i]" in errors. */
static int each_item(Hca__VmSpec *spec, json_t *o, const char *key, item_fn fn,
		     const struct where *w)
{
	json_t *arr = field(o, key);
	char obj[48];
	json_t *v;
	size_t i;
	int rc;

	if (!arr)
		return 0;
	if (!json_is_array(arr))
		return wrong_type(w, key, "an array", arr);
	json_array_foreach(arr, i, v) {
		struct where iw = { obj, w->err, w->len };

		snprintf(obj, sizeof(obj), "%s[%zu]", key, i);
		if ((rc = fn(spec, v, &iw)))
			return rc;
	}
	return 0;
}

static int memory_from_json(Hca__VmSpec *spec, json_t *o, const struct where *w)
{
	bool have_bytes = false, have_mib = false;
	uint64_t bytes = 0, mib = 0;
	char msg[128];
	int rc;

	if ((rc = get_size(o, "memory", &bytes, &have_bytes, w)) ||
	    (rc = get_uint(o, "memory_mib", UINT64_MAX / MIB, &mib, &have_mib, w)))
		return rc;
	if (have_bytes && have_mib)
		return fail(w, NULL, "give either 'memory' or 'memory_mib', not both");
	if (have_mib && mib == 0)
		return fail(w, "memory_mib", "must be positive");
	if (have_mib)
		spec->memory_mib = mib;
	if (have_bytes && spec_set_memory(spec, bytes, msg, sizeof(msg)))
		return fail(w, "memory", "%s", msg);
	return 0;
}

static int top_from_json(Hca__VmSpec *spec, json_t *o, const struct where *w)
{
	static const char *const keys[] = { "name", "uuid", "vcpus", "memory", "memory_mib",
					    "disks", "nics", "boot", NULL };
	uint64_t vcpus = spec->vcpus;
	bool found = false;
	json_t *boot = NULL;
	int rc;

	if ((rc = check_keys(o, keys, w)))
		return rc;
	if (!field(o, "name"))
		return fail(w, NULL, "missing key 'name'");
	if ((rc = get_string(o, "name", &spec->name, w)))
		return rc;
	if (!hv_name_valid(spec->name))
		return fail(w, "name", "invalid VM name '%s' (1-%d chars of a-z, 0-9, -, _, "
			    "starting with a letter or digit)", spec->name, HV_NAME_MAX);
	if ((rc = get_string(o, "uuid", &spec->uuid, w)) ||
	    (rc = get_uint(o, "vcpus", UINT32_MAX, &vcpus, &found, w)) ||
	    (rc = memory_from_json(spec, o, w)) ||
	    (rc = each_item(spec, o, "disks", disk_from_json, w)) ||
	    (rc = each_item(spec, o, "nics", nic_from_json, w)))
		return rc;
	spec->vcpus = (uint32_t)vcpus;
	boot = field(o, "boot");
	return boot ? boot_from_json(spec, boot, &(struct where){ "boot", w->err, w->len }) : 0;
}

Hca__VmSpec *spec_from_json(const char *text, char *err, size_t errlen)
{
	struct where w = { "", err, errlen };
	Hca__VmSpec *spec = NULL;
	json_error_t jerr;
	json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);

	if (!root) {
		snprintf(err, errlen, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		wrong_type(&w, NULL, "a JSON object", root);
		goto out;
	}
	if (!(spec = spec_new())) {
		nomem(&w);
		goto out;
	}
	if (top_from_json(spec, root, &w)) {
		spec_free(spec);
		spec = NULL;
	}
out:
	json_decref(root);
	return spec;
}

/* ---- spec -> JSON (the file format) ---- */

/* Set @key unless @s is empty; a failed set leaves a mark in *@rc. */
static void put_str(json_t *o, const char *key, const char *s, int *rc)
{
	if (s && s[0] && json_object_set_new(o, key, json_string(s)))
		*rc = -ENOMEM;
}

static void put(json_t *o, const char *key, json_t *v, int *rc)
{
	if (json_object_set_new(o, key, v))
		*rc = -ENOMEM;
}

static json_t *disk_to_json(const Hca__DiskSpec *d)
{
	json_t *o = json_object();
	int rc = o ? 0 : -ENOMEM;

	put_str(o, "name", d->name, &rc);
	if (d->path[0])
		put_str(o, "path", d->path, &rc);
	else
		put(o, "size", json_integer((json_int_t)d->size_bytes), &rc);
	put_str(o, "format", spec_format_name(d->format), &rc);
	put(o, "readonly", json_boolean(d->readonly), &rc);
	if (d->backend[0])
		put_str(o, "backend", d->backend, &rc);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *nic_to_json(const Hca__NicSpec *n)
{
	json_t *o = json_object();
	int rc = o ? 0 : -ENOMEM;

	put_str(o, "mode", spec_nic_mode_name(n->mode), &rc);
	put_str(o, "bridge", n->bridge, &rc);
	put_str(o, "mac", n->mac, &rc);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *boot_to_json(const Hca__BootSpec *b, bool keep_empty)
{
	static const Hca__BootSpec none = HCA__BOOT_SPEC__INIT;
	json_t *o = json_object();
	int rc = o ? 0 : -ENOMEM;

	b = b ? b : &none;
	if (keep_empty) {
		put(o, "kernel", json_string(b->kernel), &rc);
		put(o, "initrd", json_string(b->initrd), &rc);
		put(o, "cmdline", json_string(b->cmdline), &rc);
	} else {
		put_str(o, "kernel", b->kernel, &rc);
		put_str(o, "initrd", b->initrd, &rc);
		put_str(o, "cmdline", b->cmdline, &rc);
	}
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

typedef json_t *(*to_json_fn)(const void *item);

static json_t *array_of(void *const *items, size_t n, to_json_fn fn)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append_new(a, fn(items[i]))) {
			json_decref(a);
			a = NULL;
		}
	}
	return a;
}

static json_t *disk_item(const void *p) { return disk_to_json(p); }
static json_t *nic_item(const void *p) { return nic_to_json(p); }

json_t *spec_to_json(const Hca__VmSpec *spec)
{
	json_t *o = json_object();
	int rc = o ? 0 : -ENOMEM;

	put_str(o, "name", spec->name, &rc);
	put_str(o, "uuid", spec->uuid, &rc);
	put(o, "vcpus", json_integer(spec->vcpus), &rc);
	put(o, "memory_mib", json_integer((json_int_t)spec->memory_mib), &rc);
	put(o, "disks", array_of((void *const *)spec->disks, spec->n_disks, disk_item), &rc);
	put(o, "nics", array_of((void *const *)spec->nics, spec->n_nics, nic_item), &rc);
	if (spec->boot)
		put(o, "boot", boot_to_json(spec->boot, false), &rc);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* ---- CLI flags ---- */

/* "key=value" -> key, value; a bare word has value NULL. Edits @tok. */
static char *split_kv(char *tok, char **value)
{
	char *eq = strchr(tok, '=');

	*value = NULL;
	if (eq) {
		*eq = '\0';
		*value = eq + 1;
	}
	return tok;
}

static int arg_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int arg_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static int str_arg(char **dst, const char *v, char *err, size_t errlen)
{
	if (spec_set_string(dst, v))
		return arg_fail(err, errlen, -ENOMEM, "out of memory");
	return 0;
}

static int size_arg(const char *s, uint64_t *bytes, char *err, size_t errlen)
{
	int rc = spec_parse_size(s, bytes);

	if (rc == -ERANGE)
		return arg_fail(err, errlen, rc, "size '%s' is too large", s);
	if (rc)
		return arg_fail(err, errlen, rc, "invalid size '%s' "
				"(bytes, or a number with K, M, G or T)", s);
	if (*bytes == 0)
		return arg_fail(err, errlen, -EINVAL, "size must be positive");
	return 0;
}

static int bool_arg(const char *key, const char *v, protobuf_c_boolean *dst,
		    char *err, size_t errlen)
{
	if (!v || !strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "yes"))
		*dst = 1;
	else if (!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "no"))
		*dst = 0;
	else
		return arg_fail(err, errlen, -EINVAL, "invalid value '%s' for '%s' "
				"(true or false)", v, key);
	return 0;
}

/* The keys of a --disk argument, as bits so a repeated key is caught. */
enum { DISK_NAME = 1, DISK_SIZE = 2, DISK_PATH = 4, DISK_FORMAT = 8, DISK_RO = 16,
       DISK_BACKEND = 32 };

static unsigned disk_key_bit(const char *k)
{
	static const char *const keys[] = { "name", "size", "path", "format", "readonly",
					    "backend" };

	for (unsigned i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (!strcmp(k, keys[i]))
			return 1u << i;
	return 0;
}

static int disk_set(Hca__DiskSpec *d, unsigned bit, const char *k, const char *v,
		    char *err, size_t errlen)
{
	int f = 0;

	if (bit == DISK_RO)
		return bool_arg(k, v, &d->readonly, err, errlen);
	if (!v || !*v)
		return arg_fail(err, errlen, -EINVAL, "'%s' needs a value (%s=...)", k, k);
	switch (bit) {
	case DISK_NAME: return str_arg(&d->name, v, err, errlen);
	case DISK_PATH: return str_arg(&d->path, v, err, errlen);
	case DISK_BACKEND: return str_arg(&d->backend, v, err, errlen);
	case DISK_SIZE: return size_arg(v, &d->size_bytes, err, errlen);
	default: break;
	}
	if (format_parse(v, &f))
		return arg_fail(err, errlen, -EINVAL, "unknown format '%s' (qcow2 or raw)", v);
	d->format = (Hca__DiskFormat)f;
	return 0;
}

static int disk_opt(Hca__DiskSpec *d, char *tok, bool first, unsigned *seen,
		    char *err, size_t errlen)
{
	char *v = NULL;
	char *k = split_kv(tok, &v);
	unsigned bit;

	/* "rbd:64M[,...]": a new volume in the cluster's pool */
	if (first && !v && !strncmp(k, "rbd:", 4)) {
		*seen |= DISK_BACKEND;
		if (str_arg(&d->backend, "rbd", err, errlen))
			return -ENOMEM;
		k += 4;
	}
	/* "64M[,...]": the usual case, a new volume, needs no key. */
	if (first && !v && strcmp(k, "readonly")) {
		v = k;
		k = "size";
	}
	bit = disk_key_bit(k);
	if (!bit)
		return arg_fail(err, errlen, -EINVAL, "unknown key '%s' "
				"(name, size, path, format, readonly, backend)", k);
	if (*seen & bit)
		return arg_fail(err, errlen, -EINVAL, "'%s' given twice", k);
	*seen |= bit;
	return disk_set(d, bit, k, v, err, errlen);
}

int spec_add_disk_arg(Hca__VmSpec *spec, const char *arg, char *err, size_t errlen)
{
	Hca__DiskSpec *d = spec_add_disk(spec);
	char *copy = strdup(arg);
	const char *msg = NULL;
	unsigned seen = 0;
	char *save = NULL;
	int rc = 0;

	if (!d || !copy) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	for (char *tok = strtok_r(copy, ",", &save); tok && !rc;
	     tok = strtok_r(NULL, ",", &save))
		rc = disk_opt(d, tok, tok == copy, &seen, err, errlen);
	if (!rc && (msg = disk_finish(d, seen & DISK_SIZE, seen & DISK_FORMAT))) {
		snprintf(err, errlen, "%s", msg);
		rc = -EINVAL;
	}
out:
	if (rc && d)
		drop_last_disk(spec);
	free(copy);
	return rc;
}

static int nic_opt(Hca__NicSpec *n, char *tok, bool first, char *err, size_t errlen)
{
	char *v = NULL;
	char *k = split_kv(tok, &v);

	if (first && !strcmp(k, "user") && !v)
		return 0;
	if (first && !strcmp(k, "bridge") && v && *v) {
		n->mode = HCA__NIC_MODE__NIC_MODE_BRIDGE;
		return str_arg(&n->bridge, v, err, errlen);
	}
	if (first)
		return arg_fail(err, errlen, -EINVAL, "expected 'user' or 'bridge=BRIDGE' "
				"first, got '%s'", tok);
	if (strcmp(k, "mac"))
		return arg_fail(err, errlen, -EINVAL, "unknown key '%s' (only mac=)", k);
	if (!v || !*v)
		return arg_fail(err, errlen, -EINVAL, "'mac' needs a value (mac=...)");
	if (n->mac[0])
		return arg_fail(err, errlen, -EINVAL, "'mac' given twice");
	return str_arg(&n->mac, v, err, errlen);
}

int spec_add_nic_arg(Hca__VmSpec *spec, const char *arg, char *err, size_t errlen)
{
	Hca__NicSpec *n = spec_add_nic(spec);
	char *copy = strdup(arg);
	char *save = NULL;
	char *tok = NULL;
	int rc = 0;

	if (!n || !copy) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	tok = strtok_r(copy, ",", &save);
	if (!tok) {
		snprintf(err, errlen, "empty NIC (user or bridge=BRIDGE)");
		rc = -EINVAL;
	}
	for (; tok && !rc; tok = strtok_r(NULL, ",", &save))
		rc = nic_opt(n, tok, tok == copy, err, errlen);
out:
	if (rc && n)
		drop_last_nic(spec);
	free(copy);
	return rc;
}

static int make_absolute(char **path, const char *base)
{
	char *joined = NULL;
	const char *p = *path;
	int rc;

	if (!p[0] || p[0] == '/')
		return 0;
	if (!strncmp(p, "./", 2))
		p += 2;
	if (asprintf(&joined, "%s%s%s", base,
		     base[0] && base[strlen(base) - 1] == '/' ? "" : "/", p) < 0)
		return -ENOMEM;
	rc = spec_set_string(path, joined);
	free(joined);
	return rc;
}

int spec_resolve_paths(Hca__VmSpec *spec, const char *base)
{
	int rc = 0;

	for (size_t i = 0; i < spec->n_disks && !rc; i++)
		rc = make_absolute(&spec->disks[i]->path, base);
	if (!rc && spec->boot)
		rc = make_absolute(&spec->boot->kernel, base);
	if (!rc && spec->boot)
		rc = make_absolute(&spec->boot->initrd, base);
	return rc;
}

/* ---- status and node -> JSON ---- */

const char *status_disk_path(const Hca__VmStatus *st, size_t idx, bool *created)
{
	const Hca__DiskSpec *d = st->spec->disks[idx];

	*created = false;
	if (d->path[0])
		return d->path;
	for (size_t i = 0; i < st->n_volumes; i++) {
		if (!strcmp(st->volumes[i]->disk, d->name)) {
			*created = true;
			return st->volumes[i]->path;
		}
	}
	return "";
}

static json_t *status_disk(const Hca__VmStatus *st, size_t idx)
{
	const Hca__DiskSpec *d = st->spec->disks[idx];
	const char *format = spec_format_name(d->format);
	bool created = false;
	const char *path = status_disk_path(st, idx, &created);

	return json_pack("{s:s, s:I, s:s, s:s, s:b, s:b}", "name", d->name,
			 "size_bytes", (json_int_t)d->size_bytes,
			 "format", format ? format : "unknown", "path", path,
			 "readonly", (int)d->readonly, "created", (int)created);
}

static json_t *status_nic(const Hca__VmStatus *st, size_t idx)
{
	const Hca__NicSpec *n = st->spec->nics[idx];
	const char *mode = spec_nic_mode_name(n->mode);
	char mac[18];

	/* Show the MAC the guest really has, derived when the spec has none. */
	hv_nic_mac(st->spec, idx, mac);
	return json_pack("{s:s, s:s, s:s}", "mode", mode ? mode : "unknown",
			 "bridge", n->bridge, "mac", mac);
}

static json_t *status_devices(const Hca__VmStatus *st, bool disks)
{
	size_t n = disks ? st->spec->n_disks : st->spec->n_nics;
	json_t *a = json_array();

	for (size_t i = 0; a && i < n; i++) {
		json_t *item = disks ? status_disk(st, i) : status_nic(st, i);
		if (json_array_append_new(a, item)) {
			json_decref(a);
			a = NULL;
		}
	}
	return a;
}

json_t *status_to_json(const Hca__VmStatus *st)
{
	static const Hca__VmSpec none = HCA__VM_SPEC__INIT;
	Hca__VmStatus copy = *st;
	json_t *o = json_object();
	int rc = o ? 0 : -ENOMEM;

	/* A status without a spec is malformed, but print what there is. */
	if (!copy.spec)
		copy.spec = (Hca__VmSpec *)&none;
	put(o, "name", json_string(copy.spec->name), &rc);
	put(o, "uuid", json_string(copy.spec->uuid), &rc);
	put(o, "state", json_string(hv_state_name(st->state)), &rc);
	put(o, "reason", json_string(st->reason), &rc);
	put(o, "pid", json_integer(st->pid), &rc);
	put(o, "accel", json_string(hv_accel_name(st->accel)), &rc);
	put(o, "started_at", json_integer((json_int_t)st->started_at), &rc);
	put(o, "vcpus", json_integer(copy.spec->vcpus), &rc);
	put(o, "memory_mib", json_integer((json_int_t)copy.spec->memory_mib), &rc);
	put(o, "owner", json_string(st->owner), &rc);
	put(o, "owner_epoch", json_integer((json_int_t)st->owner_epoch), &rc);
	put(o, "active", json_boolean(st->active), &rc);
	put(o, "job", json_string(st->job), &rc);
	put(o, "node", json_string(st->node), &rc);
	put(o, "version", json_integer((json_int_t)st->version), &rc);
	put(o, "console", json_string(st->console_path), &rc);
	put(o, "serial_log", json_string(st->serial_log), &rc);
	put(o, "qemu_log", json_string(st->qemu_log), &rc);
	put(o, "disks", status_devices(&copy, true), &rc);
	put(o, "nics", status_devices(&copy, false), &rc);
	put(o, "boot", boot_to_json(copy.spec->boot, true), &rc);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *node_to_json(const Hca__NodeInfo *n)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}",
			 "node_name", n->node_name, "version", n->version,
			 "qemu_version", n->qemu_version, "accel", hv_accel_name(n->accel),
			 "accel_reason", n->accel_reason, "state_dir", n->state_dir,
			 "vms", (json_int_t)n->vms, "running", (json_int_t)n->running);
}

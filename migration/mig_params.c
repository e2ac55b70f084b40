/*
 * mig_params: from a migration's plan to what each QEMU is told, pure so
 * golden files pin every capability and parameter (tests/unit/golden/mig_*).
 *
 * The names and ranges are QEMU 10.0's (qapi/migration.json,
 * qapi/crypto.json, migration/options.c:migrate_params_check). The choices
 * and their reasons are documented at mig_plan_resolve() in mig.h; each
 * also leaves a line in the caller's @why, so a migration's record says
 * what was chosen and why.
 */
#include "migration/mig_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- names ---- */

static const char *const compress_names[] = {
	[MIG_COMPRESS_AUTO] = "auto",
	[MIG_COMPRESS_NONE] = "none",
	[MIG_COMPRESS_ZSTD] = "zstd",
};

static const char *const converge_names[] = {
	[MIG_CONVERGE_AUTO] = "auto",
	[MIG_CONVERGE_THROTTLE] = "throttle",
	[MIG_CONVERGE_POSTCOPY] = "postcopy",
	[MIG_CONVERGE_NEVER] = "never",
};

#define NAMES_N(t) (sizeof(t) / sizeof((t)[0]))

const char *mig_compress_name(enum mig_compress c)
{
	return (unsigned)c < NAMES_N(compress_names) ? compress_names[c] : "?";
}

const char *mig_converge_name(enum mig_converge c)
{
	return (unsigned)c < NAMES_N(converge_names) ? converge_names[c] : "?";
}

static int parse_name(const char *const *names, size_t n, const char *name, int *out)
{
	for (size_t i = 0; name && i < n; i++) {
		if (!strcmp(names[i], name)) {
			*out = (int)i;
			return 0;
		}
	}
	return -EINVAL;
}

int mig_compress_parse(const char *name, enum mig_compress *out)
{
	int v = 0;
	int rc = parse_name(compress_names, NAMES_N(compress_names), name, &v);

	if (!rc)
		*out = (enum mig_compress)v;
	return rc;
}

int mig_converge_parse(const char *name, enum mig_converge *out)
{
	int v = 0;
	int rc = parse_name(converge_names, NAMES_N(converge_names), name, &v);

	if (!rc)
		*out = (enum mig_converge)v;
	return rc;
}

/* ---- figures for people ---- */

char *mig_fmt_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	unsigned u = 0;
	double v = (double)n;

	while (u + 1 < NAMES_N(unit) && v >= 1024.0) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)n);
	else
		snprintf(buf, len, v < 9.95 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

uint64_t mig_plan_usable_rate(const struct mig_plan *p)
{
	if (p->max_bandwidth && (!p->link_rate || p->max_bandwidth < p->link_rate))
		return p->max_bandwidth;
	return p->link_rate;
}

/* ---- the reasons, one line per decision ---- */

struct why {
	char *buf;
	size_t len;
	size_t pos;
};

__attribute__((format(printf, 2, 3)))
static void why_add(struct why *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!w->buf || w->pos + 1 >= w->len)
		return;
	if (w->pos) {
		n = snprintf(w->buf + w->pos, w->len - w->pos, "; ");
		w->pos += (size_t)n < w->len - w->pos ? (size_t)n : w->len - w->pos - 1;
	}
	va_start(ap, fmt);
	n = vsnprintf(w->buf + w->pos, w->len - w->pos, fmt, ap);
	va_end(ap);
	if (n > 0)
		w->pos += (size_t)n < w->len - w->pos ? (size_t)n : w->len - w->pos - 1;
}

/* "1.2 GiB/s" into a caller's buffer of at least 24 bytes. */
static char *rate_str(char *buf, size_t len, uint64_t rate)
{
	mig_fmt_bytes(buf, len, rate);
	strncat(buf, "/s", len - strlen(buf) - 1);
	return buf;
}

/* ---- mig_plan_resolve ---- */

static int refuse(struct why *w, const char *msg)
{
	w->pos = 0;
	why_add(w, "%s", msg);
	return -EINVAL;
}

/* Everything a plan can be refused for, before anything in it changes. */
static int check(const struct mig_plan *p, struct why *w)
{
	bool tls = p->tls_creds != NULL;

	if (!p->ram_bytes)
		return refuse(w, "the guest's RAM size is unknown");
	if (p->downtime_ms > MIG_DOWNTIME_MAX_MS)
		return refuse(w, "the downtime is above QEMU's limit of 2000000 ms");
	if (p->max_bandwidth > MIG_BANDWIDTH_UNLIMITED || p->link_rate > MIG_BANDWIDTH_UNLIMITED ||
	    p->dirty_rate > MIG_BANDWIDTH_UNLIMITED)
		return refuse(w, "a rate is above 2^63 bytes/s");
	if (p->streams > MIG_STREAMS_MAX)
		return refuse(w, "at most 64 streams");
	if ((unsigned)p->compress >= NAMES_N(compress_names) ||
	    (unsigned)p->converge >= NAMES_N(converge_names))
		return refuse(w, "unknown compression or convergence mode");
	if (p->deadline_s > MIG_DEADLINE_MAX_S)
		return refuse(w, "the deadline is above a day");
	if (tls && !*p->tls_creds)
		return refuse(w, "an empty TLS credentials id (none: no TLS)");
	if (!tls && (p->tls_hostname || p->tls_authz))
		return refuse(w, "a TLS hostname or authz without TLS credentials");
	if (p->converge == MIG_CONVERGE_POSTCOPY && (p->streams > 1 || p->compress == MIG_COMPRESS_ZSTD))
		return refuse(w, "post-copy runs on one stream without compression (QEMU 10.0 has "
			      "no post-copy with multifd): drop --streams/--compress, or use "
			      "--converge throttle");
	return 0;
}

static void resolve_downtime(struct mig_plan *p, struct why *w)
{
	uint32_t start;

	if (!p->downtime_ms)
		p->downtime_ms = MIG_DOWNTIME_DEFAULT_MS;
	start = p->downtime_ms / 2;
	if (start < MIG_DOWNTIME_START_MIN_MS)
		start = MIG_DOWNTIME_START_MIN_MS;
	if (start > p->downtime_ms)
		start = p->downtime_ms;
	p->downtime_start_ms = start;
	why_add(w, "downtime limit %u ms at first, raised up to the %u ms target only if the "
		"migration stops shrinking: QEMU counts RAM only, the pause also holds device "
		"state, the owner commit and the resume", start, p->downtime_ms);
}

static enum mig_converge choose_converge(const struct mig_plan *p, struct why *w)
{
	uint64_t usable = mig_plan_usable_rate(p);
	char d[24], r[24];

	if (p->streams > 1 || p->compress == MIG_COMPRESS_ZSTD) {
		why_add(w, "converge throttle: multifd asked for (--streams/--compress)");
		return MIG_CONVERGE_THROTTLE;
	}
	if (!p->dirty_rate || !usable) {
		why_add(w, "converge throttle: %s unknown, so multifd with auto-converge",
			!p->dirty_rate ? "the dirty rate" : "the link rate");
		return MIG_CONVERGE_THROTTLE;
	}
	rate_str(d, sizeof(d), p->dirty_rate);
	rate_str(r, sizeof(r), usable);
	if (p->dirty_rate * 100 > usable * MIG_POSTCOPY_DIRTY_PCT) {
		why_add(w, "converge postcopy: the guest dirties %s, over %u %% of the %s usable, "
			"so precopy would need heavy throttling: post-copy, on one stream as QEMU "
			"10.0 has no post-copy with multifd", d, MIG_POSTCOPY_DIRTY_PCT, r);
		return MIG_CONVERGE_POSTCOPY;
	}
	why_add(w, "converge throttle: the guest dirties %s against %s usable, so multifd "
		"with auto-converge in reserve", d, r);
	return MIG_CONVERGE_THROTTLE;
}

static void resolve_mode(struct mig_plan *p, struct why *w)
{
	if (p->converge == MIG_CONVERGE_AUTO)
		p->converge = choose_converge(p, w);
	else
		why_add(w, "converge %s: asked for", mig_converge_name(p->converge));
	p->multifd = p->converge != MIG_CONVERGE_POSTCOPY;
	p->postcopy = p->converge == MIG_CONVERGE_POSTCOPY;
	p->auto_converge = p->converge == MIG_CONVERGE_THROTTLE;
}

static uint32_t div_up(uint64_t a, uint64_t b)
{
	uint64_t q = (a + b - 1) / b;

	return q > UINT32_MAX ? UINT32_MAX : (uint32_t)q;
}

/* Streams and compression together: compression may want more streams. */
static void resolve_streams(struct mig_plan *p, struct why *w)
{
	uint64_t usable = mig_plan_usable_rate(p);
	uint32_t floor = p->tls_creds ? 2 : 1;
	uint32_t cores = p->host_cores ? p->host_cores : 1;
	uint32_t bound = cores < MIG_STREAMS_AUTO_MAX ? cores : MIG_STREAMS_AUTO_MAX;
	bool chosen = !p->streams;
	uint32_t zs, grown = 0;
	uint64_t zr;
	bool unsampled = false;
	char r[24];

	if (!p->multifd) {
		p->streams = 1;
		if (p->compress == MIG_COMPRESS_AUTO)
			p->compress = MIG_COMPRESS_NONE;
		why_add(w, "streams 1, compression none: post-copy mode");
		return;
	}
	if (bound < floor)
		bound = floor;
	if (chosen) {
		uint32_t need = usable ? div_up(usable, MIG_STREAM_RATE) : bound;
		p->streams = need < floor ? floor : need > bound ? bound : need;
	}
	rate_str(r, sizeof(r), usable);
	/* Streams zstd needs to feed twice the usable rate, at the rate it ran
	 * on the guest's own pages when measured. */
	zr = p->zstd_rate ? p->zstd_rate : MIG_ZSTD_RATE;
	zs = usable ? div_up(2 * usable, zr) : UINT32_MAX;
	if (p->compress == MIG_COMPRESS_AUTO && (!p->zstd_pct || p->zstd_pct > 50)) {
		p->compress = MIG_COMPRESS_NONE;
		unsampled = true;
		if (p->zstd_pct)
			why_add(w, "compression none: zstd shrinks the guest's pages to %u %% only "
				"(sampled), not worth its CPU", p->zstd_pct);
		else
			why_add(w, "compression none: the guest's pages were not sampled (or all "
				"zero: sent as such)");
	}
	if (chosen && p->compress != MIG_COMPRESS_NONE && p->streams < zs)
		grown = zs < bound ? zs : bound;
	/* zstd runs on the streams' threads: on cores the guests and the rest
	 * of the node are not using, besides the one the migration's own TLS
	 * and copying take, or it slows everything down, the migration
	 * included (measured: 1.77-2.19x plain QEMU on a dirtying guest when
	 * three TCG guests already held most of the two cores) */
	if (p->compress == MIG_COMPRESS_AUTO && p->busy_milli && zs != UINT32_MAX &&
	    (uint64_t)(zs + 1) * 1000u + p->busy_milli > (uint64_t)cores * 1000u) {
		uint32_t idle = p->busy_milli >= cores * 1000u ? 0 : cores * 1000u - p->busy_milli;

		p->compress = MIG_COMPRESS_NONE;
		unsampled = true;
		why_add(w, "compression none: zstd needs %u idle core%s to compress twice the %s "
			"usable, besides one for the migration's own TLS, and %u.%u of the %u cores "
			"were idle (measured): it would take CPU the guests use and slow the "
			"migration down", zs, zs == 1 ? "" : "s", r, idle / 1000, idle % 1000 / 100,
			cores);
	}
	if (p->compress == MIG_COMPRESS_AUTO) {
		if (zs <= (chosen ? bound : p->streams)) {
			p->compress = MIG_COMPRESS_ZSTD;
			why_add(w, "compression zstd: the guest's pages shrink to %u %% (sampled), "
				"%u streams compress twice the %s usable or more (%llu MB/s "
				"each), so it cannot slow the migration down", p->zstd_pct,
				grown ? grown : p->streams, r, (unsigned long long)(zr / 1000000));
		} else {
			p->compress = MIG_COMPRESS_NONE;
			grown = 0;
			if (usable)
				why_add(w, "compression none: %u streams could not compress twice the "
					"%s usable (%llu MB/s each)", chosen ? bound : p->streams, r,
					(unsigned long long)(zr / 1000000));
			else
				why_add(w, "compression none: the link rate is unknown");
		}
	} else if (!unsampled) {
		why_add(w, "compression %s: asked for", mig_compress_name(p->compress));
	}
	if (grown && grown > p->streams)
		p->streams = grown;
	else
		grown = 0;
	if (!chosen)
		why_add(w, "streams %u: asked for", p->streams);
	else if (grown)
		why_add(w, "streams %u: what zstd needs for twice the %s usable, at most %u "
			"(%u cores, %u at most)", p->streams, r, bound, cores, MIG_STREAMS_AUTO_MAX);
	else if (usable)
		why_add(w, "streams %u: what %s needs at 1 GB/s a stream, at least %u%s, at most "
			"%u (%u cores, %u at most)", p->streams, r, floor, floor > 1 ? " with TLS" : "",
			bound, cores, MIG_STREAMS_AUTO_MAX);
	else
		why_add(w, "streams %u: the link rate is unknown, so %u cores, %u at most%s",
			p->streams, cores, MIG_STREAMS_AUTO_MAX,
			floor > 1 ? ", at least 2 with TLS" : "");
}

static void resolve_deadline(struct mig_plan *p, struct why *w)
{
	uint64_t usable = mig_plan_usable_rate(p);
	uint64_t rate = usable ? usable : MIG_RATE_GUESS;
	uint64_t s;
	char ram[24], r[24];

	if (p->deadline_s) {
		why_add(w, "deadline %u s: asked for", p->deadline_s);
		return;
	}
	s = div_up(3 * (p->ram_bytes / 1000), rate / 1000 ? rate / 1000 : 1);
	if (s < MIG_DEADLINE_DEFAULT_S)
		s = MIG_DEADLINE_DEFAULT_S;
	if (s > MIG_DEADLINE_MAX_S)
		s = MIG_DEADLINE_MAX_S;
	p->deadline_s = (uint32_t)s;
	why_add(w, "deadline %u s: the longer of %u s and three passes over %s at %s%s",
		p->deadline_s, MIG_DEADLINE_DEFAULT_S, mig_fmt_bytes(ram, sizeof(ram), p->ram_bytes),
		rate_str(r, sizeof(r), rate), usable ? "" : " (rate unknown: 1 GbE assumed)");
}

static void resolve_tls(struct mig_plan *p, struct why *w)
{
	p->tls_priority = NULL;
	if (!p->tls_creds)
		why_add(w, "TLS off: no credentials");
	else if (!p->avoid_1937)
		why_add(w, "TLS with QEMU's default ciphers (this QEMU has the fix for issue 1937)");
	else if (p->postcopy) {
		p->tls_priority = MIG_TLS_PRIORITY_NO_AES;
		why_add(w, "TLS with ChaCha20-Poly1305, no AES: in post-copy all RAM crosses the "
			"main channel, which the return path reads, and GnuTLS rekeying AES after "
			"~64 GB crashes QEMU there (QEMU issue 1937)");
	} else
		why_add(w, "TLS with AES-GCM: the bulk crosses multifd channels, each used one way "
			"by one thread, and the main channel carries far less than the ~64 GB of "
			"QEMU issue 1937");
}

int mig_plan_resolve(struct mig_plan *p, char *why, size_t len)
{
	struct why w = { why, len, 0 };
	int rc;

	if (why && len)
		*why = '\0';
	if (!p)
		return -EINVAL;
	rc = check(p, &w);
	if (rc)
		return rc;
	resolve_downtime(p, &w);
	resolve_mode(p, &w);
	resolve_streams(p, &w);
	resolve_deadline(p, &w);
	resolve_tls(p, &w);
	p->resolved = true;
	return 0;
}

/* ---- QMP arguments ---- */

static bool side_ok(const struct mig_plan *p, int side)
{
	return p && p->resolved && (side == MIG_SRC || side == MIG_DST);
}

static int cap_add(json_t *arr, const char *name, bool on)
{
	return json_array_append_new(arr, json_pack("{s:s, s:b}", "capability", name, "state", on));
}

json_t *mig_caps_json(const struct mig_plan *p, int side)
{
	json_t *arr = NULL;
	int rc = 0;

	if (!side_ok(p, side))
		return NULL;
	arr = json_array();
	if (!arr)
		return NULL;
	rc |= cap_add(arr, "events", true);
	rc |= cap_add(arr, "return-path", true);
	rc |= cap_add(arr, "validate-uuid", true);
	rc |= cap_add(arr, "multifd", p->multifd);
	rc |= cap_add(arr, "postcopy-ram", p->postcopy);
	rc |= cap_add(arr, "postcopy-preempt", p->postcopy);
	if (side == MIG_SRC) {
		rc |= cap_add(arr, "pause-before-switchover", true);
		rc |= cap_add(arr, "auto-converge", p->auto_converge);
		rc |= cap_add(arr, "zero-copy-send", false);
	} else {
		rc |= cap_add(arr, "late-block-activate", true);
	}
	if (rc) {
		json_decref(arr);
		return NULL;
	}
	return json_pack("{s:o}", "capabilities", arr);
}

static int set_int(json_t *o, const char *key, uint64_t v)
{
	return json_object_set_new(o, key, json_integer((json_int_t)v));
}

static int set_str(json_t *o, const char *key, const char *v)
{
	return json_object_set_new(o, key, json_string(v));
}

static int params_multifd(json_t *o, const struct mig_plan *p)
{
	int rc = 0;

	if (!p->multifd)
		return 0;
	rc |= set_int(o, "multifd-channels", p->streams);
	rc |= set_str(o, "multifd-compression",
		      p->compress == MIG_COMPRESS_ZSTD ? "zstd" : "none");
	return rc;
}

static int params_src(json_t *o, const struct mig_plan *p)
{
	int rc = 0;

	rc |= set_int(o, "downtime-limit", p->downtime_start_ms);
	rc |= set_int(o, "max-bandwidth",
		      p->max_bandwidth ? p->max_bandwidth : MIG_BANDWIDTH_UNLIMITED);
	rc |= set_int(o, "avail-switchover-bandwidth", p->link_rate);
	rc |= set_str(o, "tls-creds", p->tls_creds ? p->tls_creds : "");
	rc |= set_str(o, "tls-hostname", p->tls_hostname ? p->tls_hostname : "");
	rc |= params_multifd(o, p);
	if (p->multifd && p->compress == MIG_COMPRESS_ZSTD)
		rc |= set_int(o, "multifd-zstd-level", 1);
	if (p->postcopy)
		rc |= set_int(o, "max-postcopy-bandwidth", p->max_bandwidth);
	if (p->auto_converge) {
		rc |= set_int(o, "cpu-throttle-initial", MIG_THROTTLE_START);
		rc |= set_int(o, "cpu-throttle-increment", MIG_THROTTLE_STEP);
		rc |= set_int(o, "max-cpu-throttle", MIG_THROTTLE_START);
	}
	return rc;
}

static int params_dst(json_t *o, const struct mig_plan *p)
{
	int rc = 0;

	rc |= set_str(o, "tls-creds", p->tls_creds ? p->tls_creds : "");
	/* Never "": QEMU 10.0 would look up an authz object named "". */
	if (p->tls_authz)
		rc |= set_str(o, "tls-authz", p->tls_authz);
	rc |= params_multifd(o, p);
	return rc;
}

json_t *mig_params_json(const struct mig_plan *p, int side)
{
	json_t *o = NULL;
	int rc;

	if (!side_ok(p, side))
		return NULL;
	o = json_object();
	if (!o)
		return NULL;
	rc = side == MIG_SRC ? params_src(o, p) : params_dst(o, p);
	if (rc) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *mig_tls_creds_json(const struct mig_plan *p, int side, const char *dir)
{
	json_t *o = NULL;

	if (!side_ok(p, side) || !p->tls_creds || !dir)
		return NULL;
	o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "qom-type", "tls-creds-x509",
		      "id", p->tls_creds, "dir", dir,
		      "endpoint", side == MIG_SRC ? "client" : "server", "verify-peer", 1);
	if (o && p->tls_priority && set_str(o, "priority", p->tls_priority)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

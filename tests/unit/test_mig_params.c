/*
 * test_mig_params: a migration plan's choices and the QMP arguments each
 * QEMU gets. Four plans are pinned by golden files (both sides each: what
 * object-add, migrate-set-capabilities and migrate-set-parameters carry,
 * with the reasons); the rules are checked over sweeps of plans, with
 * expectations computed from the documented formulas, not copied from
 * the output.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/mig.h"
#include "migration/mig_priv.h"
#include "tests/unit/util_golden.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MiB (1024ull * 1024)
#define GiB (1024 * MiB)
#define GBE_1 117000000ull   /* what a 1 GbE link carries */
#define GBE_10 1170000000ull /* and a 10 GbE one */
#define TLS_DIR "/var/lib/hca/tls/migration"

static json_t *side_doc(const struct mig_plan *p, int side, const char *why)
{
	json_t *lines = json_array();
	json_t *doc;
	char *copy = strdup(why), *save = NULL;

	for (char *l = strtok_r(copy, ";", &save); l; l = strtok_r(NULL, ";", &save))
		json_array_append_new(lines, json_string(l + (*l == ' ')));
	free(copy);
	doc = json_pack("{s:o, s:o*, s:o, s:o}", "why", lines,
			"object-add", mig_tls_creds_json(p, side, TLS_DIR),
			"migrate-set-capabilities", mig_caps_json(p, side),
			"migrate-set-parameters", mig_params_json(p, side));
	assert_non_null(doc);
	if (!p->tls_creds)
		json_object_set_new(doc, "object-add", json_null());
	return doc;
}

static void check_golden(const char *name, struct mig_plan *p)
{
	char why[2048], file[64];
	static const char *const sfx[] = { "src", "dst" };

	assert_int_equal(mig_plan_resolve(p, why, sizeof(why)), 0);
	for (int side = MIG_SRC; side <= MIG_DST; side++) {
		json_t *doc = side_doc(p, side, why);
		char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		size_t n = strlen(text);

		text = realloc(text, n + 2);
		strcpy(text + n, "\n");
		snprintf(file, sizeof(file), "mig_%s_%s.json", name, sfx[side]);
		assert_int_equal(golden_check(file, text), 0);
		free(text);
		json_decref(doc);
	}
}

/* ---- the four pinned plans ---- */

static void golden_idle_fast_link(void **state)
{
	struct mig_plan p = {
		.host_cores = 8, .link_rate = GBE_10, .dirty_rate = 4000000,
		.ram_bytes = 4 * GiB, .tls_creds = "mig-tls", .avoid_1937 = true,
	};

	check_golden("idle_fast_link", &p);
	assert_true(p.multifd);
	assert_false(p.postcopy);
	assert_null(p.tls_priority);
}

static void golden_busy_postcopy(void **state)
{
	struct mig_plan p = {
		.host_cores = 4, .link_rate = GBE_1, .dirty_rate = 200000000,
		.ram_bytes = 2 * GiB, .tls_creds = "mig-tls", .avoid_1937 = true,
	};

	check_golden("busy_postcopy", &p);
	assert_true(p.postcopy);
	assert_false(p.multifd);
	assert_string_equal(p.tls_priority, MIG_TLS_PRIORITY_NO_AES);
}

static void golden_slow_link_zstd(void **state)
{
	struct mig_plan p = {
		.host_cores = 4, .link_rate = GBE_1, .dirty_rate = 30000000,
		.ram_bytes = 8 * GiB, .tls_creds = "mig-tls", .avoid_1937 = true,
		.zstd_pct = 35, .zstd_rate = 400000000,
	};

	check_golden("slow_link_zstd", &p);
	assert_int_equal(p.compress, MIG_COMPRESS_ZSTD);
}

static void golden_user_cap(void **state)
{
	struct mig_plan p = {
		.downtime_ms = 100, .max_bandwidth = 50 * MiB, .streams = 3,
		.compress = MIG_COMPRESS_NONE, .deadline_s = 300,
		.host_cores = 8, .link_rate = GBE_10, .dirty_rate = 10000000,
		.ram_bytes = 4 * GiB, .tls_creds = "mig-tls", .tls_hostname = "10.0.0.3",
		.tls_authz = "mig-authz", .avoid_1937 = true,
	};

	check_golden("user_cap", &p);
	assert_int_equal(p.streams, 3);
}

/* ---- every plan of a grid ---- */

static json_t *find_cap(json_t *caps, const char *name)
{
	size_t i;
	json_t *c;

	json_array_foreach(json_object_get(caps, "capabilities"), i, c)
		if (!strcmp(json_string_value(json_object_get(c, "capability")), name))
			return json_object_get(c, "state");
	return NULL;
}

static void check_caps(const struct mig_plan *p)
{
	static const char *const shared[] = { "events", "return-path", "validate-uuid",
					      "multifd", "postcopy-ram", "postcopy-preempt" };
	json_t *src = mig_caps_json(p, MIG_SRC), *dst = mig_caps_json(p, MIG_DST);

	assert_non_null(src);
	assert_non_null(dst);
	for (size_t i = 0; i < ARRAY_SIZE(shared); i++) {
		assert_non_null(find_cap(src, shared[i]));
		assert_true(json_equal(find_cap(src, shared[i]), find_cap(dst, shared[i])));
	}
	/* QEMU 10.0 refuses post-copy with multifd */
	assert_false(json_is_true(find_cap(src, "multifd")) &&
		     json_is_true(find_cap(src, "postcopy-ram")));
	assert_true(json_is_true(find_cap(src, "multifd")) == p->multifd);
	assert_true(json_is_true(find_cap(src, "postcopy-ram")) == p->postcopy);
	assert_true(json_is_true(find_cap(src, "auto-converge")) ==
		    (p->converge == MIG_CONVERGE_THROTTLE));
	assert_true(json_is_true(find_cap(src, "pause-before-switchover")));
	assert_true(json_is_false(find_cap(src, "zero-copy-send")));
	assert_null(find_cap(src, "late-block-activate"));
	assert_true(json_is_true(find_cap(dst, "late-block-activate")));
	assert_null(find_cap(dst, "pause-before-switchover"));
	assert_null(find_cap(dst, "auto-converge"));
	json_decref(src);
	json_decref(dst);
}

/* json_equal() is false for two NULLs: both absent is the same here. */
static bool same(json_t *a, json_t *b)
{
	return (!a && !b) || json_equal(a, b);
}

static void check_params(const struct mig_plan *asked, const struct mig_plan *p)
{
	json_t *src = mig_params_json(p, MIG_SRC), *dst = mig_params_json(p, MIG_DST);
	uint64_t usable = mig_plan_usable_rate(p);

	assert_non_null(src);
	assert_non_null(dst);
	/* QEMU's defaults bite: both are always set */
	assert_int_equal(json_integer_value(json_object_get(src, "max-bandwidth")),
			 p->max_bandwidth ? p->max_bandwidth : (uint64_t)INT64_MAX);
	assert_int_equal(json_integer_value(json_object_get(src, "downtime-limit")),
			 p->downtime_start_ms);
	assert_true(p->downtime_start_ms <= p->downtime_ms);
	assert_int_equal(json_integer_value(json_object_get(src, "avail-switchover-bandwidth")),
			 p->link_rate);
	/* channel count and compression identical on both sides, or absent */
	assert_true(same(json_object_get(src, "multifd-channels"),
			 json_object_get(dst, "multifd-channels")));
	assert_true(same(json_object_get(src, "multifd-compression"),
			 json_object_get(dst, "multifd-compression")));
	assert_true((json_object_get(src, "multifd-channels") != NULL) == p->multifd);
	if (p->multifd) {
		assert_int_equal(json_integer_value(json_object_get(src, "multifd-channels")),
				 p->streams);
		assert_true(p->streams >= 1 && p->streams <= MIG_STREAMS_MAX);
		assert_true(asked->streams || !p->tls_creds || p->streams >= 2);
		assert_true(!asked->streams || p->streams == asked->streams);
	} else {
		assert_int_equal(p->streams, 1);
		assert_int_equal(p->compress, MIG_COMPRESS_NONE);
	}
	/* zstd chosen only where the compressors outrun twice the usable rate */
	if (asked->compress == MIG_COMPRESS_AUTO && p->compress == MIG_COMPRESS_ZSTD)
		assert_true(usable && (uint64_t)p->streams * MIG_ZSTD_RATE >= 2 * usable);
	assert_true(asked->compress == MIG_COMPRESS_AUTO || p->compress == asked->compress);
	assert_int_not_equal(p->compress, MIG_COMPRESS_AUTO);
	assert_int_not_equal(p->converge, MIG_CONVERGE_AUTO);
	assert_string_equal(json_string_value(json_object_get(src, "tls-creds")),
			    p->tls_creds ? p->tls_creds : "");
	assert_null(json_object_get(dst, "tls-authz"));
	assert_null(json_object_get(dst, "downtime-limit"));
	json_decref(src);
	json_decref(dst);
}

/* Resolving a resolved plan changes nothing. */
static void check_again(const struct mig_plan *p)
{
	struct mig_plan q = *p;

	assert_int_equal(mig_plan_resolve(&q, NULL, 0), 0);
	assert_memory_equal(&q, p, sizeof(q));
}

static void every_plan_of_a_grid(void **state)
{
	static const uint64_t links[] = { 0, 12500000, GBE_1, GBE_10, 3500000000ull };
	static const uint64_t dirties[] = { 0, 1000000, 90000000, 400000000 };
	static const uint64_t caps[] = { 0, 20 * MiB, 2 * GiB };
	static const uint32_t streams[] = { 0, 1, 2, 8 };
	static const uint32_t cores[] = { 0, 1, 3, 16 };
	unsigned n = 0, refused = 0;

	for (size_t a = 0; a < ARRAY_SIZE(links); a++)
	for (size_t b = 0; b < ARRAY_SIZE(dirties); b++)
	for (size_t c = 0; c < ARRAY_SIZE(caps); c++)
	for (size_t s = 0; s < ARRAY_SIZE(streams); s++)
	for (size_t k = 0; k < ARRAY_SIZE(cores); k++)
	for (int cm = MIG_COMPRESS_AUTO; cm <= MIG_COMPRESS_ZSTD; cm++)
	for (int cv = MIG_CONVERGE_AUTO; cv <= MIG_CONVERGE_NEVER; cv++)
	for (int tls = 0; tls < 2; tls++) {
		struct mig_plan p = {
			.max_bandwidth = caps[c], .streams = streams[s],
			.compress = (enum mig_compress)cm, .converge = (enum mig_converge)cv,
			.host_cores = cores[k], .link_rate = links[a], .dirty_rate = dirties[b],
			.ram_bytes = 3 * GiB, .tls_creds = tls ? "t" : NULL, .avoid_1937 = true,
		};
		const struct mig_plan asked = p;
		char why[1024];

		if (mig_plan_resolve(&p, why, sizeof(why))) {
			refused++;
			assert_true(cv == MIG_CONVERGE_POSTCOPY);
			assert_non_null(strstr(why, "post-copy"));
			continue;
		}
		check_caps(&p);
		check_params(&asked, &p);
		check_again(&p);
		n++;
	}
	assert_true(n > 10000);
	assert_true(refused > 0);
}

/* ---- single rules ---- */

static void downtime_starts_low_within_target(void **state)
{
	static const uint32_t targets[] = { 0, 1, 5, 10, 19, 20, 21, 50, 51, 300, MIG_DOWNTIME_MAX_MS };

	for (size_t i = 0; i < ARRAY_SIZE(targets); i++) {
		struct mig_plan p = { .downtime_ms = targets[i], .ram_bytes = GiB };
		uint32_t t = targets[i] ? targets[i] : MIG_DOWNTIME_DEFAULT_MS;
		uint32_t want = t / 2 > MIG_DOWNTIME_START_MIN_MS ? t / 2 : MIG_DOWNTIME_START_MIN_MS;

		want = want > t ? t : want;
		assert_int_equal(mig_plan_resolve(&p, NULL, 0), 0);
		assert_int_equal(p.downtime_ms, t);
		assert_int_equal(p.downtime_start_ms, want);
	}
}

static void refusals_leave_the_plan_alone(void **state)
{
	static const struct {
		struct mig_plan p;
		const char *word;
	} bad[] = {
		{ { .ram_bytes = 0 }, "RAM" },
		{ { .ram_bytes = GiB, .downtime_ms = MIG_DOWNTIME_MAX_MS + 1 }, "2000000" },
		{ { .ram_bytes = GiB, .max_bandwidth = (uint64_t)INT64_MAX + 1 }, "rate" },
		{ { .ram_bytes = GiB, .streams = MIG_STREAMS_MAX + 1 }, "64" },
		{ { .ram_bytes = GiB, .compress = (enum mig_compress)7 }, "compression" },
		{ { .ram_bytes = GiB, .converge = (enum mig_converge)9 }, "convergence" },
		{ { .ram_bytes = GiB, .deadline_s = MIG_DEADLINE_MAX_S + 1 }, "deadline" },
		{ { .ram_bytes = GiB, .tls_hostname = "n3" }, "without TLS" },
		{ { .ram_bytes = GiB, .tls_authz = "a" }, "without TLS" },
		{ { .ram_bytes = GiB, .tls_creds = "" }, "empty" },
		{ { .ram_bytes = GiB, .converge = MIG_CONVERGE_POSTCOPY, .streams = 4 }, "--streams" },
		{ { .ram_bytes = GiB, .converge = MIG_CONVERGE_POSTCOPY,
		    .compress = MIG_COMPRESS_ZSTD }, "--compress" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct mig_plan p = bad[i].p;
		char why[512];

		assert_int_equal(mig_plan_resolve(&p, why, sizeof(why)), -EINVAL);
		assert_non_null(strstr(why, bad[i].word));
		assert_memory_equal(&p, &bad[i].p, sizeof(p));
		assert_null(mig_caps_json(&p, MIG_SRC));
		assert_null(mig_params_json(&p, MIG_DST));
	}
	assert_int_equal(mig_plan_resolve(NULL, NULL, 0), -EINVAL);
}

static void converge_auto_from_dirty_rate_vs_usable(void **state)
{
	static const struct {
		uint64_t link, cap, dirty;
		uint32_t streams;
		enum mig_compress compress;
	} c[] = {
		{ GBE_1, 0, 0, 0, MIG_COMPRESS_AUTO },
		{ 0, 0, 50000000, 0, MIG_COMPRESS_AUTO },
		{ GBE_1, 0, GBE_1 * 8 / 10, 0, MIG_COMPRESS_AUTO },     /* exactly 80 % */
		{ GBE_1, 0, GBE_1 * 8 / 10 + 1, 0, MIG_COMPRESS_AUTO },
		{ GBE_10, 50 * MiB, 60000000, 0, MIG_COMPRESS_AUTO },   /* the cap decides */
		{ 0, 50 * MiB, 30000000, 0, MIG_COMPRESS_AUTO },
		{ GBE_1, 0, 200000000, 2, MIG_COMPRESS_AUTO },          /* multifd asked for */
		{ GBE_1, 0, 200000000, 0, MIG_COMPRESS_ZSTD },
		{ GBE_1, 0, 200000000, 1, MIG_COMPRESS_NONE },
	};

	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		struct mig_plan p = { .link_rate = c[i].link, .max_bandwidth = c[i].cap,
				      .dirty_rate = c[i].dirty, .streams = c[i].streams,
				      .compress = c[i].compress, .ram_bytes = GiB };
		uint64_t usable = c[i].cap && (!c[i].link || c[i].cap < c[i].link) ? c[i].cap
										   : c[i].link;
		bool forced = c[i].streams > 1 || c[i].compress == MIG_COMPRESS_ZSTD;
		bool want_pc = !forced && usable && c[i].dirty * 100 > usable * 80;
		char why[1024];

		assert_int_equal(mig_plan_resolve(&p, why, sizeof(why)), 0);
		assert_int_equal(p.converge, want_pc ? MIG_CONVERGE_POSTCOPY : MIG_CONVERGE_THROTTLE);
		assert_non_null(strstr(why, want_pc ? "converge postcopy" : "converge throttle"));
		assert_true(p.postcopy == want_pc && p.multifd == !want_pc);
	}
}

/* Worked by hand from mig.h: streams = what the usable rate needs at
 * 1 GB/s each, within [2 with TLS else 1, min(cores, 4)]; zstd (auto) when
 * the streams allowed can compress twice the usable rate at 300 MB/s each,
 * growing the count to what that takes. */
static void streams_and_compression(void **state)
{
	static const struct {
		uint32_t cores;
		uint64_t link;
		bool tls;
		enum mig_compress asked, want_c;
		uint32_t want;
	} c[] = {
		{ 1, 0, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 2 },   /* TLS floor */
		{ 1, 0, false, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 1 },
		{ 0, 0, false, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 1 },  /* cores unknown: 1 */
		{ 64, 0, false, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 4 }, /* rate unknown: bound */
		{ 8, GBE_10, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 2 }, /* 1.17 GB/s; zstd needs 8 */
		{ 8, 3500000000ull, true, MIG_COMPRESS_NONE, MIG_COMPRESS_NONE, 4 },
		{ 2, 3500000000ull, false, MIG_COMPRESS_NONE, MIG_COMPRESS_NONE, 2 },
		{ 8, GBE_1, false, MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, 1 },  /* zstd needs 1 */
		{ 8, GBE_1, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, 2 },
		{ 1, 12500000, false, MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, 1 },
		{ 8, 400000000, false, MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, 3 }, /* 800/300 */
		{ 8, 400000000, false, MIG_COMPRESS_ZSTD, MIG_COMPRESS_ZSTD, 3 },
		{ 8, GBE_10, false, MIG_COMPRESS_ZSTD, MIG_COMPRESS_ZSTD, 4 },  /* asked: bound */
		{ 1, 300000000, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, 2 },  /* exactly 2x */
		{ 1, 300000001, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 2 },
		{ 4, 600000000, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_ZSTD, 4 },
		{ 4, 600000001, true, MIG_COMPRESS_AUTO, MIG_COMPRESS_NONE, 2 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		struct mig_plan p = { .host_cores = c[i].cores, .link_rate = c[i].link,
				      .tls_creds = c[i].tls ? "t" : NULL, .compress = c[i].asked,
				      .converge = MIG_CONVERGE_THROTTLE, .ram_bytes = GiB,
				      .zstd_pct = 40 /* sampled: compressible */ };
		char why[1024];

		assert_int_equal(mig_plan_resolve(&p, why, sizeof(why)), 0);
		assert_int_equal(p.streams, c[i].want);
		assert_int_equal(p.compress, c[i].want_c);
		assert_non_null(strstr(why, c[i].want_c == MIG_COMPRESS_ZSTD ? "compression zstd"
									 : "compression none"));
	}
}

/* zstd only on pages measured to shrink to half or less */
static void compression_needs_a_measurement(void **state)
{
	static const struct {
		uint32_t pct;
		uint64_t zrate;
		enum mig_compress want;
		const char *why;
	} c[] = {
		{ 0, 0, MIG_COMPRESS_NONE, "not sampled" },
		{ 80, 0, MIG_COMPRESS_NONE, "to 80 % only" },
		{ 51, 0, MIG_COMPRESS_NONE, "to 51 % only" },
		{ 50, 0, MIG_COMPRESS_ZSTD, "shrink to 50 %" },
		{ 20, 50000000, MIG_COMPRESS_NONE, "(50 MB/s each)" }, /* too slow a core */
		{ 20, 400000000, MIG_COMPRESS_ZSTD, "(400 MB/s each)" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		struct mig_plan p = { .host_cores = 2, .link_rate = GBE_1, .tls_creds = "t",
				      .converge = MIG_CONVERGE_THROTTLE, .ram_bytes = GiB,
				      .zstd_pct = c[i].pct, .zstd_rate = c[i].zrate };
		char why[1024];

		assert_int_equal(mig_plan_resolve(&p, why, sizeof(why)), 0);
		assert_int_equal(p.compress, c[i].want);
		assert_non_null(strstr(why, c[i].why));
	}
}

/* zstd only on cores nothing else uses: a node whose guests hold its CPU
 * migrates faster without it */
static void compression_needs_idle_cores(void **state)
{
	static const struct {
		uint32_t busy_milli;
		enum mig_compress want;
		const char *why;
	} c[] = {
		{ 0, MIG_COMPRESS_ZSTD, "shrink to 20 %" },   /* not measured */
		{ 500, MIG_COMPRESS_ZSTD, "shrink to 20 %" }, /* 3.5 of 4 idle, 2 + 1 needed */
		{ 1000, MIG_COMPRESS_ZSTD, "shrink to 20 %" }, /* 3 idle */
		{ 1001, MIG_COMPRESS_NONE, "and 2.9 of the 4 cores were idle" },
		{ 3500, MIG_COMPRESS_NONE, "and 0.5 of the 4 cores were idle" },
		{ 4000, MIG_COMPRESS_NONE, "and 0.0 of the 4 cores were idle" },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		struct mig_plan p = { .host_cores = 4, .link_rate = GBE_1, .tls_creds = "t",
				      .converge = MIG_CONVERGE_THROTTLE, .ram_bytes = GiB,
				      .zstd_pct = 20, .zstd_rate = 200000000,
				      .busy_milli = c[i].busy_milli };
		char why[1024];

		assert_int_equal(mig_plan_resolve(&p, why, sizeof(why)), 0);
		assert_int_equal(p.compress, c[i].want);
		assert_non_null(strstr(why, c[i].why));
		if (c[i].want == MIG_COMPRESS_NONE)
			assert_non_null(strstr(why, "zstd needs 2 idle cores"));
	}
}

static void tls_choice_for_issue_1937(void **state)
{
	static const struct {
		enum mig_converge cv;
		bool avoid;
		bool no_aes;
	} c[] = {
		{ MIG_CONVERGE_POSTCOPY, true, true }, { MIG_CONVERGE_POSTCOPY, false, false },
		{ MIG_CONVERGE_THROTTLE, true, false }, { MIG_CONVERGE_NEVER, true, false },
	};

	for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
		struct mig_plan p = { .converge = c[i].cv, .avoid_1937 = c[i].avoid,
				      .tls_creds = "mig-tls", .ram_bytes = GiB };
		char why[1024];

		assert_int_equal(mig_plan_resolve(&p, why, sizeof(why)), 0);
		assert_non_null(strstr(why, "1937"));
		for (int side = MIG_SRC; side <= MIG_DST; side++) {
			json_t *o = mig_tls_creds_json(&p, side, TLS_DIR);

			assert_non_null(o);
			assert_string_equal(json_string_value(json_object_get(o, "endpoint")),
					    side == MIG_SRC ? "client" : "server");
			assert_true(json_is_true(json_object_get(o, "verify-peer")));
			assert_string_equal(json_string_value(json_object_get(o, "dir")), TLS_DIR);
			if (c[i].no_aes)
				assert_string_equal(json_string_value(json_object_get(o, "priority")),
						    MIG_TLS_PRIORITY_NO_AES);
			else
				assert_null(json_object_get(o, "priority"));
			json_decref(o);
		}
	}
}

static void no_tls_and_no_plan(void **state)
{
	struct mig_plan p = { .ram_bytes = GiB, .avoid_1937 = true,
			      .converge = MIG_CONVERGE_POSTCOPY };
	json_t *src, *dst;

	assert_null(mig_caps_json(&p, MIG_SRC)); /* not resolved yet */
	assert_null(mig_params_json(&p, MIG_DST));
	assert_int_equal(mig_plan_resolve(&p, NULL, 0), 0);
	assert_null(p.tls_priority);
	assert_null(mig_tls_creds_json(&p, MIG_SRC, TLS_DIR));
	src = mig_params_json(&p, MIG_SRC);
	dst = mig_params_json(&p, MIG_DST);
	assert_string_equal(json_string_value(json_object_get(src, "tls-creds")), "");
	assert_string_equal(json_string_value(json_object_get(src, "tls-hostname")), "");
	assert_string_equal(json_string_value(json_object_get(dst, "tls-creds")), "");
	assert_int_equal(json_integer_value(json_object_get(src, "max-postcopy-bandwidth")), 0);
	json_decref(src);
	json_decref(dst);
	p.tls_creds = "t";
	assert_null(mig_caps_json(&p, 2));
	assert_null(mig_params_json(&p, -1));
	assert_null(mig_tls_creds_json(&p, MIG_DST, NULL));
	assert_null(mig_caps_json(NULL, MIG_SRC));
}

static void names_round_trip(void **state)
{
	enum mig_compress cm;
	enum mig_converge cv;

	for (int i = MIG_COMPRESS_AUTO; i <= MIG_COMPRESS_ZSTD; i++) {
		enum mig_compress c = MIG_COMPRESS_ZSTD + 1;

		assert_int_equal(mig_compress_parse(mig_compress_name(i), &c), 0);
		assert_int_equal(c, i);
	}
	for (int i = MIG_CONVERGE_AUTO; i <= MIG_CONVERGE_NEVER; i++) {
		enum mig_converge c = MIG_CONVERGE_NEVER + 1;

		assert_int_equal(mig_converge_parse(mig_converge_name(i), &c), 0);
		assert_int_equal(c, i);
	}
	assert_int_equal(mig_compress_parse("lz4", &cm), -EINVAL);
	assert_int_equal(mig_converge_parse(NULL, &cv), -EINVAL);
	assert_string_equal(mig_compress_name(9), "?");
	assert_string_equal(mig_converge_name(-1), "?");
}

static void bytes_for_people(void **state)
{
	static const struct {
		uint64_t n;
		const char *s;
	} c[] = {
		{ 0, "0 B" }, { 1023, "1023 B" }, { 1024, "1.0 KiB" }, { 1536, "1.5 KiB" },
		{ 10 * 1024 - 1, "10 KiB" }, { 180 * MiB, "180 MiB" }, { 1288490189, "1.2 GiB" },
		{ UINT64_MAX, "16 EiB" },
	};
	char buf[24];

	for (size_t i = 0; i < ARRAY_SIZE(c); i++)
		assert_string_equal(mig_fmt_bytes(buf, sizeof(buf), c[i].n), c[i].s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(golden_idle_fast_link),
		cmocka_unit_test(golden_busy_postcopy),
		cmocka_unit_test(golden_slow_link_zstd),
		cmocka_unit_test(golden_user_cap),
		cmocka_unit_test(every_plan_of_a_grid),
		cmocka_unit_test(downtime_starts_low_within_target),
		cmocka_unit_test(refusals_leave_the_plan_alone),
		cmocka_unit_test(converge_auto_from_dirty_rate_vs_usable),
		cmocka_unit_test(streams_and_compression),
		cmocka_unit_test(compression_needs_a_measurement),
		cmocka_unit_test(compression_needs_idle_cores),
		cmocka_unit_test(tls_choice_for_issue_1937),
		cmocka_unit_test(no_tls_and_no_plan),
		cmocka_unit_test(names_round_trip),
		cmocka_unit_test(bytes_for_people),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

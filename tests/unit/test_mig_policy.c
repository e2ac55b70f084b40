/*
 * test_mig_policy: the convergence policy fed synthetic sample sequences.
 *
 * Two sources of samples: a small model of QEMU's precopy (passes that send
 * the dirty set at the link rate while the guest dirties a working set;
 * the downtime limit, the CPU throttle and post-copy act on it as in QEMU),
 * driven by the policy's own decisions; and scripted sequences where the
 * figures must come out exactly. Expectations come from the documented
 * rules and tunables, never from a previous run.
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

#define MiB (1024.0 * 1024)
#define GiB (1024 * MiB)
#define T0 1000000ull /* the samples' clock at the start, ms */
#define MAX_ACTS 16

/* ---- a plan ---- */

static struct mig_plan plan(enum mig_converge cv, uint32_t deadline_s)
{
	struct mig_plan p = { .converge = cv, .deadline_s = deadline_s, .ram_bytes = 1ull << 30,
			      .host_cores = 4 };

	assert_int_equal(mig_plan_resolve(&p, NULL, 0), 0);
	return p;
}

/* ---- the model of QEMU's precopy ---- */

struct sim {
	double ram, rate, dirty, wss;  /* bytes, bytes/s, bytes/s, bytes */
	double remaining, dirty_set, sent;
	uint64_t iteration, t_ms;
	uint32_t downtime_ms, throttle;
	bool postcopy, done;
};

static void sim_init(struct sim *s, double ram, double rate, double dirty, double wss,
		     const struct mig_plan *p)
{
	*s = (struct sim){ .ram = ram, .rate = rate, .dirty = dirty, .wss = wss,
			   .remaining = ram, .iteration = 1, .t_ms = T0,
			   .downtime_ms = p->downtime_start_ms, .throttle = 0 };
}

/* One second in 10 ms steps. At the end of a pass QEMU syncs the bitmap:
 * done if what is left fits in the downtime limit at the rate, else a new
 * pass over what the guest dirtied meanwhile. */
static void sim_second(struct sim *s)
{
	for (int i = 0; i < 100 && !s->done; i++) {
		double send = s->rate / 100, thr = s->rate * s->downtime_ms / 1000;
		double d = s->dirty * (100 - s->throttle) / 100 / 100;

		s->sent += send < s->remaining ? send : s->remaining;
		s->remaining = s->remaining > send ? s->remaining - send : 0;
		if (s->postcopy) {
			s->done = s->remaining <= 0;
			continue;
		}
		s->dirty_set = s->dirty_set + d > s->wss ? s->wss : s->dirty_set + d;
		if (s->remaining <= thr) {
			if (s->remaining + s->dirty_set <= thr) {
				s->done = true;
				break;
			}
			s->remaining += s->dirty_set;
			s->dirty_set = 0;
			s->iteration++;
		}
	}
	s->t_ms += 1000;
}

static struct mig_sample sim_sample(const struct sim *s)
{
	return (struct mig_sample){
		.remaining = (uint64_t)s->remaining, .transferred = (uint64_t)s->sent,
		.total = (uint64_t)s->ram, .rate = (uint64_t)s->rate,
		.dirty_rate = (uint64_t)(s->dirty * (100 - s->throttle) / 100),
		.iteration = s->iteration,
		.expected_downtime_ms = (uint32_t)(s->remaining * 1000 / s->rate),
		.t_ms = s->t_ms,
	};
}

struct act {
	enum mig_action a;
	uint64_t value, t_ms;
	char reason[MIG_REASON_MAX];
};

struct run {
	struct act acts[MAX_ACTS];
	unsigned n;
	bool done;      /* the model finished */
};

static void record(struct run *r, const struct mig_decision *d, uint64_t t)
{
	assert_true(r->n < MAX_ACTS);
	r->acts[r->n] = (struct act){ .a = d->action, .value = d->value, .t_ms = t };
	snprintf(r->acts[r->n].reason, sizeof(r->acts[r->n].reason), "%s", d->reason);
	r->n++;
}

/* Run the model for up to @secs s, applying the policy's decisions. */
static void sim_run(struct sim *s, struct mig_policy *pol, unsigned secs, struct run *r)
{
	struct mig_decision d;

	memset(r, 0, sizeof(*r));
	for (unsigned i = 0; i < secs && !s->done; i++) {
		struct mig_sample smp;

		sim_second(s);
		if (s->done)
			break;
		smp = sim_sample(s);
		if (mig_policy_feed(pol, &smp, &d) == MIG_ACT_NONE) {
			assert_string_equal(d.reason, "");
			continue;
		}
		record(r, &d, s->t_ms);
		assert_string_not_equal(d.reason, "");
		if (d.action == MIG_ACT_RAISE_DOWNTIME)
			s->downtime_ms = (uint32_t)d.value;
		else if (d.action == MIG_ACT_THROTTLE_MORE)
			s->throttle = (uint32_t)d.value;
		else if (d.action == MIG_ACT_POSTCOPY)
			s->postcopy = true;
		else
			break;
	}
	r->done = s->done;
}

/* ---- scripted sequences ---- */

/* A guest stuck at a dirty set of @peak: passes shorter than a second,
 * `remaining` seen at a different point of the pass each second (@flat:
 * always at its start, so the figures come out exact). */
static struct mig_sample stuck(unsigned i, double peak, double dirty, double rate, bool flat)
{
	static const double phase[] = { 1.0, 0.55, 0.8, 0.3, 0.95, 0.6, 0.75 };

	return (struct mig_sample){
		.remaining = (uint64_t)(peak * (flat ? 1.0 : phase[i % 7])), .transferred = (uint64_t)(i * rate),
		.total = 1ull << 30, .dirty_rate = (uint64_t)dirty, .rate = (uint64_t)rate,
		.iteration = 2 + i, .t_ms = T0 + 1000ull * (i + 1),
	};
}

static void script_run(struct mig_policy *pol, unsigned secs, double peak, double dirty,
		       double rate, bool flat, struct run *r)
{
	struct mig_decision d;

	memset(r, 0, sizeof(*r));
	for (unsigned i = 0; i < secs; i++) {
		struct mig_sample s = stuck(i, peak, dirty, rate, flat);

		if (mig_policy_feed(pol, &s, &d) != MIG_ACT_NONE)
			record(r, &d, s.t_ms);
	}
}

/* Actions apart by the settling time, each knob only ever going up, nothing
 * after POSTCOPY or ABORT. */
static void check_no_flapping(const struct run *r)
{
	uint64_t last_dt = 0, last_thr = 0;

	for (unsigned i = 0; i < r->n; i++) {
		if (i)
			assert_true(r->acts[i].t_ms >= r->acts[i - 1].t_ms + MIG_POL_SETTLE_MS);
		if (i + 1 < r->n)
			assert_true(r->acts[i].a != MIG_ACT_POSTCOPY && r->acts[i].a != MIG_ACT_ABORT);
		if (r->acts[i].a == MIG_ACT_RAISE_DOWNTIME) {
			assert_true(r->acts[i].value > last_dt);
			last_dt = r->acts[i].value;
		}
		if (r->acts[i].a == MIG_ACT_THROTTLE_MORE) {
			assert_true(r->acts[i].value > last_thr);
			assert_true(r->acts[i].value <= MIG_THROTTLE_CAP);
			last_thr = r->acts[i].value;
		}
	}
}

/* The ladder from a plan's start, as documented: downtime steps of a
 * quarter of the target (at least what the dirty set needs), then the
 * throttle steps, then post-copy or abort. */
static unsigned ladder(const struct mig_plan *p, uint64_t need_ms, struct act *want)
{
	uint32_t dt = p->downtime_start_ms, step = (p->downtime_ms + 3) / 4;
	unsigned n = 0;

	while (dt < p->downtime_ms && need_ms <= p->downtime_ms) {
		uint64_t v = dt + step < need_ms ? need_ms : dt + step;

		dt = v > p->downtime_ms ? p->downtime_ms : (uint32_t)v;
		want[n++] = (struct act){ .a = MIG_ACT_RAISE_DOWNTIME, .value = dt };
	}
	for (uint32_t t = MIG_THROTTLE_START; p->auto_converge && t < MIG_THROTTLE_CAP;) {
		t = t < MIG_THROTTLE_STEP ? MIG_THROTTLE_STEP : t + MIG_THROTTLE_STEP;
		t = t > MIG_THROTTLE_CAP ? MIG_THROTTLE_CAP : t;
		want[n++] = (struct act){ .a = MIG_ACT_THROTTLE_MORE, .value = t };
	}
	want[n++] = (struct act){ .a = p->postcopy ? MIG_ACT_POSTCOPY : MIG_ACT_ABORT };
	return n;
}

static void check_ladder(const struct run *r, const struct act *want, unsigned n)
{
	assert_int_equal(r->n, n);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(r->acts[i].a, want[i].a);
		assert_int_equal(r->acts[i].value, want[i].value);
	}
}

/* ---- tests ---- */

/* An idle guest; and passes of tens of seconds halving each time, where a
 * window of three samples inside one pass would see too little shrink but
 * whole passes do not. */
static void converging_guests_get_no_action(void **state)
{
	static const struct {
		double ram, rate, dirty, wss;
		uint64_t min_passes;
	} c[] = {
		{ GiB, 150 * MiB, 1 * MiB, 8 * MiB, 2 },
		{ 4 * GiB, 100 * MiB, 50 * MiB, 2 * GiB, 6 },
	};

	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct mig_plan p = plan(MIG_CONVERGE_AUTO, 600);
		struct mig_policy *pol = mig_policy_new(&p, T0);
		struct sim s;
		struct run r;
		char sum[128];

		sim_init(&s, c[i].ram, c[i].rate, c[i].dirty, c[i].wss, &p);
		sim_run(&s, pol, 600, &r);
		assert_true(r.done);
		assert_true(s.iteration >= c[i].min_passes);
		assert_int_equal(r.n, 0);
		assert_string_equal(mig_policy_summary(pol, sum, sizeof(sum)), "no action");
		mig_policy_free(pol);
	}
}

static void busy_guest_escalates_in_order(void **state)
{
	static const enum mig_converge modes[] = { MIG_CONVERGE_THROTTLE, MIG_CONVERGE_POSTCOPY };
	const double rate = 150 * MiB, peak = 6 * MiB; /* needs 40 ms: within the target */

	for (size_t m = 0; m < 2; m++) {
		struct mig_plan p = plan(modes[m], 900);
		struct mig_policy *pol = mig_policy_new(&p, T0);
		struct act want[MAX_ACTS];
		uint64_t need = (uint64_t)((peak * 1000 + rate - 1) / rate);
		unsigned n = ladder(&p, need, want);
		struct run r;

		script_run(pol, 300, peak, 160 * MiB, rate, true, &r);
		check_ladder(&r, want, n);
		check_no_flapping(&r);
		/* the first raise goes straight to what the dirty set needs */
		assert_true(need > p.downtime_start_ms + (p.downtime_ms + 3) / 4);
		assert_int_equal(r.acts[0].value, need);
		mig_policy_free(pol);

		/* four samples a second: windows are shorter, the settling time
		 * still holds */
		pol = mig_policy_new(&p, T0);
		memset(&r, 0, sizeof(r));
		for (unsigned i = 0; i < 1200; i++) {
			struct mig_sample s = stuck(i, peak, 160 * MiB, rate, true);
			struct mig_decision d;

			s.t_ms = T0 + 250ull * (i + 1);
			if (mig_policy_feed(pol, &s, &d) != MIG_ACT_NONE)
				record(&r, &d, s.t_ms);
		}
		check_ladder(&r, want, n);
		check_no_flapping(&r);
		mig_policy_free(pol);
	}
}

/* Passes of 10 s: the window that starts at an action still shows the
 * dirty set built before it, so the next action waits for the one after. */
static void slow_passes_wait_for_the_effect(void **state)
{
	struct mig_plan p = plan(MIG_CONVERGE_THROTTLE, 900);
	struct mig_policy *pol = mig_policy_new(&p, T0);
	struct mig_decision d;
	struct run r = { 0 };
	const unsigned pass_s = 10;

	for (unsigned i = 0; i < 300; i++) {
		struct mig_sample s = stuck(i, 1500 * MiB, 200 * MiB, 150 * MiB, true);

		s.iteration = 2 + i / pass_s;
		s.remaining -= (uint64_t)((i % pass_s) * 150 * MiB);
		if (mig_policy_feed(pol, &s, &d) != MIG_ACT_NONE)
			record(&r, &d, s.t_ms);
	}
	assert_true(r.n >= 3);
	for (unsigned i = 1; i < r.n; i++)
		assert_true(r.acts[i].t_ms - r.acts[i - 1].t_ms >= 2 * pass_s * 1000);
	check_no_flapping(&r);
	mig_policy_free(pol);
}

/* Against 150 MiB/s: a guest dirtying 200 MiB/s of a 256 MiB set needs to
 * run at half speed and then converges; one dirtying 800 MiB/s outruns the
 * link even at the cap and is given up early. */
static void throttled_guests_from_the_model(void **state)
{
	static const double dirty[] = { 200 * MiB, 800 * MiB };

	for (size_t i = 0; i < 2; i++) {
		struct mig_plan p = plan(MIG_CONVERGE_THROTTLE, 900);
		struct mig_policy *pol = mig_policy_new(&p, T0);
		struct sim s;
		struct run r;

		sim_init(&s, GiB, 150 * MiB, dirty[i], i ? 512 * MiB : 256 * MiB, &p);
		sim_run(&s, pol, 900, &r);
		assert_true(r.done == !i);
		assert_true(r.n >= 2);
		for (unsigned k = 0; k + !!i < r.n; k++)
			assert_int_equal(r.acts[k].a, MIG_ACT_THROTTLE_MORE);
		if (!i)
			assert_true(dirty[i] * (100 - s.throttle) / 100 < s.rate);
		else
			assert_true(r.acts[r.n - 1].a == MIG_ACT_ABORT &&
				    r.acts[r.n - 1].t_ms < T0 + 900 * 1000ull);
		check_no_flapping(&r);
		mig_policy_free(pol);
	}
}

static void guest_never_reached_aborts_with_figures(void **state)
{
	struct mig_plan p = plan(MIG_CONVERGE_THROTTLE, 900);
	struct mig_policy *pol = mig_policy_new(&p, T0);
	const double peak = 1288490189.0, dirty = 180 * MiB, rate = 150 * MiB;
	struct act want[MAX_ACTS];
	unsigned n = ladder(&p, (uint64_t)(peak * 1000 / rate), want);
	char expect[64], sum[128];
	struct run r;
	const struct act *last;

	script_run(pol, 300, peak, dirty, rate, true, &r);
	check_ladder(&r, want, n);
	last = &r.acts[r.n - 1];
	snprintf(expect, sizeof(expect), "1.2 GiB left after %llu s",
		 (unsigned long long)((last->t_ms - T0) / 1000));
	assert_non_null(strstr(last->reason, "not converging"));
	assert_non_null(strstr(last->reason, expect));
	assert_non_null(strstr(last->reason, "dirties 180 MiB/s against 150 MiB/s sent"));
	assert_non_null(strstr(last->reason, "--converge postcopy"));
	assert_null(strstr(last->reason, "--downtime-ms")); /* 8 s: not worth saying */
	assert_null(strstr(last->reason, "--max-bandwidth")); /* no cap was set */
	assert_true(last->t_ms < T0 + 900 * 1000ull);           /* early, not at the deadline */
	assert_string_equal(mig_policy_summary(pol, sum, sizeof(sum)),
			    "throttle cap 75 %; aborted");
	assert_string_equal(mig_policy_detail(pol), last->reason);
	mig_policy_free(pol);
}

static void deadline_aborts(void **state)
{
	struct mig_plan p = plan(MIG_CONVERGE_THROTTLE, 30);
	struct mig_policy *pol = mig_policy_new(&p, T0);
	struct sim s;
	struct run r;
	char left[24], expect[64];

	/* a first pass of 7 minutes, barely moving: not judged, only the
	 * deadline ends it */
	sim_init(&s, 64 * GiB, 150 * MiB, 10 * MiB, GiB, &p);
	sim_run(&s, pol, 120, &r);
	assert_int_equal(s.iteration, 1);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.acts[0].a, MIG_ACT_ABORT);
	assert_int_equal(r.acts[0].t_ms, T0 + 30 * 1000);
	snprintf(expect, sizeof(expect), "deadline: 30 s passed with %s left",
		 mig_fmt_bytes(left, sizeof(left), (uint64_t)s.remaining));
	assert_non_null(strstr(r.acts[0].reason, expect));
	assert_non_null(strstr(r.acts[0].reason, "--deadline"));
	assert_int_equal(pol->phase, MIG_POL_ABORTED);
	mig_policy_free(pol);
}

static void postcopy_only_when_allowed(void **state)
{
	static const enum mig_converge modes[] = { MIG_CONVERGE_THROTTLE, MIG_CONVERGE_NEVER,
						   MIG_CONVERGE_POSTCOPY };

	for (size_t m = 0; m < 3; m++) {
		struct mig_plan p = plan(modes[m], 200);
		struct mig_policy *pol = mig_policy_new(&p, T0);
		struct run r;
		bool pc = false;

		script_run(pol, 400, 512 * MiB, 300 * MiB, 100 * MiB, false, &r);
		for (unsigned i = 0; i < r.n; i++)
			pc |= r.acts[i].a == MIG_ACT_POSTCOPY;
		assert_true(pc == p.postcopy);
		assert_true(r.n > 0);
		if (pc) {
			/* nothing after it, not even the deadline 200 s later */
			assert_int_equal(r.acts[r.n - 1].a, MIG_ACT_POSTCOPY);
			assert_int_equal(pol->phase, MIG_POL_POSTCOPY);
		} else {
			assert_int_equal(r.acts[r.n - 1].a, MIG_ACT_ABORT);
		}
		if (modes[m] == MIG_CONVERGE_NEVER) {
			/* only the deadline */
			assert_int_equal(r.n, 1);
			assert_int_equal(r.acts[0].t_ms, T0 + 200 * 1000);
			assert_non_null(strstr(r.acts[0].reason, "deadline"));
		}
		check_no_flapping(&r);
		mig_policy_free(pol);
	}
}

/* Peaks jittering by +-15 % around a level: a verdict may flip from one
 * window to the next, the actions may not. A noisy guest that shrinks
 * gets nothing. */
static void noisy_guests_do_not_flap(void **state)
{
	struct mig_plan p = plan(MIG_CONVERGE_THROTTLE, 900);
	struct mig_policy *pol = mig_policy_new(&p, T0), *twice = mig_policy_new(&p, T0);
	struct mig_decision d, d2;
	struct run r = { 0 };
	uint32_t seed = 12345;
	double level = 2 * GiB;

	for (unsigned i = 0; i < 400; i++) {
		double jitter;
		struct mig_sample s;

		seed = seed * 1103515245u + 12345u;
		jitter = 0.85 + 0.30 * ((seed >> 8) & 0xffff) / 65535.0;
		s = stuck(i, 40 * MiB * jitter, 140 * MiB, 150 * MiB, false);
		if (mig_policy_feed(pol, &s, &d) != MIG_ACT_NONE)
			record(&r, &d, s.t_ms);
		/* fed again, and once from the past: the same decisions */
		mig_policy_feed(twice, &s, &d2);
		assert_int_equal(d2.action, d.action);
		assert_int_equal(d2.value, d.value);
		assert_int_equal(mig_policy_feed(twice, &s, &d2), MIG_ACT_NONE);
		s.t_ms -= 500;
		assert_int_equal(mig_policy_feed(twice, &s, &d2), MIG_ACT_NONE);
	}
	check_no_flapping(&r);
	assert_true(r.n >= 2);
	assert_true(r.n <= 1 + (MIG_THROTTLE_CAP + MIG_THROTTLE_STEP - 1) / MIG_THROTTLE_STEP + 2);
	mig_policy_free(pol);
	mig_policy_free(twice);

	/* shrinking 30 % a window, more than the 20 % the phase can hide */
	pol = mig_policy_new(&p, T0);
	for (unsigned i = 0; i < 60; i++) {
		struct mig_sample s = stuck(i, level, 50 * MiB, 150 * MiB, false);

		s.iteration = 2 + i / 3; /* one pass a window */
		level *= i % 3 == 2 ? 0.7 : 1;
		assert_int_equal(mig_policy_feed(pol, &s, &d), MIG_ACT_NONE);
	}
	assert_non_null(strstr(mig_policy_detail(pol), "shrinking"));
	mig_policy_free(pol);
}

static void decisions_map_to_qmp(void **state)
{
	static const struct {
		enum mig_action a;
		const char *cmd, *key;
	} c[] = {
		{ MIG_ACT_RAISE_DOWNTIME, "migrate-set-parameters", "downtime-limit" },
		{ MIG_ACT_THROTTLE_MORE, "migrate-set-parameters", "max-cpu-throttle" },
		{ MIG_ACT_POSTCOPY, "migrate-start-postcopy", NULL },
		{ MIG_ACT_ABORT, "migrate_cancel", NULL },
	};
	struct mig_decision d = { .action = MIG_ACT_NONE };
	json_t *args;

	assert_null(mig_decision_qmp(&d, &args));
	assert_null(args);
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		d = (struct mig_decision){ .action = c[i].a, .value = 38 + i };
		assert_string_equal(mig_decision_qmp(&d, &args), c[i].cmd);
		if (c[i].key) {
			assert_int_equal(json_object_size(args), 1);
			assert_int_equal(json_integer_value(json_object_get(args, c[i].key)), 38 + i);
		} else {
			assert_null(args);
		}
		json_decref(args);
	}
	assert_string_equal(mig_action_name(MIG_ACT_THROTTLE_MORE), "throttle-more");
	assert_string_equal(mig_action_name(42), "?");
	/* a policy needs a resolved plan */
	errno = 0;
	assert_null(mig_policy_new(&(struct mig_plan){ .ram_bytes = 1ull << 30 }, T0));
	assert_int_equal(errno, EINVAL);
	mig_policy_free(NULL);
	assert_int_equal(mig_policy_feed(NULL, NULL, &d), MIG_ACT_NONE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(converging_guests_get_no_action),
		cmocka_unit_test(busy_guest_escalates_in_order),
		cmocka_unit_test(slow_passes_wait_for_the_effect),
		cmocka_unit_test(throttled_guests_from_the_model),
		cmocka_unit_test(guest_never_reached_aborts_with_figures),
		cmocka_unit_test(deadline_aborts),
		cmocka_unit_test(postcopy_only_when_allowed),
		cmocka_unit_test(noisy_guests_do_not_flap),
		cmocka_unit_test(decisions_map_to_qmp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * mig_policy: convergence as a policy. A pure state machine fed one
 * query-migrate sample a second; the rules are at mig_policy_feed() in
 * mig.h, the figures in its tunables.
 *
 * Why windows of whole passes: QEMU's `remaining` is a sawtooth. It falls
 * while a pass sends the pages dirty at its start, and jumps at the next
 * bitmap sync by what the guest dirtied meanwhile. Its value at a random
 * second says little; the largest value in a window that holds whole passes
 * is the dirty set QEMU had to send, and that set shrinking from window to
 * window is what converging means.
 *
 * Why settle for two windows: the window that starts at an action still
 * holds the dirty set the guest built before it; only the one after shows
 * what the action did.
 */
#include "migration/mig_priv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETTLE_WINDOWS 2u

static const char *const action_names[] = {
	[MIG_ACT_NONE] = "none",
	[MIG_ACT_RAISE_DOWNTIME] = "raise-downtime",
	[MIG_ACT_THROTTLE_MORE] = "throttle-more",
	[MIG_ACT_POSTCOPY] = "postcopy",
	[MIG_ACT_ABORT] = "abort",
};

static const char *const phase_names[] = {
	[MIG_POL_FIRST_PASS] = "first-pass",
	[MIG_POL_WATCH] = "watch",
	[MIG_POL_POSTCOPY] = "postcopy",
	[MIG_POL_ABORTED] = "aborted",
};

#define NAMES_N(t) (sizeof(t) / sizeof((t)[0]))

const char *mig_action_name(enum mig_action a)
{
	return (unsigned)a < NAMES_N(action_names) ? action_names[a] : "?";
}

const char *mig_pol_phase_name(enum mig_pol_phase ph)
{
	return (unsigned)ph < NAMES_N(phase_names) ? phase_names[ph] : "?";
}

struct mig_policy *mig_policy_new(const struct mig_plan *p, uint64_t start_ms)
{
	struct mig_policy *pol = NULL;

	if (!p || !p->resolved) {
		errno = EINVAL;
		return NULL;
	}
	pol = calloc(1, sizeof(*pol));
	if (!pol)
		return NULL;
	pol->phase = MIG_POL_FIRST_PASS;
	pol->target_ms = p->downtime_ms;
	pol->step_ms = (p->downtime_ms + 3) / 4 ? (p->downtime_ms + 3) / 4 : 1;
	pol->downtime_ms = pol->downtime_first_ms = p->downtime_start_ms;
	pol->throttle_ok = p->auto_converge;
	pol->throttle_pct = MIG_THROTTLE_START;
	pol->postcopy_ok = p->postcopy;
	pol->never = p->converge == MIG_CONVERGE_NEVER;
	pol->capped = p->max_bandwidth != 0;
	pol->start_ms = start_ms;
	pol->deadline_ms = start_ms + (uint64_t)p->deadline_s * 1000;
	snprintf(pol->detail, sizeof(pol->detail), "first pass");
	return pol;
}

void mig_policy_free(struct mig_policy *pol)
{
	free(pol);
}

const char *mig_policy_detail(const struct mig_policy *pol)
{
	return pol ? pol->detail : "";
}

/* Every phase change goes through here: phases only go forward. */
static void phase_to(struct mig_policy *pol, enum mig_pol_phase ph)
{
	if (ph > pol->phase)
		pol->phase = ph;
}

/* ---- the decision and its reason ---- */

__attribute__((format(printf, 4, 5)))
static enum mig_action decide(struct mig_policy *pol, struct mig_decision *d,
			      enum mig_action a, const char *fmt, ...)
{
	va_list ap;

	d->action = a;
	va_start(ap, fmt);
	vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
	va_end(ap);
	snprintf(pol->detail, sizeof(pol->detail), "%s", d->reason);
	return a;
}

/* The figures of a closed window: peak, mean dirty rate, mean rate. */
struct figs {
	char left[24], dirty[24], rate[24];
	uint64_t need_ms; /* to send the peak at the rate seen; 0: unknown */
};

static void figs_of(struct figs *f, uint64_t left, uint64_t dirty, uint64_t rate)
{
	mig_fmt_bytes(f->left, sizeof(f->left), left);
	mig_fmt_bytes(f->dirty, sizeof(f->dirty), dirty);
	strcat(f->dirty, "/s");
	mig_fmt_bytes(f->rate, sizeof(f->rate), rate);
	strcat(f->rate, "/s");
	f->need_ms = rate ? (left * 1000 + rate - 1) / rate : 0;
}

static void figs_window(struct figs *f, const struct mig_pol_window *w)
{
	figs_of(f, w->peak, w->dirty_sum / w->n, w->rate_sum / w->n);
}

/* ", or "-joined advice for a migration that cannot finish as it is, the
 * first item after @sep. */
static void advice(const struct mig_policy *pol, const struct figs *f, const char *sep,
		   char *buf, size_t len)
{
	size_t pos = 0;

	buf[0] = '\0';
#define ADD(...)                                                                   \
	do {                                                                       \
		int n_ = snprintf(buf + pos, len - pos, "%s", sep);                \
		if (n_ > 0 && (size_t)n_ < len - pos)                              \
			pos += (size_t)n_;                                         \
		n_ = snprintf(buf + pos, len - pos, __VA_ARGS__);                  \
		if (n_ > 0 && (size_t)n_ < len - pos)                              \
			pos += (size_t)n_;                                         \
		sep = ", or ";                                                     \
	} while (0)
	if (!pol->postcopy_ok)
		ADD("--converge postcopy");
	if (pol->capped)
		ADD("a higher --max-bandwidth");
	/* a longer pause only where it is one a user might accept */
	if (f->need_ms > pol->target_ms && f->need_ms <= 10ull * pol->target_ms)
		ADD("a longer --downtime-ms (about %llu ms at %s)",
		    (unsigned long long)f->need_ms, f->rate);
#undef ADD
}

static void settle(struct mig_policy *pol, const struct mig_sample *s)
{
	pol->settle_until = s->t_ms + MIG_POL_SETTLE_MS;
	pol->settle_windows = SETTLE_WINDOWS;
	pol->actions++;
}

/* One step up the ladder after a window that did not shrink. */
static enum mig_action escalate(struct mig_policy *pol, const struct mig_sample *s,
				struct mig_decision *d)
{
	struct figs f;
	char adv[160], thr[32];
	uint64_t v;

	figs_window(&f, &pol->prev);
	settle(pol, s);
	if (pol->downtime_ms < pol->target_ms && (!f.need_ms || f.need_ms <= pol->target_ms)) {
		v = pol->downtime_ms + pol->step_ms;
		v = v < f.need_ms ? f.need_ms : v;
		v = v > pol->target_ms ? pol->target_ms : v;
		d->value = v;
		snprintf(thr, sizeof(thr), ", about %llu ms at ", (unsigned long long)f.need_ms);
		decide(pol, d, MIG_ACT_RAISE_DOWNTIME, "not shrinking: %s left%s%s; downtime limit "
		       "%u -> %llu ms (target %u ms)", f.left, f.need_ms ? thr : "",
		       f.need_ms ? f.rate : "", pol->downtime_ms, (unsigned long long)v,
		       pol->target_ms);
		pol->downtime_ms = (uint32_t)v;
		return d->action;
	}
	if (pol->throttle_ok && pol->throttle_pct < MIG_THROTTLE_CAP) {
		v = pol->throttle_pct < MIG_THROTTLE_STEP ? MIG_THROTTLE_STEP
							  : pol->throttle_pct + MIG_THROTTLE_STEP;
		v = v > MIG_THROTTLE_CAP ? MIG_THROTTLE_CAP : v;
		d->value = v;
		pol->throttle_pct = (uint32_t)v;
		return decide(pol, d, MIG_ACT_THROTTLE_MORE, "not shrinking: %s left, the guest "
			      "dirties %s against %s sent; guest CPU throttle up to %llu %%",
			      f.left, f.dirty, f.rate, (unsigned long long)v);
	}
	if (pol->postcopy_ok) {
		phase_to(pol, MIG_POL_POSTCOPY);
		return decide(pol, d, MIG_ACT_POSTCOPY, "not shrinking: %s left, the guest dirties "
			      "%s against %s sent; switching to post-copy", f.left, f.dirty, f.rate);
	}
	phase_to(pol, MIG_POL_ABORTED);
	advice(pol, &f, "; try ", adv, sizeof(adv));
	snprintf(thr, sizeof(thr), " (throttle cap %u %%)", pol->throttle_pct);
	return decide(pol, d, MIG_ACT_ABORT, "not converging: %s left after %llu s, the guest "
		      "dirties %s against %s sent%s%s", f.left,
		      (unsigned long long)((s->t_ms - pol->start_ms) / 1000), f.dirty, f.rate,
		      pol->throttle_pct > MIG_THROTTLE_START ? thr : "", adv);
}

static enum mig_action deadline(struct mig_policy *pol, const struct mig_sample *s,
				struct mig_decision *d)
{
	struct figs f;
	char adv[160];

	figs_of(&f, s->remaining, s->dirty_rate, s->rate);
	f.need_ms = 0; /* the deadline, not the downtime, is what ran out */
	phase_to(pol, MIG_POL_ABORTED);
	pol->actions++;
	advice(pol, &f, ", or ", adv, sizeof(adv));
	return decide(pol, d, MIG_ACT_ABORT, "deadline: %llu s passed with %s left, the guest "
		      "dirties %s against %s sent; try a longer --deadline%s",
		      (unsigned long long)((pol->deadline_ms - pol->start_ms) / 1000), f.left,
		      f.dirty, f.rate, adv);
}

/* ---- windows ---- */

/* Add @s; returns true when it closed a window first (pol->prev is then
 * that window, *@stalled whether it failed to shrink against the one before). */
static bool window_step(struct mig_policy *pol, const struct mig_sample *s, bool *stalled)
{
	bool boundary = pol->have_last && s->iteration != pol->last_iter;
	bool closed = boundary && pol->win.n >= MIG_POL_WINDOW;
	struct mig_pol_window *w = &pol->win;

	*stalled = false;
	if (closed) {
		*stalled = pol->have_prev &&
			   w->peak * 100 > pol->prev.peak * (100 - MIG_POL_SHRINK_PCT);
		pol->prev = *w;
		pol->have_prev = true;
		memset(w, 0, sizeof(*w));
		if (pol->settle_windows)
			pol->settle_windows--;
	}
	w->n++;
	w->peak = s->remaining > w->peak ? s->remaining : w->peak;
	w->dirty_sum += s->dirty_rate;
	w->rate_sum += s->rate;
	return closed;
}

static void watch_detail(struct mig_policy *pol, const struct mig_sample *s, bool stalled)
{
	struct figs f;

	figs_window(&f, &pol->prev);
	if (!stalled)
		snprintf(pol->detail, sizeof(pol->detail), "shrinking: %s left, the guest dirties "
			 "%s against %s sent", f.left, f.dirty, f.rate);
	else if (pol->never)
		snprintf(pol->detail, sizeof(pol->detail), "not shrinking: %s left; converge "
			 "never: the deadline decides in %llu s", f.left,
			 (unsigned long long)((pol->deadline_ms - s->t_ms) / 1000));
	else
		snprintf(pol->detail, sizeof(pol->detail), "not shrinking: %s left; letting the "
			 "last step settle", f.left);
}

enum mig_action mig_policy_feed(struct mig_policy *pol, const struct mig_sample *s,
				struct mig_decision *d)
{
	bool closed, stalled;

	if (!d)
		return MIG_ACT_NONE;
	memset(d, 0, sizeof(*d));
	if (!pol || !s || (pol->have_last && s->t_ms <= pol->last_t))
		return MIG_ACT_NONE;
	if (pol->phase == MIG_POL_POSTCOPY || pol->phase == MIG_POL_ABORTED)
		return MIG_ACT_NONE;
	if (s->t_ms >= pol->deadline_ms)
		return deadline(pol, s, d);
	closed = window_step(pol, s, &stalled);
	pol->have_last = true;
	pol->last_t = s->t_ms;
	pol->last_iter = s->iteration;
	if (pol->phase == MIG_POL_FIRST_PASS && s->iteration < 2) {
		char sent[24], total[24];

		snprintf(pol->detail, sizeof(pol->detail), "first pass: %s of %s sent",
			 mig_fmt_bytes(sent, sizeof(sent), s->transferred),
			 mig_fmt_bytes(total, sizeof(total), s->total));
		return MIG_ACT_NONE;
	}
	phase_to(pol, MIG_POL_WATCH);
	if (!closed)
		return MIG_ACT_NONE;
	if (stalled && !pol->never && !pol->settle_windows && s->t_ms >= pol->settle_until)
		return escalate(pol, s, d);
	watch_detail(pol, s, stalled);
	return MIG_ACT_NONE;
}

/* ---- reporting ---- */

char *mig_policy_summary(const struct mig_policy *pol, char *buf, size_t len)
{
	size_t pos = 0;
	int n;

	if (!buf || !len)
		return buf;
	buf[0] = '\0';
	if (!pol || !pol->actions) {
		snprintf(buf, len, "no action");
		return buf;
	}
#define PUT(...)                                                              \
	do {                                                                  \
		n = snprintf(buf + pos, len - pos, "%s", pos ? "; " : "");   \
		pos += n > 0 && (size_t)n < len - pos ? (size_t)n : 0;        \
		n = snprintf(buf + pos, len - pos, __VA_ARGS__);              \
		pos += n > 0 && (size_t)n < len - pos ? (size_t)n : 0;        \
	} while (0)
	if (pol->downtime_ms != pol->downtime_first_ms)
		PUT("downtime limit %u -> %u ms", pol->downtime_first_ms, pol->downtime_ms);
	if (pol->throttle_pct > MIG_THROTTLE_START)
		PUT("throttle cap %u %%", pol->throttle_pct);
	if (pol->phase == MIG_POL_POSTCOPY)
		PUT("post-copy");
	if (pol->phase == MIG_POL_ABORTED)
		PUT("aborted");
#undef PUT
	return buf;
}

const char *mig_decision_qmp(const struct mig_decision *d, json_t **args)
{
	*args = NULL;
	switch (d ? d->action : MIG_ACT_NONE) {
	case MIG_ACT_RAISE_DOWNTIME:
		*args = json_pack("{s:I}", "downtime-limit", (json_int_t)d->value);
		return *args ? "migrate-set-parameters" : NULL;
	case MIG_ACT_THROTTLE_MORE:
		*args = json_pack("{s:I}", "max-cpu-throttle", (json_int_t)d->value);
		return *args ? "migrate-set-parameters" : NULL;
	case MIG_ACT_POSTCOPY:
		return "migrate-start-postcopy";
	case MIG_ACT_ABORT:
		return "migrate_cancel";
	default:
		return NULL;
	}
}

/*
 * hcactl_rep: `hcactl replica enable|status|points|pause|resume|disable`.
 * Any node answers: a change goes to the node that owns the VM, points come
 * from the replica node, the status from the store.
 */
#include "agent/hcactl_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INTERVAL_MAX_S 86400ul
#define KEEP_MAX 1000ul

static const char *state_name(Hca__RepState s)
{
	switch (s) {
	case HCA__REP_STATE__REP_STATE_ENABLED: return "enabled";
	case HCA__REP_STATE__REP_STATE_PAUSED: return "paused";
	case HCA__REP_STATE__REP_STATE_FAILED_OVER: return "failed-over";
	default: return "none";
	}
}

/* "every:1h" (or "1h"): seconds. */
static int parse_app(const char *s, uint32_t *out)
{
	if (!strncmp(s, "every:", 6))
		s += 6;
	return hcactl_parse_secs(s, INTERVAL_MAX_S, out);
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* "2026-12-02 18:04:05" in local time. */
static void when(uint64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000u);
	struct tm tm;

	if (!ms || !localtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "-");
}

static json_t *status_json(const Hca__RepStatus *st)
{
	const Hca__RepRelation *r = st->relation;
	char id[20];

	snprintf(id, sizeof(id), "%016" PRIx64, r->relation);
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:s, s:I}",
			 "vm", r->vm, "source", r->source, "target", r->target,
			 "target_pool", r->target_pool,
			 "state", state_name(r->state), "interval_s", (json_int_t)r->interval_s,
			 "keep", (json_int_t)r->keep, "app_every_s", (json_int_t)r->app_every_s,
			 "relation", id, "last_point", (json_int_t)r->last_point,
			 "last_point_ms", (json_int_t)r->last_point_ms,
			 "rpo_ms", (json_int_t)st->rpo_ms, "cycles", (json_int_t)r->cycles,
			 "failed_cycles", (json_int_t)r->failed_cycles,
			 "full_copies", (json_int_t)r->full_copies,
			 "resyncs", (json_int_t)r->resyncs,
			 "bytes_raw", (json_int_t)r->bytes_raw, "bytes_zero", (json_int_t)r->bytes_zero,
			 "bytes_wire", (json_int_t)r->bytes_wire,
			 "last_cycle_ms", (json_int_t)r->last_cycle_ms,
			 "created_ms", (json_int_t)r->created_ms, "last_error", r->last_error,
			 "health", st->health, "health_reason", st->health_reason,
			 "updated_ms", (json_int_t)r->updated_ms);
}

static int print_status(struct cli *cli, const Hca__RepStatusList *l, bool one)
{
	if (cli->json) {
		json_t *a = json_array();
		for (size_t i = 0; a && i < l->n_replicas; i++)
			json_array_append_new(a, status_json(l->replicas[i]));
		if (one && a && json_array_size(a) == 1) {
			json_t *o = json_incref(json_array_get(a, 0));
			json_decref(a);
			return hcactl_print_json(o);
		}
		return hcactl_print_json(a);
	}
	if (!l->n_replicas) {
		printf("no VM is replicated (hcactl replica enable NAME --to NODE)\n");
		return 0;
	}
	{
		static const char *const head[] = { "VM", "FROM", "TO", "STATE", "HEALTH", "RPO",
						     "POINT", "CYCLES", "SHIPPED", "WIRE",
						     "LAST ERROR" };
		enum { NC = 11 };
		const char **cells = calloc(l->n_replicas * NC, sizeof(*cells));
		char (*buf)[6][32] = calloc(l->n_replicas, sizeof(*buf));
		uint64_t now = wall_ms();
		if (!cells || !buf) {
			free(cells);
			free(buf);
			return hcactl_complain(EXIT_HCAD, "out of memory");
		}
		for (size_t i = 0; i < l->n_replicas; i++) {
			const Hca__RepStatus *st = l->replicas[i];
			const Hca__RepRelation *r = st->relation;
			const char **c = cells + i * NC;
			if (r->last_point_ms)
				hcactl_elapsed(now > r->last_point_ms ? now - r->last_point_ms : 0,
					       buf[i][0], sizeof(buf[i][0]));
			else
				snprintf(buf[i][0], sizeof(buf[i][0]), "-");
			snprintf(buf[i][1], sizeof(buf[i][1]), "%" PRIu64, r->last_point);
			snprintf(buf[i][2], sizeof(buf[i][2]), "%" PRIu64 "/%" PRIu64, r->cycles,
				 r->cycles + r->failed_cycles);
			hcactl_amount(r->bytes_raw, "bytes", buf[i][3], sizeof(buf[i][3]));
			hcactl_amount(r->bytes_wire, "bytes", buf[i][4], sizeof(buf[i][4]));
			c[0] = r->vm;
			c[1] = r->source;
			/* where the replica lives: the node's files, or an RBD pool */
			snprintf(buf[i][5], sizeof(buf[i][5]), "%s%s%.20s", r->target,
				 r->target_pool[0] ? " rbd:" : "", r->target_pool);
			c[2] = buf[i][5];
			c[3] = state_name(r->state);
			c[4] = st->health;
			c[5] = buf[i][0];
			c[6] = buf[i][1];
			c[7] = buf[i][2];
			c[8] = buf[i][3];
			c[9] = buf[i][4];
			c[10] = r->last_error;
		}
		hcactl_table(head, NC, 10, cells, l->n_replicas);
		for (size_t i = 0; i < l->n_replicas; i++)
			if (strcmp(l->replicas[i]->health, "ok"))
				printf("%s: %s: %s\n", l->replicas[i]->relation->vm,
				       l->replicas[i]->health, l->replicas[i]->health_reason);
		free(cells);
		free(buf);
	}
	return 0;
}

static Hca__ApiReply *ask(struct cli *cli, Hca__ApiRequest *req, Hca__ApiReply__ResultCase want)
{
	Hca__ApiReply *r = hcactl_call(cli, req, CALL_TIMEOUT_MS);

	if (r && r->result_case != want) {
		hcactl_complain(EXIT_HCAD, "malformed reply from hcad");
		hca__api_reply__free_unpacked(r, NULL);
		return NULL;
	}
	return r;
}

int hcactl_replica_enable(struct cli *cli, const char *vm, const struct replica_opts *o)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__ReplicaEnable e = HCA__REPLICA_ENABLE__INIT;
	Hca__ApiReply *r;
	unsigned long keep = 0;
	int rc;

	if (!o->to)
		return hcactl_complain(EXIT_USAGE, "replica enable: --to NODE is required");
	if (o->interval && hcactl_parse_secs(o->interval, INTERVAL_MAX_S, &e.interval_s))
		return hcactl_complain(EXIT_USAGE, "invalid --interval '%s' (1s to 24h: seconds, "
				       "or a number with s, m or h)", o->interval);
	if (o->keep && hcactl_parse_uint(o->keep, 1, KEEP_MAX, &keep))
		return hcactl_complain(EXIT_USAGE, "invalid --keep '%s' (1 to %lu points)",
				       o->keep, KEEP_MAX);
	if (o->app && parse_app(o->app, &e.app_every_s))
		return hcactl_complain(EXIT_USAGE, "invalid --app-consistent '%s' (every:TIME, "
				       "as every:1h)", o->app);
	e.name = (char *)vm;
	e.target = (char *)o->to;
	e.keep = (uint32_t)keep;
	e.target_pool = (char *)(o->pool ? o->pool : "");
	req.op_case = HCA__API_REQUEST__OP_REPLICA_ENABLE;
	req.replica_enable = &e;
	if (!(r = ask(cli, &req, HCA__API_REPLY__RESULT_REPLICAS)))
		return EXIT_HCAD;
	if (cli->json || !r->replicas->n_replicas) {
		rc = print_status(cli, r->replicas, true);
	} else {
		const Hca__RepRelation *rel = r->replicas->replicas[0]->relation;
		printf("%s: replicated to %s every %" PRIu32 " s, %" PRIu32 " points kept; the "
		       "first cycle copies what the disks hold\n", vm, rel->target, rel->interval_s,
		       rel->keep);
		rc = 0;
	}
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

int hcactl_replica_status(struct cli *cli, const char *vm)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	Hca__ApiReply *r;
	int rc;

	ref.name = (char *)(vm ? vm : "");
	req.op_case = HCA__API_REQUEST__OP_REPLICA_STATUS;
	req.replica_status = &ref;
	if (!(r = ask(cli, &req, HCA__API_REPLY__RESULT_REPLICAS)))
		return EXIT_HCAD;
	rc = print_status(cli, r->replicas, vm != NULL);
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

int hcactl_replica_points(struct cli *cli, const char *vm)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	Hca__ApiReply *r;
	const Hca__RepPointList *l;
	int rc = 0;

	ref.name = (char *)vm;
	req.op_case = HCA__API_REQUEST__OP_REPLICA_POINTS;
	req.replica_points = &ref;
	if (!(r = ask(cli, &req, HCA__API_REPLY__RESULT_POINTS)))
		return EXIT_HCAD;
	l = r->points;
	if (cli->json) {
		json_t *a = json_array();
		for (size_t i = 0; a && i < l->n_points; i++)
			json_array_append_new(a, json_pack("{s:I, s:I, s:b, s:I, s:b}", "id",
				(json_int_t)l->points[i]->id, "time_ms",
				(json_int_t)l->points[i]->time_ms, "app_consistent",
				l->points[i]->app_consistent, "bytes",
				(json_int_t)l->points[i]->bytes, "held", l->points[i]->held));
		rc = hcactl_print_json(json_pack("{s:s, s:s, s:o}", "vm", l->vm, "node", l->node,
						 "points", a));
	} else if (!l->n_points) {
		printf("%s: no recovery point on %s yet\n", vm, l->node);
	} else {
		static const char *const head[] = { "POINT", "TAKEN", "AGE", "KIND", "BYTES",
						     "HELD" };
		enum { NC = 6 };
		const char **cells = calloc(l->n_points * NC, sizeof(*cells));
		char (*buf)[4][32] = calloc(l->n_points, sizeof(*buf));
		uint64_t now = wall_ms();
		if (!cells || !buf) {
			rc = hcactl_complain(EXIT_HCAD, "out of memory");
		} else {
			for (size_t i = 0; i < l->n_points; i++) {
				const Hca__RepPoint *p = l->points[i];
				const char **c = cells + i * NC;
				snprintf(buf[i][0], sizeof(buf[i][0]), "%" PRIu64, p->id);
				when(p->time_ms, buf[i][1], sizeof(buf[i][1]));
				hcactl_elapsed(now > p->time_ms ? now - p->time_ms : 0, buf[i][2],
					       sizeof(buf[i][2]));
				hcactl_amount(p->bytes, "bytes", buf[i][3], sizeof(buf[i][3]));
				c[0] = buf[i][0];
				c[1] = buf[i][1];
				c[2] = buf[i][2];
				c[3] = p->app_consistent ? "app-consistent" : "crash-consistent";
				c[4] = buf[i][3];
				c[5] = p->held ? "held" : "";
			}
			printf("%s: %zu recovery point%s on %s\n", vm, l->n_points,
			       l->n_points == 1 ? "" : "s", l->node);
			hcactl_table(head, NC, 5, cells, l->n_points);
		}
		free(cells);
		free(buf);
	}
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

int hcactl_replica_simple(struct cli *cli, const char *vm, int op)
{
	Hca__ApiRequest req = HCA__API_REQUEST__INIT;
	Hca__VmRef ref = HCA__VM_REF__INIT;
	Hca__ApiReply *r;
	int rc = 0;

	ref.name = (char *)vm;
	req.op_case = (Hca__ApiRequest__OpCase)op;
	if (op == HCA__API_REQUEST__OP_REPLICA_PAUSE)
		req.replica_pause = &ref;
	else if (op == HCA__API_REQUEST__OP_REPLICA_RESUME)
		req.replica_resume = &ref;
	else if (op == HCA__API_REQUEST__OP_REPLICA_REVERSE)
		req.replica_reverse = &ref;
	else
		req.replica_disable = &ref;
	if (!(r = ask(cli, &req, HCA__API_REPLY__RESULT_REPLICAS)))
		return EXIT_HCAD;
	if (cli->json)
		rc = print_status(cli, r->replicas, true);
	else if (op == HCA__API_REQUEST__OP_REPLICA_REVERSE && r->replicas->n_replicas)
		printf("%s: replicated from %s back to %s; the first cycle copies what the disks "
		       "hold\n", vm, r->replicas->replicas[0]->relation->source,
		       r->replicas->replicas[0]->relation->target);
	else
		printf("%s: replication %s\n", vm, op == HCA__API_REQUEST__OP_REPLICA_PAUSE ? "paused"
		       : op == HCA__API_REQUEST__OP_REPLICA_RESUME ? "resumed"
		       : "disabled; its replica is removed");
	hca__api_reply__free_unpacked(r, NULL);
	return rc;
}

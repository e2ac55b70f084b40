/* vmm_rep internals shared by vmm_rep.c (relations, cycles, requests) and
 * vmm_repfo.c (failover and reverse). Not for other files. */
#ifndef HCA_VMM_REP_PRIV_H
#define HCA_VMM_REP_PRIV_H

#include "agent/env.h"
#include "agent/vmm_priv.h"
#include "replica/rep_dst.h"
#include "replica/rep_src.h"
#include "storage/sto_rep.h"

#define TICK_MS 1000u
#define LIST_EVERY_MS 5000u
#define RETRY_MAX_MS 5000u      /* a failed cycle is tried again this soon at most */
#define NOT_YET_MAX 5u          /* "not yet" refusals retried at once, unrecorded */
#define INTERVAL_DEFAULT_S 5u
#define INTERVAL_MAX_S 86400u
#define KEEP_DEFAULT 24u
#define KEEP_MAX 1000u
#define POINTS_TIMEOUT_MS 10000u

struct rrel {
	struct rrel *next;
	char vm[HV_NAME_MAX + 1];
	Hca__RepRelation *rec;
	uint64_t version;
	bool cycling;
	bool seen;            /* in the last listing */
	uint64_t due_ms;      /* the next cycle, monotonic */
	const char *health;   /* the last one logged (source side) */
	bool failing;         /* a failover has it: no cycle starts */
	bool whole;           /* the replica refused the base: read the disks whole */
	uint64_t app_ms;      /* the last app-consistent point (monotonic) */
	unsigned not_yet;     /* cycles in a row the replica refused with "not yet" */
	bool adopting;        /* the VM moved here: taking the relation over */
	uint64_t dur_ms;      /* recent cycles' duration, a decaying maximum */
};

struct vmm_rep {
	struct env_src src;
	struct hca_env env;
	struct vmm *m;
	struct exec_queue *q;
	struct rep_ctx *ctx;
	struct rep_src *tx;
	struct rep_dst *rx;
	struct rrel *rels;
	qb_loop_timer_handle tick;
	uint64_t listed_ms;
	bool listing;
	char work_dir[CONF_STATE_DIR_MAX + 16];
	char dst_dir[CONF_STATE_DIR_MAX + 16];
};


enum upd_kind { UPD_CREATE, UPD_CYCLE, UPD_STATE, UPD_DELETE, UPD_REPLACE, UPD_ADOPT };

uint64_t vrep_wall_ms(void);
struct rrel *vrep_find(struct vmm_rep *x, const char *vm);
/* Write @vm's relation on the store's queue: CREATE @want (a copy is
 * taken), CYCLE @res's figures, STATE @state, DELETE, REPLACE by @want
 * whatever is there. @fn (may be NULL) gets the status reply. */
void vrep_update(struct vmm_rep *x, enum upd_kind kind, const char *vm, uint64_t relation,
		 const Hca__RepRelation *want, const struct rep_src_result *res,
		 Hca__RepState state, vmm_reply_fn fn, void *ctx);
/* The cycle request for @r on @v; -EINVAL with @err when it cannot run. */
int vrep_cycle_req(struct vmm_rep *x, struct rrel *r, struct vm *v, struct rep_src_req *q,
		   char *err, size_t len);
/* The disks a cycle of @s carries, in its order: the writable ones. */
unsigned vrep_disks(const Hca__VmSpec *s, const Hca__DiskSpec **out, unsigned max);

/* vmm_repfo.c */
/* Register the replica node's part of a planned failover (the channel is up). */
void vrep_fo_setup(struct vmm_rep *x);

#endif

/* env: hcad's implementation of base/env.h. */
#ifndef HCA_AGENT_ENV_H
#define HCA_AGENT_ENV_H

#include "agent/memb.h"
#include "agent/peers.h"
#include "base/env.h"

/* What the adapters reach; owned by hcad, outlives every env filled from it. */
struct env_src {
	qb_loop_t *loop;
	struct sto_store *store;
	struct exec *exec;
	const char *node;
	struct peers *peers; /* NULL while the channel is off */
	struct memb *memb;
};

/* Fill @env so that it reaches @src (borrowed). */
void env_fill(struct hca_env *env, struct env_src *src);

#endif

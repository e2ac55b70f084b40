/*
 * mig: the migration service of one node: its construction, the channel
 * methods of the destination side, and the QMP events both sides follow.
 */
#include "migration/mig_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/env.h"
#include "base/exec.h"

struct mig *mig_new(const struct hca_env *env, const struct mig_host *host)
{
	struct mig *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->env = env;
	m->host = *host;
	/* the commit's compare-and-swap and the watchdog's reads: two, so a
	 * read stuck in Ceph does not hold a commit back */
	m->q = exec_queue_new(env->exec, "mig", 2);
	if (!m->q) {
		free(m);
		errno = ENOMEM;
		return NULL;
	}
	mig_channel_up(m);
	return m;
}

void mig_channel_up(struct mig *m)
{
	mig_dst_register(m);
}

void mig_free(struct mig *m)
{
	if (!m)
		return;
	m->stopping = true;
	mig_src_free_all(m);
	mig_dst_free_all(m);
	free(m); /* the queue belongs to the executor, freed with it */
}

void mig_event(struct mig *m, const char *vm, const char *event, json_t *data)
{
	if (!m || !vm || !event)
		return;
	mig_src_event(m, vm, event, data);
	mig_dst_event(m, vm, event, data);
}

bool mig_busy(const struct mig *m, const char *vm)
{
	return m && (mig_src_busy(m, vm) || mig_dst_busy(m, vm));
}

/* memb internals: the driver table and the shared view update. */
#ifndef HCA_MEMB_PRIV_H
#define HCA_MEMB_PRIV_H

#include "agent/memb.h"

struct memb_driver {
	const char *name;
	/* Connect (or schedule a retry); fill m->view as far as known. */
	int (*start)(struct memb *m, char *err, size_t errlen);
	/* Disconnect and free the driver's state. */
	void (*stop)(struct memb *m);
};

struct memb {
	qb_loop_t *loop;
	const struct memb_driver *drv;
	void *drv_data;
	const struct memb_ops *ops;
	void *opaque;
	char local_name[64];
	struct memb_view view;
};

/* Install @next as the view: stop / resync / resume around the swap. */
void memb_publish(struct memb *m, const struct memb_view *next);

extern const struct memb_driver memb_driver_local;
extern const struct memb_driver memb_driver_corosync;

#endif

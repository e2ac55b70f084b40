/* api_server: hcad's side of the local API (transport in api.h). */
#ifndef HCA_API_SERVER_H
#define HCA_API_SERVER_H

#include <stddef.h>

#include <qb/qbloop.h>

#include "agent/vmm.h"

struct api_server;

/* Serve @name on @loop, handing requests to @vmm (borrowed). NULL + @err on failure. */
struct api_server *api_server_new(qb_loop_t *loop, const char *name, struct vmm *vmm,
				  char *err, size_t errlen);
void api_server_free(struct api_server *s);

#endif

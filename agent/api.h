/*
 * api: the local API between hcactl (and any other local client) and hcad.
 *
 * Transport: libqb IPC (QB_IPC_SOCKET; abstract unix sockets, so one per
 * network namespace), service name from the config (default "hcad"), root
 * only. Each request is a qb_ipc_request_header {id = API_MSG_REQUEST, size}
 * followed by one wire frame (proto/wire.h) of type WIRE_T_API_REQUEST
 * holding an Hca__ApiRequest. Each reply is a qb_ipc_response_header
 * {id = API_MSG_REPLY, size, error = 0} followed by one WIRE_T_API_REPLY frame
 * holding an Hca__ApiReply. Errors the user caused travel in ApiReply.error,
 * never as a transport error.
 */
#ifndef HCA_API_H
#define HCA_API_H

#include <stddef.h>

#include "proto/hca.pb-c.h"

#define API_DEFAULT_NAME "hcad"
#define API_MSG_REQUEST 1
#define API_MSG_REPLY 2
/* Largest IPC message either way, headers included. */
#define API_MAX_MSG (1u << 20)
/* The client waits this long beyond an operation's own timeout. */
#define API_REPLY_MARGIN_MS 15000

/* ---- client side (hcactl) ---- */

struct api_client;

/*
 * Connect to hcad's API service @name. Returns NULL and fills @err with one
 * line ("hcad is not running (no API service 'hcad' in this network
 * namespace)", "permission denied: the API is root-only", ...). A service
 * not run by root (uid 0, as the kernel reports the server's credentials)
 * is refused before anything is sent to it: "hcad API 'NAME' is served by
 * uid N (pid P), not root: refusing to talk to it".
 */
struct api_client *api_client_connect(const char *name, char *err, size_t errlen);

/* Disconnect and free; NULL ok. */
void api_client_close(struct api_client *c);

/*
 * Send @req and wait up to @timeout_ms for the reply. Returns the reply
 * (caller frees with hca__api_reply__free_unpacked(r, NULL)), or NULL with
 * @err filled (transport failure, timeout, a request or reply over
 * API_MAX_MSG: "reply from hcad too large (N bytes, limit M)", malformed
 * reply). After a NULL the connection may still deliver the late reply:
 * close it rather than send the next request on it.
 */
Hca__ApiReply *api_client_call(struct api_client *c, const Hca__ApiRequest *req,
			       int timeout_ms, char *err, size_t errlen);

#endif

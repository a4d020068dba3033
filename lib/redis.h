/*
 * redis.h: asynchronous Redis on a libevent loop (hiredis 0.14 + adapters/libevent.h).
 *
 * Two connection kinds, both bound to one event_base and used only from its thread:
 *
 *   redis_client  commands: argv in, one callback per command with the reply.
 *   redis_sub     pub/sub: SUBSCRIBE / PSUBSCRIBE with a message callback; subscriptions are
 *                 kept and sent again after every reconnect.
 *
 * Both connect to "redis://[:password@]host[:port][/db]" or "host[:port]" (IPv6 in brackets),
 * reconnect on their own with exponential backoff and jitter, and never block the loop: host
 * names are resolved with evdns, connects are non-blocking and time out, and a command that
 * gets no answer within command_timeout_ms drops the connection (replies arrive in order, so
 * a stuck oldest command means a stuck connection). A pub/sub connection, which sends no
 * commands of its own, is probed every ping_interval_ms the same way.
 *
 * Back-pressure: a client has at most max_inflight commands sent and unanswered; beyond that,
 * and while disconnected, a command is refused at once with a return code (the callback is
 * then not called). Nothing is queued without bound.
 *
 * Reentrancy: callbacks may call any function here, including the free functions; a free from
 * inside a callback takes effect when the callback returns.
 */
#ifndef REDIS_H
#define REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 success, negative failure. (hiredis owns the REDIS_ERR_* names.) */
enum {
    REDIS_E_INVALID = -1100,      /* bad argument or URL */
    REDIS_E_BUSY = -1101,         /* max_inflight commands already waiting for replies */
    REDIS_E_DISCONNECTED = -1102, /* not connected (the client is reconnecting) */
    REDIS_E_CONNECTION = -1103,   /* the connection broke before the reply came */
    REDIS_E_TIMEOUT = -1104,      /* no reply within command_timeout_ms (connection dropped) */
    REDIS_E_CLOSED = -1105,       /* the client was freed */
    REDIS_E_CONNECT = -1106,      /* connecting failed (refused, unreachable, timed out) */
    REDIS_E_RESOLVE = -1107,      /* the host name did not resolve */
    REDIS_E_AUTH = -1108,         /* AUTH or SELECT was refused */
    REDIS_E_LIMIT = -1109,        /* too many subscriptions */
};

/* Returns a static description of |err| (a REDIS_E_* or -errno). */
const char *redis_strerror(int err);

/* Connection settings. Fill with redis_config_init() and override. */
typedef struct redis_config {
    const char *url;             /* see above; default "127.0.0.1:6379" (copied) */
    const char *name;            /* label for logs, default "redis" (copied) */
    uint32_t max_inflight;       /* commands sent and unanswered, default 10000 */
    uint32_t max_subscriptions;  /* redis_sub: channels + patterns, default 10000 */
    uint32_t connect_timeout_ms; /* resolve + TCP connect, default 2000 */
    uint32_t command_timeout_ms; /* oldest reply overdue -> reconnect, default 5000; 0 = off */
    uint32_t reconnect_min_ms;   /* first backoff, default 100 */
    uint32_t reconnect_max_ms;   /* backoff cap, default 5000 */
    uint32_t keepalive_s;        /* TCP keepalive idle seconds, default 15; 0 = off */
    uint32_t ping_interval_ms;   /* redis_sub liveness probe period, default 5000; 0 = off.
                                    Unanswered for command_timeout_ms -> reconnect */
} redis_config;

/* Fills |cfg| with the defaults documented above. */
void redis_config_init(redis_config *cfg);

/* --- commands ------------------------------------------------------------------------------ */

typedef struct redis_client redis_client;

/*
 * Reply callback, called exactly once per accepted command, on the loop. |reply| is the
 * server's reply (which may be of type REDIS_REPLY_ERROR: a server-side error) and |status| is
 * 0; or |reply| is NULL and |status| says why: REDIS_E_CONNECTION, REDIS_E_TIMEOUT,
 * REDIS_E_CONNECT, REDIS_E_CLOSED, ... |reply| is owned by the library and valid only during
 * the callback.
 */
typedef void (*redis_reply_cb)(redis_client *c, const redisReply *reply, int status,
                               void *user_data);

/* Connection state callbacks (either may be NULL). on_connect: connected (and AUTH/SELECT
 * done or pipelined); a good place for per-connection setup such as CONFIG SET.
 * on_disconnect: a connection, or an attempt to make one, ended with |err|; the client retries
 * after a backoff. Commands that were in flight have already had their callbacks. */
typedef struct redis_client_callbacks {
    void (*on_connect)(redis_client *c, void *user_data);
    void (*on_disconnect)(redis_client *c, int err, void *user_data);
} redis_client_callbacks;

/* Creates a client on |base| and starts connecting at once. |cfg| is copied (NULL = all
 * defaults). Returns 0 or REDIS_E_INVALID (bad URL). |base| must outlive the client. */
int redis_client_new(redis_client **out, struct event_base *base, const redis_config *cfg);

/* Frees |c|: every command in flight gets its callback with REDIS_E_CLOSED (during this call,
 * or when the current callback returns if called from one); no connection callback runs. */
void redis_client_free(redis_client *c);

/* Installs |cbs| (copied; NULL clears) and |user_data| for connection state changes. */
void redis_client_set_callbacks(redis_client *c, const redis_client_callbacks *cbs,
                                void *user_data);

/*
 * Sends one command: |argc| arguments |argv| with lengths |argvlen| (NULL = strlen of each;
 * binary-safe otherwise). The arguments are copied before return. |cb| may be NULL (no
 * interest in the reply; the command still counts against max_inflight until answered).
 * Returns 0 when sent (|cb| will be called once), or REDIS_E_BUSY, REDIS_E_DISCONNECTED,
 * REDIS_E_CLOSED, REDIS_E_INVALID (|cb| is not called).
 */
int redis_client_command(redis_client *c, int argc, const char *const *argv, const size_t *argvlen,
                         redis_reply_cb cb, void *user_data);

/* Same with a hiredis format string ("SET %s %b", key, val, (size_t)len). */
int redis_client_commandf(redis_client *c, redis_reply_cb cb, void *user_data, const char *fmt,
                          ...);

/* True while the connection is established. */
bool redis_client_connected(const redis_client *c);

/* Commands sent and not yet answered. */
size_t redis_client_inflight(const redis_client *c);

/* Writes the commands queued so far to the socket now (non-blocking; what the socket does not
 * take is written when it becomes writable, as usual) instead of on the loop's next write
 * event. For a caller that must have a command in Redis's socket before it tells a client
 * anything (the command then reaches Redis before any command the client's reaction causes
 * on another connection). No effect while not connected. Not from a Redis reply callback. */
void redis_client_flush(redis_client *c);

/* --- Lua scripts ------------------------------------------------------------------------- */

/* An immutable Lua script with its SHA-1; shareable between clients and threads. */
typedef struct redis_script redis_script;

/* Creates a script from |source| (copied). Returns 0 or REDIS_E_INVALID (empty source). */
int redis_script_new(redis_script **out, const char *source);

/* Frees |s|; no evaluation may still be waiting for its reply. */
void redis_script_free(redis_script *s);

/* The script's SHA-1 as 40 lower-case hex characters. */
const char *redis_script_sha(const redis_script *s);

/*
 * Runs |s| with EVALSHA; when the server answers NOSCRIPT (first use, restart, SCRIPT FLUSH)
 * it is sent once more as EVAL, which also loads it. |argv| holds |numkeys| keys followed by
 * the other arguments (|argc| in all; |argvlen| NULL = strlen). Arguments are copied. |s| must
 * stay alive until |cb| has been called. Return values and callback as redis_client_command().
 */
int redis_client_eval(redis_client *c, const redis_script *s, int numkeys, int argc,
                      const char *const *argv, const size_t *argvlen, redis_reply_cb cb,
                      void *user_data);

/* --- pub/sub ----------------------------------------------------------------------------- */

typedef struct redis_sub redis_sub;

/*
 * Pub/sub callbacks (on the loop; any may be NULL).
 * on_message: a message on |channel| (|pattern| is the matching pattern for PSUBSCRIBE
 *   subscriptions, NULL for SUBSCRIBE). Buffers are valid during the callback only.
 * on_ready: every subscription is confirmed by the server after a connect. |reconnected| is
 *   false the first time and true after every reconnect: messages published while disconnected
 *   were lost, so state derived from them must be re-read now (presence watchers resync here).
 * on_disconnect: the connection was lost (or an attempt failed) with |err|; messages may be
 *   missed until the next on_ready.
 */
typedef struct redis_sub_callbacks {
    void (*on_message)(redis_sub *s, const char *pattern, const char *channel, size_t channel_len,
                       const char *msg, size_t msg_len, void *user_data);
    void (*on_ready)(redis_sub *s, bool reconnected, void *user_data);
    void (*on_disconnect)(redis_sub *s, int err, void *user_data);
} redis_sub_callbacks;

/* Creates a pub/sub connection on |base| and starts connecting. |cfg| (NULL = defaults) and
 * |cbs| are copied. Returns 0 or REDIS_E_INVALID. */
int redis_sub_new(redis_sub **out, struct event_base *base, const redis_config *cfg,
                  const redis_sub_callbacks *cbs, void *user_data);

/* Frees |s| without further callbacks. Safe from inside its callbacks. */
void redis_sub_free(redis_sub *s);

/* Adds a channel (SUBSCRIBE) or pattern (PSUBSCRIBE) to the kept set (copied) and sends it if
 * connected. Idempotent. Returns 0, REDIS_E_LIMIT over max_subscriptions, REDIS_E_INVALID. */
int redis_sub_subscribe(redis_sub *s, const char *channel);
int redis_sub_psubscribe(redis_sub *s, const char *pattern);

/* Removes a channel or pattern from the set (UNSUBSCRIBE / PUNSUBSCRIBE when connected).
 * Returns 0, or REDIS_E_INVALID when it was not subscribed. */
int redis_sub_unsubscribe(redis_sub *s, const char *channel);
int redis_sub_punsubscribe(redis_sub *s, const char *pattern);

/* True between on_ready and the next disconnect. */
bool redis_sub_ready(const redis_sub *s);

#ifdef __cplusplus
}
#endif

#endif /* REDIS_H */

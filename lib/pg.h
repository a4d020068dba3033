/*
 * pg.h: asynchronous PostgreSQL on a libevent loop, over libpq's non-blocking API.
 *
 * A pool owns |size| connections made from one conninfo string (key=value or postgresql://
 * URI). Multi-host strings with target_session_attrs=read-write are handled by libpq itself:
 * after a failover the pool reconnects and libpq finds the new primary. Connections are made
 * with PQconnectStart/PQconnectPoll driven by socket events, queries are sent with
 * PQsendQueryParams and read with PQconsumeInput/PQgetResult: the loop never blocks on the
 * network. Host names in "host" are resolved first with libevent's evdns (libpq would call the
 * blocking getaddrinfo) and handed to libpq as hostaddr, one entry per address, names kept for
 * TLS; a conninfo that already has hostaddr, or no host (PGHOST), is passed through as is.
 *
 * Each connection runs one query at a time. Queries wait in one FIFO per pool, bounded by
 * max_queue (beyond it pg_pool_query() refuses at once with PG_E_BUSY) and by
 * queue_timeout_ms (a query that waited longer for a connection fails with PG_E_TIMEOUT).
 * Statement run time is the server's business: put "options=-c statement_timeout=..." in
 * the conninfo.
 *
 * Transactions need one connection for several statements: pg_pool_acquire() hands out a
 * connection (through the same queue), pg_conn_query() runs statements on it, and
 * pg_conn_release() gives it back (rolling back an unfinished transaction first).
 *
 * Everything runs on the pool's loop thread. Callbacks may call any function here, including
 * pg_pool_free() (which then takes effect when the callback returns).
 */
#ifndef PG_H
#define PG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <libpq-fe.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 success, negative failure. */
enum {
    PG_E_INVALID = -1200,    /* bad argument */
    PG_E_BUSY = -1201,       /* the wait queue is full, or the held connection is busy */
    PG_E_TIMEOUT = -1202,    /* waited queue_timeout_ms without getting a connection */
    PG_E_CONNECTION = -1203, /* the connection broke; the statement may or may not have run */
    PG_E_CLOSED = -1204,     /* the pool was freed */
    PG_E_SEND = -1205,       /* libpq refused to send the query (see the log) */
};

/* Returns a static description of |err| (a PG_E_* or -errno). */
const char *pg_strerror(int err);

/* Pool settings. Fill with pg_config_init() and override. */
typedef struct pg_config {
    const char *conninfo;        /* libpq conninfo or URI (copied); required */
    const char *name;            /* label for logs, default "pg" (copied) */
    unsigned size;               /* connections, default 4 */
    size_t max_queue;            /* queries/acquires waiting for a connection, default 1024 */
    uint32_t queue_timeout_ms;   /* max wait for a connection, default 5000; 0 = unbounded */
    uint32_t connect_timeout_ms; /* one connection attempt (all hosts), default 5000 */
    uint32_t reconnect_min_ms;   /* first backoff, default 100 */
    uint32_t reconnect_max_ms;   /* backoff cap, default 5000 */
} pg_config;

/* Fills |cfg| with the defaults documented above (conninfo NULL). */
void pg_config_init(pg_config *cfg);

/* Query parameters, as for PQsendQueryParams. All arrays have |n| entries; the pool copies
 * them (and the SQL) when the query is accepted. */
typedef struct pg_params {
    int n;                     /* number of parameters ($1..$n) */
    const Oid *types;          /* parameter type OIDs, NULL = let the server infer */
    const char *const *values; /* values; a NULL entry is SQL NULL */
    const int *lengths;        /* byte lengths of binary values (ignored for text) */
    const int *formats;        /* 0 text, 1 binary, per parameter; NULL = all text */
    int result_format;         /* 0 text, 1 binary results */
} pg_params;

typedef struct pg_pool pg_pool;
typedef struct pg_conn pg_conn;

/*
 * Result callback, on the loop, exactly once per accepted query. |err| is 0 when the server
 * answered: |res| is its PGresult, which may be an error (check PQresultStatus:
 * PGRES_COMMAND_OK / PGRES_TUPLES_OK / PGRES_FATAL_ERROR with PQresultErrorField). Otherwise
 * |err| is PG_E_TIMEOUT, PG_E_CONNECTION, PG_E_CLOSED or PG_E_SEND and |res| is NULL. |res|
 * belongs to the pool and is cleared when the callback returns: copy what you keep.
 */
typedef void (*pg_result_cb)(pg_pool *pool, PGresult *res, int err, void *user_data);

/* Acquire callback: |conn| is yours until pg_conn_release() (err 0), or NULL with
 * PG_E_TIMEOUT / PG_E_CLOSED. */
typedef void (*pg_acquire_cb)(pg_pool *pool, pg_conn *conn, int err, void *user_data);

/* Creates a pool on |base| and starts connecting all its connections. |cfg| is copied.
 * Returns 0 or PG_E_INVALID (no conninfo, or libpq cannot parse it). */
int pg_pool_new(pg_pool **out, struct event_base *base, const pg_config *cfg);

/* Frees |pool|: running and queued queries and waiting acquires get their callbacks with
 * PG_E_CLOSED (during this call, or when the current callback returns if called from one).
 * Held connections become invalid: release them first. */
void pg_pool_free(pg_pool *pool);

/* Runs |sql| with |params| (NULL = none) on the next free connection. Returns 0 when queued
 * (|cb| will be called once), or PG_E_BUSY (queue full), PG_E_CLOSED, PG_E_INVALID (|cb| is not
 * called). |cb| may be NULL. */
int pg_pool_query(pg_pool *pool, const char *sql, const pg_params *params, pg_result_cb cb,
                  void *user_data);

/* Asks for a connection of one's own (for a transaction). Returns 0 (|cb| will be called once),
 * PG_E_BUSY, PG_E_CLOSED or PG_E_INVALID. */
int pg_pool_acquire(pg_pool *pool, pg_acquire_cb cb, void *user_data);

/* Runs |sql| on a held connection, at once. One query at a time: PG_E_BUSY while the previous
 * one runs; PG_E_CONNECTION when the connection is broken (release it). Otherwise as
 * pg_pool_query(). */
int pg_conn_query(pg_conn *conn, const char *sql, const pg_params *params, pg_result_cb cb,
                  void *user_data);

/* Returns a held connection to the pool. If a query is still running it is returned after that
 * query's callback; an open or failed transaction is rolled back first; a broken connection is
 * replaced. */
void pg_conn_release(pg_conn *conn);

/* The pool |conn| belongs to. */
pg_pool *pg_conn_pool(const pg_conn *conn);

/* Connections currently up (idle, busy or held). */
unsigned pg_pool_connected(const pg_pool *pool);

/* Queries and acquires waiting for a connection. */
size_t pg_pool_queued(const pg_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* PG_H */

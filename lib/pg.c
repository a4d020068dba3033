/* Asynchronous PostgreSQL pool on libpq's non-blocking API (pg.h). */
#include "pg.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/util.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

const char *pg_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case PG_E_INVALID:
        return "invalid argument";
    case PG_E_BUSY:
        return "too many PostgreSQL queries waiting";
    case PG_E_TIMEOUT:
        return "no PostgreSQL connection became free in time";
    case PG_E_CONNECTION:
        return "PostgreSQL connection lost";
    case PG_E_CLOSED:
        return "PostgreSQL pool closed";
    case PG_E_SEND:
        return "PostgreSQL refused the query";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

void pg_config_init(pg_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->name = "pg";
    cfg->size = 4;
    cfg->max_queue = 1024;
    cfg->queue_timeout_ms = 5000;
    cfg->connect_timeout_ms = 5000;
    cfg->reconnect_min_ms = 100;
    cfg->reconnect_max_ms = 5000;
}

typedef enum pc_state {
    PC_DOWN = 0,       /* no PGconn; backing off (or broken while held) */
    PC_CONNECTING = 1, /* PQconnectPoll in progress */
    PC_IDLE = 2,       /* connected, no query */
    PC_BUSY = 3,       /* a query is running */
    PC_RESOLVING = 4,  /* host names being resolved with evdns before PQconnectStartParams */
} pc_state;

typedef struct resolve_batch resolve_batch;

typedef struct pg_query {
    struct pg_query *next; /* wait queue link */
    char *sql;             /* owned copy, NULL for an acquire */
    int n;                 /* parameters */
    Oid *types;            /* owned or NULL */
    char **values;         /* owned copies, NULL entries for SQL NULL */
    int *lengths;          /* owned */
    int *formats;          /* owned */
    int result_format;     /* 0 text, 1 binary */
    pg_result_cb cb;       /* query callback (may be NULL) */
    pg_acquire_cb acb;     /* acquire callback (acquires only) */
    void *ud;              /* user_data */
    bool internal;         /* the ROLLBACK a release sends: no callback */
    int64_t enq_ms;        /* mono ms when queued */
} pg_query;

struct pg_conn {
    pg_pool *pool;        /* owner */
    unsigned idx;         /* index in the pool, for logs */
    PGconn *pq;           /* libpq connection or NULL */
    pc_state state;       /* see pc_state */
    bool held;            /* acquired by a user */
    bool release_pending; /* released while a query ran */
    bool broken;          /* lost while held: replaced on release */
    bool flushing;        /* PQflush said 1: wait for writability */
    pg_query *cur;        /* running query */
    PGresult *res;        /* its latest result */
    int sock;             /* socket the event watches, -1 none */
    short watching;       /* EV_READ/EV_WRITE currently watched */
    struct event *ev;     /* socket event */
    struct event *timer;  /* connect timeout / reconnect backoff */
    uint32_t attempt;     /* consecutive failures */
    int64_t up_since;     /* mono ms of the last connect */
    resolve_batch *rb;    /* lookups in progress (PC_RESOLVING) */
};

struct pg_pool {
    struct event_base *base; /* loop */
    pg_config cfg;           /* copy; strings point at the copies below */
    char *conninfo;          /* owned */
    char *name;              /* owned */
    pg_conn *conns;          /* cfg.size connections */
    pg_query *qhead;         /* wait queue, oldest first */
    pg_query *qtail;         /* newest */
    size_t qlen;             /* entries */
    struct event *qtimer;    /* queue timeout */
    int depth;               /* entries from the loop; free deferred while > 0 */
    bool closing;            /* pg_pool_free() called */
    bool dispatching;        /* dispatch() on the stack */
    uint32_t rng;            /* jitter */
    char **kw;               /* conninfo keywords (PQconninfoParse), NULL-terminated */
    char **kv;               /* their values */
    int host_i;              /* index of "host" in kw, -1 when absent */
    int port_i;              /* index of "port" in kw, -1 when absent */
    bool needs_dns;          /* some host is a name: resolve it without blocking first */
    struct evdns_base *dns;  /* resolver, created on first use */
};

static void dispatch(pg_pool *p);
static void batch_abandon(resolve_batch *rb);
static void conn_start(pg_conn *c);
static void do_release(pg_conn *c);

static void query_free(pg_query *q)
{
    if (q == NULL)
        return;
    for (int i = 0; i < q->n; i++)
        free(q->values[i]);
    free(q->values);
    free(q->lengths);
    free(q->formats);
    free(q->types);
    free(q->sql);
    free(q);
}

static pg_query *query_new(const char *sql, const pg_params *prm, pg_result_cb cb, void *ud)
{
    pg_query *q = mem_calloc(1, sizeof(*q));
    q->sql = mem_strdup(sql);
    q->cb = cb;
    q->ud = ud;
    if (prm != NULL && prm->n > 0) {
        int n = prm->n;
        q->n = n;
        q->values = mem_calloc((size_t)n, sizeof(char *));
        q->lengths = mem_calloc((size_t)n, sizeof(int));
        q->formats = mem_calloc((size_t)n, sizeof(int));
        if (prm->types != NULL)
            q->types = mem_dup(prm->types, (size_t)n * sizeof(Oid));
        for (int i = 0; i < n; i++) {
            int fmt = prm->formats != NULL ? prm->formats[i] : 0;
            q->formats[i] = fmt;
            const char *v = prm->values != NULL ? prm->values[i] : NULL;
            if (v == NULL)
                continue;
            if (fmt == 1) {
                int len = prm->lengths != NULL ? prm->lengths[i] : 0;
                q->values[i] = mem_dup(v, (size_t)(len > 0 ? len : 0));
                q->lengths[i] = len > 0 ? len : 0;
            } else {
                q->values[i] = mem_strdup(v);
                q->lengths[i] = 0;
            }
        }
    }
    if (prm != NULL)
        q->result_format = prm->result_format ? 1 : 0;
    return q;
}

static bool params_ok(const pg_params *prm)
{
    if (prm == NULL)
        return true;
    if (prm->n < 0 || prm->n > 65535)
        return false;
    if (prm->n > 0 && prm->values == NULL)
        return false;
    return true;
}

/* --- pool reentrancy ------------------------------------------------------------------------ */

static void pool_destroy(pg_pool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pg_conn *c = &p->conns[i];
        if (c->res != NULL)
            PQclear(c->res);
        if (c->pq != NULL)
            PQfinish(c->pq);
        query_free(c->cur);
        event_free(c->ev);
        event_free(c->timer);
    }
    for (unsigned i = 0; i < p->cfg.size; i++) {
        if (p->conns[i].rb != NULL) {
            batch_abandon(p->conns[i].rb);
            p->conns[i].rb = NULL;
        }
    }
    event_free(p->qtimer);
    if (p->dns != NULL)
        evdns_base_free(p->dns, 1);
    for (int i = 0; p->kw != NULL && p->kw[i] != NULL; i++) {
        free(p->kw[i]);
        free(p->kv[i]);
    }
    free(p->kw);
    free(p->kv);
    free(p->conns);
    free(p->conninfo);
    free(p->name);
    free(p);
}

static void enter(pg_pool *p)
{
    p->depth++;
}

/* Returns true when the pool was destroyed. */
static bool leave(pg_pool *p)
{
    if (--p->depth == 0 && p->closing) {
        pool_destroy(p);
        return true;
    }
    return false;
}

/* --- wait queue ---------------------------------------------------------------------------- */

static void queue_push(pg_pool *p, pg_query *q)
{
    q->enq_ms = clock_mono_ms();
    q->next = NULL;
    if (p->qtail != NULL)
        p->qtail->next = q;
    else
        p->qhead = q;
    p->qtail = q;
    p->qlen++;
}

static pg_query *queue_pop(pg_pool *p)
{
    pg_query *q = p->qhead;
    if (q == NULL)
        return NULL;
    p->qhead = q->next;
    if (p->qhead == NULL)
        p->qtail = NULL;
    p->qlen--;
    q->next = NULL;
    return q;
}

static void arm_qtimer(pg_pool *p)
{
    if (p->qhead == NULL || p->cfg.queue_timeout_ms == 0) {
        event_del(p->qtimer);
        return;
    }
    clock_event_add_ms(p->qtimer, p->qhead->enq_ms + p->cfg.queue_timeout_ms - clock_mono_ms());
}

/* Gives |q| its callback with |err| (no result) and frees it. */
static void fail_query(pg_pool *p, pg_query *q, int err)
{
    if (q->acb != NULL)
        q->acb(p, NULL, err, q->ud);
    else if (q->cb != NULL && !q->internal)
        q->cb(p, NULL, err, q->ud);
    query_free(q);
}

static void on_qtimer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_pool *p = arg;
    enter(p);
    int64_t now = clock_mono_ms();
    while (!p->closing && p->qhead != NULL &&
           now - p->qhead->enq_ms >= (int64_t)p->cfg.queue_timeout_ms) {
        pg_query *q = queue_pop(p);
        fail_query(p, q, PG_E_TIMEOUT);
    }
    if (!p->closing)
        arm_qtimer(p);
    leave(p);
}

/* --- connection I/O ------------------------------------------------------------------------ */

static void on_io(evutil_socket_t fd, short what, void *arg);

/* Watches the connection's current socket for |what| (it may change while connecting). */
static void watch(pg_conn *c, short what)
{
    int sock = c->pq != NULL ? PQsocket(c->pq) : -1;
    if (sock == c->sock && what == c->watching)
        return;
    event_del(c->ev);
    c->sock = sock;
    c->watching = what;
    if (sock < 0 || what == 0)
        return;
    event_assign(c->ev, c->pool->base, sock, (short)(what | EV_PERSIST), on_io, c);
    event_add(c->ev, NULL);
}

static void trimmed_error(const PGconn *pq, char *buf, size_t cap)
{
    const char *m = pq != NULL ? PQerrorMessage(pq) : "no connection";
    snprintf(buf, cap, "%s", m);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    for (char *s = buf; *s; s++)
        if (*s == '\n' || *s == '\t')
            *s = ' ';
}

static void close_pq(pg_conn *c)
{
    event_del(c->ev);
    c->sock = -1;
    c->watching = 0;
    if (c->res != NULL) {
        PQclear(c->res);
        c->res = NULL;
    }
    if (c->pq != NULL) {
        PQfinish(c->pq);
        c->pq = NULL;
    }
    c->flushing = false;
    c->state = PC_DOWN;
}

static void schedule_reconnect(pg_conn *c, bool was_up, const char *why)
{
    pg_pool *p = c->pool;
    if (was_up && clock_mono_ms() - c->up_since >= 1000)
        c->attempt = 0;
    uint64_t delay = (uint64_t)p->cfg.reconnect_min_ms << (c->attempt < 20 ? c->attempt : 20);
    if (delay > p->cfg.reconnect_max_ms)
        delay = p->cfg.reconnect_max_ms;
    uint32_t x = p->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p->rng = x;
    delay = delay / 2 + x % (delay / 2 + 1);
    if (was_up || c->attempt == 0 || (c->attempt & (c->attempt - 1)) == 0)
        log_warn("%s[%u]: %s: %s; retrying in %llu ms", p->name, c->idx,
                 was_up ? "connection lost" : "cannot connect", why, (unsigned long long)delay);
    c->attempt++;
    event_del(c->timer);
    clock_event_add_ms(c->timer, (int64_t)delay);
}

/* The connection is gone (or never came up). Fails the running query; a held connection stays
 * down until released. Callers re-check p->closing afterwards. */
static void conn_lost(pg_conn *c, const char *why)
{
    bool was_up = c->state == PC_IDLE || c->state == PC_BUSY;
    pg_query *q = c->cur;
    c->cur = NULL;
    close_pq(c);
    if (c->held)
        c->broken = true;
    else
        schedule_reconnect(c, was_up, why);
    if (was_up && c->held)
        log_warn("%s[%u]: held connection lost: %s", c->pool->name, c->idx, why);
    if (q != NULL)
        fail_query(c->pool, q, PG_E_CONNECTION);
    if (c->pool->closing)
        return;
    if (c->held && c->release_pending) {
        c->release_pending = false;
        do_release(c);
    }
}

static void conn_lost_pq(pg_conn *c)
{
    char why[256];
    trimmed_error(c->pq, why, sizeof(why));
    conn_lost(c, why);
}

static void connected(pg_conn *c)
{
    pg_pool *p = c->pool;
    PQsetnonblocking(c->pq, 1);
    event_del(c->timer);
    c->state = PC_IDLE;
    c->up_since = clock_mono_ms();
    c->attempt = 0;
    log_info("%s[%u]: connected to %s:%s", p->name, c->idx, PQhost(c->pq) ? PQhost(c->pq) : "?",
             PQport(c->pq) ? PQport(c->pq) : "?");
    watch(c, EV_READ);
    dispatch(p);
}

static void step_connect(pg_conn *c)
{
    /* PQconnectPoll may close the socket and open another (next host or address), which can
     * get the same descriptor number: unregister first so the loop never watches a stale fd. */
    event_del(c->ev);
    c->sock = -1;
    c->watching = 0;
    switch (PQconnectPoll(c->pq)) {
    case PGRES_POLLING_READING:
        watch(c, EV_READ);
        break;
    case PGRES_POLLING_WRITING:
        watch(c, EV_WRITE);
        break;
    case PGRES_POLLING_OK:
        connected(c);
        break;
    case PGRES_POLLING_FAILED:
    default:
        conn_lost_pq(c);
        break;
    }
    if (c->state == PC_CONNECTING && c->sock < 0)
        conn_lost(c, "no socket");
}

/* Server notices and warnings go to our log instead of libpq's default stderr printer. */
static void on_notice(void *arg, const char *message)
{
    pg_conn *c = arg;
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", message);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    log_info("%s[%u]: server: %s", c->pool->name, c->idx, buf);
}

/* Takes |pq| fresh from PQconnectStart[Params] and drives it with socket events. */
static void conn_begin(pg_conn *c, PGconn *pq)
{
    c->pq = pq;
    if (c->pq == NULL) {
        schedule_reconnect(c, false, "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->pq, on_notice, c);
    if (PQstatus(c->pq) == CONNECTION_BAD) {
        conn_lost_pq(c);
        return;
    }
    c->state = PC_CONNECTING;
    /* libpq: before the first PQconnectPoll, behave as if it returned POLLING_WRITING. */
    watch(c, EV_WRITE);
    if (c->sock < 0)
        conn_lost(c, "no socket");
}

/* --- host names resolved with evdns ----------------------------------------------------------
 * libpq resolves host names with getaddrinfo() inside PQconnectPoll, which can block the loop
 * for as long as DNS takes. When the conninfo names hosts, each attempt resolves them here
 * first and passes the addresses as hostaddr (the names stay in host, for TLS and logs), one
 * host/hostaddr pair per address so that libpq still tries every address in order. */

#define PG_MAX_HOSTS 16 /* host entries pre-resolved; longer lists are left to libpq */
#define PG_MAX_ADDRS 4  /* addresses used per name */

typedef struct lookup {
    resolve_batch *rb; /* owner */
    int idx;           /* host entry */
} lookup;

struct resolve_batch {
    pg_conn *c;                 /* NULL once abandoned */
    int pending;                /* lookups outstanding (+1 while issuing) */
    int n;                      /* host entries */
    char *hosts[PG_MAX_HOSTS];  /* entries (owned) */
    char *ports[PG_MAX_HOSTS];  /* per-entry ports, or NULL (owned) */
    bool is_name[PG_MAX_HOSTS]; /* needs a lookup */
    int n_addrs[PG_MAX_HOSTS];  /* addresses found */
    char addrs[PG_MAX_HOSTS][PG_MAX_ADDRS][INET6_ADDRSTRLEN]; /* numeric addresses */
    struct evdns_getaddrinfo_request *req[PG_MAX_HOSTS];      /* pending lookups */
    lookup lk[PG_MAX_HOSTS];                                  /* callback arguments */
};

/* Splits a comma list into at most |max| owned strings; returns the count or -1 if longer. */
static int split_list(const char *s, char **out, int max)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (n == max) {
            for (int i = 0; i < n; i++)
                free(out[i]);
            return -1;
        }
        out[n++] = mem_strndup(p, len);
        if (comma == NULL)
            return n;
        p = comma + 1;
    }
}

static bool host_is_name(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return h[0] != '\0' && h[0] != '/' && h[0] != '@' && evutil_inet_pton(AF_INET, h, buf) != 1 &&
           evutil_inet_pton(AF_INET6, h, buf) != 1;
}

static void batch_free(resolve_batch *rb)
{
    for (int i = 0; i < rb->n; i++) {
        free(rb->hosts[i]);
        free(rb->ports[i]);
    }
    free(rb);
}

/* Stops caring about |rb|'s lookups; it frees itself when the last callback has run. */
static void batch_abandon(resolve_batch *rb)
{
    struct evdns_getaddrinfo_request *reqs[PG_MAX_HOSTS];
    int n = rb->n;
    memcpy(reqs, rb->req, sizeof(reqs));
    rb->c = NULL;
    rb->pending++; /* hold it while cancelling: callbacks may run synchronously */
    for (int i = 0; i < n; i++)
        if (reqs[i] != NULL)
            evdns_getaddrinfo_cancel(reqs[i]);
    if (--rb->pending == 0)
        batch_free(rb);
}

typedef struct strbuf {
    char *p;  /* NUL-terminated */
    size_t n; /* length */
} strbuf;

static void sb_append(strbuf *b, const char *s, bool comma)
{
    size_t add = strlen(s) + (comma ? 1 : 0);
    b->p = mem_realloc(b->p, b->n + add + 1);
    if (comma)
        b->p[b->n++] = ',';
    memcpy(b->p + b->n, s, strlen(s));
    b->n += strlen(s);
    b->p[b->n] = '\0';
}

static void resolved_connect(pg_conn *c, resolve_batch *rb)
{
    pg_pool *p = c->pool;
    strbuf hosts = {mem_strdup(""), 0}, addrs = {mem_strdup(""), 0}, ports = {mem_strdup(""), 0};
    bool multi_port = rb->ports[0] != NULL;
    int entries = 0;
    for (int i = 0; i < rb->n; i++) {
        int k = rb->is_name[i] ? rb->n_addrs[i] : 1;
        for (int a = 0; a < k; a++) {
            sb_append(&hosts, rb->hosts[i], entries > 0);
            sb_append(&addrs, rb->is_name[i] ? rb->addrs[i][a] : "", entries > 0);
            if (multi_port)
                sb_append(&ports, rb->ports[i], entries > 0);
            entries++;
        }
    }
    if (entries == 0) {
        free(hosts.p);
        free(addrs.p);
        free(ports.p);
        conn_lost(c, "could not resolve any host");
        return;
    }
    int nkw = 0;
    while (p->kw[nkw] != NULL)
        nkw++;
    const char **kw = mem_calloc((size_t)nkw + 2, sizeof(char *));
    const char **kv = mem_calloc((size_t)nkw + 2, sizeof(char *));
    int k = 0;
    for (int i = 0; i < nkw; i++) {
        if (strcmp(p->kw[i], "hostaddr") == 0)
            continue;
        kw[k] = p->kw[i];
        if (i == p->host_i)
            kv[k] = hosts.p;
        else if (i == p->port_i && multi_port)
            kv[k] = ports.p;
        else
            kv[k] = p->kv[i];
        k++;
    }
    kw[k] = "hostaddr";
    kv[k] = addrs.p;
    k++;
    kw[k] = NULL;
    kv[k] = NULL;
    PGconn *pq = PQconnectStartParams(kw, kv, 0);
    free(kw);
    free(kv);
    free(hosts.p);
    free(addrs.p);
    free(ports.p);
    conn_begin(c, pq);
}

static void on_pg_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    lookup *lk = arg;
    resolve_batch *rb = lk->rb;
    int i = lk->idx;
    rb->req[i] = NULL;
    if (result == 0) {
        for (struct evutil_addrinfo *a = res; a != NULL && rb->n_addrs[i] < PG_MAX_ADDRS;
             a = a->ai_next) {
            const void *addr = a->ai_family == AF_INET6
                                   ? (const void *)&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr
                                   : (const void *)&((struct sockaddr_in *)a->ai_addr)->sin_addr;
            if (evutil_inet_ntop(a->ai_family, addr, rb->addrs[i][rb->n_addrs[i]],
                                 INET6_ADDRSTRLEN) != NULL)
                rb->n_addrs[i]++;
        }
    } else if (result != EVUTIL_EAI_CANCEL && rb->c != NULL) {
        log_debug("%s[%u]: resolve %s: %s", rb->c->pool->name, rb->c->idx, rb->hosts[i],
                  evutil_gai_strerror(result));
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    if (--rb->pending > 0)
        return;
    pg_conn *c = rb->c;
    if (c == NULL) {
        batch_free(rb);
        return;
    }
    pg_pool *p = c->pool;
    c->rb = NULL;
    enter(p);
    resolved_connect(c, rb);
    batch_free(rb);
    leave(p);
}

static void start_resolve(pg_conn *c)
{
    pg_pool *p = c->pool;
    if (p->dns == NULL) {
        p->dns = evdns_base_new(p->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                             EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (p->dns == NULL) {
            conn_lost(c, "no DNS resolver");
            return;
        }
    }
    resolve_batch *rb = mem_calloc(1, sizeof(*rb));
    rb->c = c;
    rb->n = split_list(p->kv[p->host_i], rb->hosts, PG_MAX_HOSTS);
    if (p->port_i >= 0 && strchr(p->kv[p->port_i], ',') != NULL &&
        split_list(p->kv[p->port_i], rb->ports, PG_MAX_HOSTS) != rb->n) {
        /* libpq rejects a host/port count mismatch itself; let it say so. */
        for (int i = 0; i < PG_MAX_HOSTS; i++) {
            free(rb->ports[i]);
            rb->ports[i] = NULL;
        }
        batch_free(rb);
        conn_begin(c, PQconnectStart(p->conninfo));
        return;
    }
    c->rb = rb;
    c->state = PC_RESOLVING;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    rb->pending = 1; /* held while issuing: lookups may complete synchronously */
    for (int i = 0; i < rb->n; i++) {
        rb->is_name[i] = host_is_name(rb->hosts[i]);
        if (!rb->is_name[i])
            continue;
        rb->lk[i].rb = rb;
        rb->lk[i].idx = i;
        rb->pending++;
        /* NULL when answered at once (hosts file, cache): the callback already ran. */
        struct evdns_getaddrinfo_request *r =
            evdns_getaddrinfo(p->dns, rb->hosts[i], NULL, &hints, on_pg_resolved, &rb->lk[i]);
        if (r != NULL)
            rb->req[i] = r;
    }
    if (--rb->pending == 0) {
        c->rb = NULL;
        resolved_connect(c, rb);
        batch_free(rb);
    }
}

static void conn_start(pg_conn *c)
{
    pg_pool *p = c->pool;
    clock_event_add_ms(c->timer, p->cfg.connect_timeout_ms);
    if (p->needs_dns)
        start_resolve(c);
    else
        conn_begin(c, PQconnectStart(p->conninfo));
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pg_conn *c = arg;
    pg_pool *p = c->pool;
    enter(p);
    if (c->state == PC_DOWN && !c->held && !p->closing) {
        conn_start(c);
    } else if (c->state == PC_RESOLVING) {
        resolve_batch *rb = c->rb;
        c->rb = NULL;
        if (rb != NULL)
            batch_abandon(rb);
        conn_lost(c, "host name lookup timed out");
    } else if (c->state == PC_CONNECTING) {
        conn_lost(c, "connect timed out");
    }
    leave(p);
}

/* Flushes the output buffer; returns false when the connection broke (already handled). */
static bool do_flush(pg_conn *c)
{
    int r = PQflush(c->pq);
    if (r < 0) {
        conn_lost_pq(c);
        return false;
    }
    c->flushing = r == 1;
    watch(c, c->flushing ? (short)(EV_READ | EV_WRITE) : (short)EV_READ);
    return true;
}

/* Sends |q| on idle |c|. Returns 0, or an error with |q| not consumed and |c| unchanged
 * except when the connection turned out broken (PG_E_CONNECTION: |c| is torn down, no
 * callback was called). */
static int send_query(pg_conn *c, pg_query *q)
{
    int ok = PQsendQueryParams(c->pq, q->sql, q->n, q->types, (const char *const *)q->values,
                               q->lengths, q->formats, q->result_format);
    if (!ok) {
        char why[256];
        trimmed_error(c->pq, why, sizeof(why));
        if (PQstatus(c->pq) == CONNECTION_BAD) {
            conn_lost(c, why);
            return PG_E_CONNECTION;
        }
        log_warn("%s[%u]: query not sent: %s", c->pool->name, c->idx, why);
        return PG_E_SEND;
    }
    c->cur = q;
    c->state = PC_BUSY;
    if (!do_flush(c))
        return 0; /* conn_lost() failed |q| through its callback */
    return 0;
}

/* The running query produced its last result. */
static void finish_query(pg_conn *c)
{
    pg_pool *p = c->pool;
    pg_query *q = c->cur;
    PGresult *res = c->res;
    c->cur = NULL;
    c->res = NULL;
    c->state = PC_IDLE;
    bool bad = PQstatus(c->pq) == CONNECTION_BAD;
    if (!q->internal && q->cb != NULL) {
        if (bad)
            q->cb(p, NULL, PG_E_CONNECTION, q->ud);
        else
            q->cb(p, res, 0, q->ud);
    }
    if (res != NULL)
        PQclear(res);
    query_free(q);
    if (p->closing)
        return;
    if (bad) {
        if (c->state == PC_IDLE)
            conn_lost_pq(c);
        return;
    }
    if (c->held && c->release_pending) {
        c->release_pending = false;
        do_release(c);
    } else if (!c->held && c->state == PC_IDLE) {
        dispatch(p);
    }
}

static void read_results(pg_conn *c)
{
    while (c->cur != NULL && !PQisBusy(c->pq)) {
        PGresult *r = PQgetResult(c->pq);
        if (r == NULL) {
            finish_query(c);
            return;
        }
        /* One statement gives one result; keep the last (an error, if it failed). */
        if (c->res != NULL)
            PQclear(c->res);
        c->res = r;
    }
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    pg_conn *c = arg;
    pg_pool *p = c->pool;
    enter(p);
    switch (c->state) {
    case PC_CONNECTING:
        step_connect(c);
        break;
    case PC_IDLE:
        if (!PQconsumeInput(c->pq)) {
            conn_lost_pq(c);
            break;
        }
        for (PGnotify *n; (n = PQnotifies(c->pq)) != NULL;)
            PQfreemem(n);
        if (PQstatus(c->pq) == CONNECTION_BAD)
            conn_lost_pq(c);
        break;
    case PC_BUSY:
        if ((what & EV_READ) && !PQconsumeInput(c->pq)) {
            conn_lost_pq(c);
            break;
        }
        if (c->flushing && !do_flush(c))
            break;
        read_results(c);
        break;
    case PC_DOWN:
    case PC_RESOLVING:
        break;
    }
    leave(p);
}

/* --- dispatch ------------------------------------------------------------------------------ */

static pg_conn *free_conn(pg_pool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pg_conn *c = &p->conns[i];
        if (c->state == PC_IDLE && !c->held && c->cur == NULL)
            return c;
    }
    return NULL;
}

static void dispatch(pg_pool *p)
{
    if (p->dispatching || p->closing)
        return;
    p->dispatching = true;
    pg_conn *c;
    while (!p->closing && p->qhead != NULL && (c = free_conn(p)) != NULL) {
        pg_query *q = queue_pop(p);
        if (q->acb != NULL) {
            c->held = true;
            q->acb(p, c, 0, q->ud);
            query_free(q);
            continue;
        }
        int rv = send_query(c, q);
        if (rv != 0)
            fail_query(p, q, rv);
    }
    p->dispatching = false;
    if (!p->closing)
        arm_qtimer(p);
}

/* --- public API ---------------------------------------------------------------------------- */

int pg_pool_new(pg_pool **out, struct event_base *base, const pg_config *cfg)
{
    *out = NULL;
    if (base == NULL || cfg == NULL || cfg->conninfo == NULL)
        return PG_E_INVALID;
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(cfg->conninfo, &errmsg);
    if (opts == NULL) {
        log_error("%s: bad conninfo: %s", cfg->name ? cfg->name : "pg",
                  errmsg ? errmsg : "out of memory");
        PQfreemem(errmsg);
        return PG_E_INVALID;
    }
    pg_pool *p = mem_calloc(1, sizeof(*p));
    /* Keep the parsed options: a name in "host" is resolved by us (see start_resolve) unless
     * hostaddr is given, in which case libpq does no lookup anyway. */
    int nopt = 0, k = 0;
    while (opts[nopt].keyword != NULL)
        nopt++;
    p->kw = mem_calloc((size_t)nopt + 1, sizeof(char *));
    p->kv = mem_calloc((size_t)nopt + 1, sizeof(char *));
    p->host_i = p->port_i = -1;
    bool have_hostaddr = false;
    for (int i = 0; i < nopt; i++) {
        if (opts[i].val == NULL)
            continue;
        if (strcmp(opts[i].keyword, "host") == 0)
            p->host_i = k;
        else if (strcmp(opts[i].keyword, "port") == 0)
            p->port_i = k;
        else if (strcmp(opts[i].keyword, "hostaddr") == 0 && opts[i].val[0] != '\0')
            have_hostaddr = true;
        p->kw[k] = mem_strdup(opts[i].keyword);
        p->kv[k] = mem_strdup(opts[i].val);
        k++;
    }
    PQconninfoFree(opts);
    if (p->host_i >= 0 && !have_hostaddr) {
        char *hosts[PG_MAX_HOSTS];
        int n = split_list(p->kv[p->host_i], hosts, PG_MAX_HOSTS);
        for (int i = 0; i < n; i++) {
            if (host_is_name(hosts[i]))
                p->needs_dns = true;
            free(hosts[i]);
        }
    }
    p->base = base;
    p->cfg = *cfg;
    p->conninfo = mem_strdup(cfg->conninfo);
    p->name = mem_strdup(cfg->name ? cfg->name : "pg");
    p->cfg.conninfo = p->conninfo;
    p->cfg.name = p->name;
    if (p->cfg.size == 0)
        p->cfg.size = 1;
    if (p->cfg.max_queue == 0)
        p->cfg.max_queue = 1;
    if (p->cfg.connect_timeout_ms == 0)
        p->cfg.connect_timeout_ms = 5000;
    if (p->cfg.reconnect_min_ms == 0)
        p->cfg.reconnect_min_ms = 1;
    if (p->cfg.reconnect_max_ms < p->cfg.reconnect_min_ms)
        p->cfg.reconnect_max_ms = p->cfg.reconnect_min_ms;
    p->rng = (uint32_t)clock_mono_ms() ^ (uint32_t)(uintptr_t)p ^ (uint32_t)getpid();
    if (p->rng == 0)
        p->rng = 0x2545f491u;
    p->qtimer = evtimer_new(base, on_qtimer, p);
    p->conns = mem_calloc(p->cfg.size, sizeof(pg_conn));
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pg_conn *c = &p->conns[i];
        c->pool = p;
        c->idx = i;
        c->sock = -1;
        c->ev = event_new(base, -1, 0, on_io, c);
        c->timer = evtimer_new(base, on_conn_timer, c);
    }
    enter(p);
    for (unsigned i = 0; i < p->cfg.size; i++)
        conn_start(&p->conns[i]);
    leave(p);
    *out = p;
    return 0;
}

void pg_pool_free(pg_pool *p)
{
    if (p == NULL || p->closing)
        return;
    p->closing = true;
    enter(p);
    event_del(p->qtimer);
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pg_conn *c = &p->conns[i];
        event_del(c->ev);
        event_del(c->timer);
        if (c->rb != NULL) {
            resolve_batch *rb = c->rb;
            c->rb = NULL;
            batch_abandon(rb);
        }
    }
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pg_conn *c = &p->conns[i];
        pg_query *q = c->cur;
        c->cur = NULL;
        if (q != NULL)
            fail_query(p, q, PG_E_CLOSED);
    }
    pg_query *q;
    while ((q = queue_pop(p)) != NULL)
        fail_query(p, q, PG_E_CLOSED);
    leave(p);
}

static int enqueue(pg_pool *p, pg_query *q)
{
    if (p->qlen >= p->cfg.max_queue) {
        query_free(q);
        return PG_E_BUSY;
    }
    queue_push(p, q);
    if (p->qlen == 1)
        arm_qtimer(p);
    /* A free connection takes it now; from inside a callback the outer dispatch does. */
    dispatch(p);
    return 0;
}

int pg_pool_query(pg_pool *p, const char *sql, const pg_params *params, pg_result_cb cb,
                  void *user_data)
{
    if (p == NULL || sql == NULL || !params_ok(params))
        return PG_E_INVALID;
    if (p->closing)
        return PG_E_CLOSED;
    if (p->qlen >= p->cfg.max_queue)
        return PG_E_BUSY;
    enter(p);
    int rv = enqueue(p, query_new(sql, params, cb, user_data));
    leave(p);
    return rv;
}

int pg_pool_acquire(pg_pool *p, pg_acquire_cb cb, void *user_data)
{
    if (p == NULL || cb == NULL)
        return PG_E_INVALID;
    if (p->closing)
        return PG_E_CLOSED;
    if (p->qlen >= p->cfg.max_queue)
        return PG_E_BUSY;
    pg_query *q = mem_calloc(1, sizeof(*q));
    q->acb = cb;
    q->ud = user_data;
    enter(p);
    int rv = enqueue(p, q);
    leave(p);
    return rv;
}

int pg_conn_query(pg_conn *c, const char *sql, const pg_params *params, pg_result_cb cb,
                  void *user_data)
{
    if (c == NULL || sql == NULL || !params_ok(params) || !c->held)
        return PG_E_INVALID;
    pg_pool *p = c->pool;
    if (p->closing)
        return PG_E_CLOSED;
    if (c->broken || c->state == PC_DOWN || c->state == PC_CONNECTING || c->state == PC_RESOLVING)
        return PG_E_CONNECTION;
    if (c->cur != NULL || c->state != PC_IDLE)
        return PG_E_BUSY;
    pg_query *q = query_new(sql, params, cb, user_data);
    enter(p);
    int rv = send_query(c, q);
    if (rv != 0)
        query_free(q);
    leave(p);
    return rv;
}

static void do_release(pg_conn *c)
{
    pg_pool *p = c->pool;
    if (c->cur != NULL) {
        c->release_pending = true;
        return;
    }
    if (c->broken || c->state == PC_DOWN) {
        c->held = false;
        c->broken = false;
        schedule_reconnect(c, false, "released after failure");
        return;
    }
    PGTransactionStatusType ts = PQtransactionStatus(c->pq);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        pg_query *q = query_new("ROLLBACK", NULL, NULL, NULL);
        q->internal = true;
        c->held = false;
        int rv = send_query(c, q);
        if (rv != 0) {
            query_free(q);
            if (c->state != PC_DOWN)
                conn_lost(c, "rollback not sent");
        }
        return;
    }
    if (ts != PQTRANS_IDLE) {
        c->held = false;
        conn_lost(c, "released in an unknown transaction state");
        return;
    }
    c->held = false;
    dispatch(p);
}

void pg_conn_release(pg_conn *c)
{
    if (c == NULL || !c->held)
        return;
    pg_pool *p = c->pool;
    if (p->closing)
        return;
    enter(p);
    do_release(c);
    leave(p);
}

pg_pool *pg_conn_pool(const pg_conn *c)
{
    return c->pool;
}

unsigned pg_pool_connected(const pg_pool *p)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->cfg.size; i++)
        if (p->conns[i].state == PC_IDLE || p->conns[i].state == PC_BUSY)
            n++;
    return n;
}

size_t pg_pool_queued(const pg_pool *p)
{
    return p->qlen;
}

/* Asynchronous Redis client and pub/sub connection (redis.h). */
#include "redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/evp.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

const char *redis_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case REDIS_E_INVALID:
        return "invalid argument";
    case REDIS_E_BUSY:
        return "too many Redis commands in flight";
    case REDIS_E_DISCONNECTED:
        return "not connected to Redis";
    case REDIS_E_CONNECTION:
        return "Redis connection lost";
    case REDIS_E_TIMEOUT:
        return "Redis command timed out";
    case REDIS_E_CLOSED:
        return "Redis client closed";
    case REDIS_E_CONNECT:
        return "could not connect to Redis";
    case REDIS_E_RESOLVE:
        return "could not resolve the Redis host";
    case REDIS_E_AUTH:
        return "Redis refused AUTH or SELECT";
    case REDIS_E_LIMIT:
        return "too many subscriptions";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

void redis_config_init(redis_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->url = "127.0.0.1:6379";
    cfg->name = "redis";
    cfg->max_inflight = 10000;
    cfg->max_subscriptions = 10000;
    cfg->connect_timeout_ms = 2000;
    cfg->command_timeout_ms = 5000;
    cfg->reconnect_min_ms = 100;
    cfg->reconnect_max_ms = 5000;
    cfg->keepalive_s = 15;
    cfg->ping_interval_ms = 5000;
}

/* --- URL ----------------------------------------------------------------------------------- */

typedef struct redis_target {
    char *host;     /* name or numeric address, without brackets */
    uint16_t port;  /* TCP port */
    char *user;     /* ACL user for AUTH, or NULL */
    char *password; /* AUTH password, or NULL */
    int db;         /* SELECT index (0 = none sent) */
} redis_target;

static void target_clear(redis_target *t)
{
    free(t->host);
    free(t->user);
    free(t->password);
    memset(t, 0, sizeof(*t));
}

static int parse_uint(const char *s, size_t n, unsigned long max, unsigned long *out)
{
    if (n == 0 || n > 10)
        return REDIS_E_INVALID;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return REDIS_E_INVALID;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > max)
        return REDIS_E_INVALID;
    *out = v;
    return 0;
}

/* Parses "redis://[[user]:password@]host[:port][/db]" or "host[:port]". */
static int target_parse(redis_target *t, const char *url)
{
    memset(t, 0, sizeof(*t));
    t->port = 6379;
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    const char *end = p + strlen(p);
    const char *slash = memchr(p, '/', (size_t)(end - p));
    const char *hostpart_end = slash ? slash : end;
    const char *at = NULL;
    for (const char *q = p; q < hostpart_end; q++)
        if (*q == '@')
            at = q;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon == NULL)
            goto fail; /* "user@" without password is meaningless for AUTH */
        if (colon > p)
            t->user = mem_strndup(p, (size_t)(colon - p));
        t->password = mem_strndup(colon + 1, (size_t)(at - colon - 1));
        p = at + 1;
    }
    const char *host_end;
    const char *after;
    if (*p == '[') {
        host_end = memchr(p, ']', (size_t)(hostpart_end - p));
        if (host_end == NULL)
            goto fail;
        t->host = mem_strndup(p + 1, (size_t)(host_end - p - 1));
        after = host_end + 1;
    } else {
        host_end = memchr(p, ':', (size_t)(hostpart_end - p));
        if (host_end == NULL)
            host_end = hostpart_end;
        t->host = mem_strndup(p, (size_t)(host_end - p));
        after = host_end;
    }
    if (t->host[0] == '\0')
        goto fail;
    if (after < hostpart_end) {
        unsigned long port;
        if (*after != ':' ||
            parse_uint(after + 1, (size_t)(hostpart_end - after - 1), 65535, &port) != 0 ||
            port == 0)
            goto fail;
        t->port = (uint16_t)port;
    }
    if (slash != NULL && slash + 1 < end) {
        unsigned long db;
        if (parse_uint(slash + 1, (size_t)(end - slash - 1), 1000000, &db) != 0)
            goto fail;
        t->db = (int)db;
    }
    return 0;
fail:
    target_clear(t);
    return REDIS_E_INVALID;
}

static bool host_is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return evutil_inet_pton(AF_INET, host, buf) == 1 || evutil_inet_pton(AF_INET6, host, buf) == 1;
}

/* --- connection core shared by the client and the pub/sub connection ----------------------- */

typedef enum rconn_state {
    RC_WAIT = 0,       /* backing off before the next attempt */
    RC_RESOLVING = 1,  /* evdns lookup in progress */
    RC_CONNECTING = 2, /* non-blocking connect in progress (commands may be queued) */
    RC_CONNECTED = 3,  /* usable */
} rconn_state;

typedef struct rconn rconn;

/* What the owner (client or sub) does at each step. */
typedef struct rconn_ops {
    void (*attached)(rconn *rc, redisAsyncContext *ac); /* new context: pipeline AUTH etc. */
    void (*up)(rconn *rc);                              /* connected */
    void (*down)(rconn *rc, int err);                   /* detached: fail requests, tell the user */
    void (*destroy)(rconn *rc);                         /* final free, depth 0 */
} rconn_ops;

struct rconn {
    struct event_base *base;                   /* the loop */
    const rconn_ops *ops;                      /* owner hooks */
    redis_config cfg;                          /* copy; url and name point at the copies below */
    char *url;                                 /* owned copy */
    char *name;                                /* owned copy */
    redis_target tgt;                          /* parsed url */
    struct evdns_base *dns;                    /* created on first non-numeric lookup */
    struct evdns_getaddrinfo_request *dns_req; /* pending lookup or NULL */
    redisAsyncContext *ac;                     /* current context or NULL; ac->data == this */
    rconn_state state;                         /* see rconn_state */
    struct event *timer;                       /* connect timeout or reconnect backoff */
    struct event *up_ev;                       /* runs ops->up outside hiredis's connect callback */
    bool up_pending;                           /* up_ev armed for the current connection */
    uint32_t attempt;                          /* consecutive failures, for backoff */
    int64_t up_since;                          /* mono ms of the last successful connect */
    uint32_t rng;                              /* xorshift state for jitter */
    int depth;    /* nesting of entries from the loop; free is deferred while > 0 */
    bool closing; /* free requested */
};

static void rconn_begin(rconn *rc);

static void enter(rconn *rc)
{
    rc->depth++;
}

/* Returns true when |rc| was destroyed and must not be touched. */
static bool leave(rconn *rc)
{
    if (--rc->depth == 0 && rc->closing) {
        rc->ops->destroy(rc);
        return true;
    }
    return false;
}

static uint32_t rconn_rand(rconn *rc)
{
    uint32_t x = rc->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rc->rng = x;
    return x;
}

static void arm_timer(rconn *rc, int64_t ms)
{
    struct timeval tv = clock_ms_tv(ms);
    event_add(rc->timer, &tv);
}

/* Detaches the current context: callbacks from hiredis no longer reach |rc|. */
static redisAsyncContext *detach(rconn *rc)
{
    redisAsyncContext *ac = rc->ac;
    rc->ac = NULL;
    if (ac != NULL)
        ac->data = NULL;
    return ac;
}

/* The connection (or attempt) is over and already detached: back off, then tell the owner. */
static void went_down(rconn *rc, int err)
{
    bool was_up = rc->state == RC_CONNECTED;
    rc->state = RC_WAIT;
    rc->up_pending = false;
    event_del(rc->up_ev);
    if (was_up && clock_mono_ms() - rc->up_since >= 1000)
        rc->attempt = 0;
    uint32_t cap = rc->cfg.reconnect_max_ms;
    uint64_t delay = (uint64_t)rc->cfg.reconnect_min_ms << (rc->attempt < 20 ? rc->attempt : 20);
    if (delay > cap)
        delay = cap;
    /* Jitter in [delay/2, delay] so that many clients do not reconnect in lockstep. */
    delay = delay / 2 + rconn_rand(rc) % (delay / 2 + 1);
    if (was_up || rc->attempt == 0 || (rc->attempt & (rc->attempt - 1)) == 0)
        log_warn("%s: %s %s:%u: %s; retrying in %llu ms", rc->name,
                 was_up ? "connection to" : "cannot connect to", rc->tgt.host, rc->tgt.port,
                 redis_strerror(err), (unsigned long long)delay);
    rc->attempt++;
    event_del(rc->timer);
    arm_timer(rc, (int64_t)delay);
    rc->ops->down(rc, err);
}

/* Drops the current context on our initiative (timeouts, refused AUTH). */
static void drop(rconn *rc, int err)
{
    redisAsyncContext *ac = detach(rc);
    went_down(rc, err);
    /* After the owner has failed its requests: hiredis now only frees orphans. From inside a
     * hiredis callback the free is deferred until that callback returns. */
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void on_hiredis_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rconn *rc = ac->data;
    if (rc == NULL)
        return;
    enter(rc);
    if (status != REDIS_OK) {
        /* hiredis frees |ac| when we return. */
        detach(rc);
        went_down(rc, REDIS_E_CONNECT);
    } else {
        event_del(rc->timer);
        rc->state = RC_CONNECTED;
        rc->up_since = clock_mono_ms();
        log_info("%s: connected to %s:%u", rc->name, rc->tgt.host, rc->tgt.port);
        /* hiredis keeps using |ac| after this callback without guarding against a free from
         * inside it, and user code reached from ops->up may free: run it on the next turn. */
        rc->up_pending = true;
        event_active(rc->up_ev, EV_TIMEOUT, 0);
    }
    leave(rc);
}

static void on_up_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rconn *rc = arg;
    if (!rc->up_pending || rc->state != RC_CONNECTED || rc->closing)
        return;
    rc->up_pending = false;
    enter(rc);
    rc->ops->up(rc);
    leave(rc);
}

static void on_hiredis_disconnect(const redisAsyncContext *cac, int status)
{
    (void)status;
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    rconn *rc = ac->data;
    if (rc == NULL)
        return;
    enter(rc);
    detach(rc);
    went_down(rc, REDIS_E_CONNECTION);
    leave(rc);
}

static void set_keepalive(int fd, uint32_t idle_s)
{
    int on = 1;
    int idle = (int)idle_s;
    int intvl = idle / 3 > 0 ? idle / 3 : 1;
    int cnt = 3;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static void connect_ip(rconn *rc, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, rc->tgt.port);
    if (ac == NULL) {
        went_down(rc, REDIS_E_CONNECT);
        return;
    }
    if (ac->err) {
        log_debug("%s: connect %s:%u: %s", rc->name, ip, rc->tgt.port, ac->errstr);
        redisAsyncFree(ac);
        went_down(rc, REDIS_E_CONNECT);
        return;
    }
    if (redisLibeventAttach(ac, rc->base) != REDIS_OK) {
        redisAsyncFree(ac);
        went_down(rc, REDIS_E_CONNECT);
        return;
    }
    ac->data = rc;
    redisAsyncSetConnectCallback(ac, on_hiredis_connect);
    redisAsyncSetDisconnectCallback(ac, on_hiredis_disconnect);
    if (rc->cfg.keepalive_s > 0)
        set_keepalive(ac->c.fd, rc->cfg.keepalive_s);
    rc->ac = ac;
    rc->state = RC_CONNECTING;
    rc->ops->attached(rc, ac);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    if (result == EVUTIL_EAI_CANCEL)
        return; /* rconn_close() cancelled us: |arg| may be gone */
    rconn *rc = arg;
    rc->dns_req = NULL;
    enter(rc);
    if (result != 0 || res == NULL) {
        log_debug("%s: resolve %s: %s", rc->name, rc->tgt.host, evutil_gai_strerror(result));
        went_down(rc, REDIS_E_RESOLVE);
    } else {
        /* Successive attempts walk through the addresses, so one dead address (or an IPv6
         * address the server does not listen on) does not block the others. */
        size_t n = 0;
        for (struct evutil_addrinfo *a = res; a != NULL; a = a->ai_next)
            n++;
        struct evutil_addrinfo *pick = res;
        for (size_t k = rc->attempt % n; k > 0; k--)
            pick = pick->ai_next;
        char ip[INET6_ADDRSTRLEN];
        const void *addr = pick->ai_family == AF_INET6
                               ? (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr
                               : (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr;
        if (evutil_inet_ntop(pick->ai_family, addr, ip, sizeof(ip)) == NULL)
            went_down(rc, REDIS_E_RESOLVE);
        else
            connect_ip(rc, ip);
    }
    if (res != NULL)
        evutil_freeaddrinfo(res);
    leave(rc);
}

static void rconn_begin(rconn *rc)
{
    arm_timer(rc, rc->cfg.connect_timeout_ms);
    if (host_is_numeric(rc->tgt.host)) {
        connect_ip(rc, rc->tgt.host);
        return;
    }
    if (rc->dns == NULL) {
        rc->dns = evdns_base_new(rc->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                               EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (rc->dns == NULL) {
            went_down(rc, REDIS_E_RESOLVE);
            return;
        }
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    rc->state = RC_RESOLVING;
    /* The callback may run before this returns (hosts file, cache); then it returns NULL. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(rc->dns, rc->tgt.host, NULL, &hints, on_resolved, rc);
    if (rc->state == RC_RESOLVING)
        rc->dns_req = req;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rconn *rc = arg;
    enter(rc);
    switch (rc->state) {
    case RC_WAIT:
        rconn_begin(rc);
        break;
    case RC_RESOLVING:
        if (rc->dns_req != NULL) {
            struct evdns_getaddrinfo_request *req = rc->dns_req;
            rc->dns_req = NULL;
            evdns_getaddrinfo_cancel(req);
        }
        went_down(rc, REDIS_E_RESOLVE);
        break;
    case RC_CONNECTING:
        drop(rc, REDIS_E_CONNECT);
        break;
    case RC_CONNECTED:
        break;
    }
    leave(rc);
}

static int rconn_init(rconn *rc, struct event_base *base, const redis_config *cfg,
                      const rconn_ops *ops)
{
    redis_config def;
    if (cfg == NULL) {
        redis_config_init(&def);
        cfg = &def;
    }
    if (base == NULL || cfg->url == NULL)
        return REDIS_E_INVALID;
    if (target_parse(&rc->tgt, cfg->url) != 0)
        return REDIS_E_INVALID;
    rc->base = base;
    rc->ops = ops;
    rc->cfg = *cfg;
    rc->url = mem_strdup(cfg->url);
    rc->name = mem_strdup(cfg->name ? cfg->name : "redis");
    rc->cfg.url = rc->url;
    rc->cfg.name = rc->name;
    if (rc->cfg.max_inflight == 0)
        rc->cfg.max_inflight = 1;
    if (rc->cfg.reconnect_min_ms == 0)
        rc->cfg.reconnect_min_ms = 1;
    if (rc->cfg.reconnect_max_ms < rc->cfg.reconnect_min_ms)
        rc->cfg.reconnect_max_ms = rc->cfg.reconnect_min_ms;
    if (rc->cfg.connect_timeout_ms == 0)
        rc->cfg.connect_timeout_ms = 2000;
    rc->timer = evtimer_new(base, on_timer, rc);
    rc->up_ev = event_new(base, -1, 0, on_up_ev, rc);
    rc->rng = (uint32_t)clock_mono_ms() ^ (uint32_t)(uintptr_t)rc ^ (uint32_t)getpid();
    if (rc->rng == 0)
        rc->rng = 0x9e3779b9u;
    return 0;
}

/* Starts closing: no more hiredis callbacks reach |rc|; the owner fails its requests through
 * ops->down with REDIS_E_CLOSED only if |fail| (the caller decides about user callbacks). */
static redisAsyncContext *rconn_close(rconn *rc)
{
    rc->closing = true;
    if (rc->dns_req != NULL) {
        struct evdns_getaddrinfo_request *req = rc->dns_req;
        rc->dns_req = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    event_del(rc->timer);
    event_del(rc->up_ev);
    rc->up_pending = false;
    rc->state = RC_WAIT;
    return detach(rc);
}

static void rconn_release(rconn *rc)
{
    if (rc->timer != NULL)
        event_free(rc->timer);
    if (rc->up_ev != NULL)
        event_free(rc->up_ev);
    if (rc->dns != NULL)
        evdns_base_free(rc->dns, 1);
    target_clear(&rc->tgt);
    free(rc->url);
    free(rc->name);
}

/* Pipelines AUTH and SELECT on a fresh context; failures drop the connection. */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    rconn *rc = ac->data;
    redisReply *reply = r;
    if (rc == NULL || reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return;
    enter(rc);
    log_error("%s: %s:%u refused setup: %s", rc->name, rc->tgt.host, rc->tgt.port, reply->str);
    drop(rc, REDIS_E_AUTH);
    leave(rc);
}

static void send_setup(rconn *rc, redisAsyncContext *ac, bool select_db)
{
    if (rc->tgt.password != NULL) {
        if (rc->tgt.user != NULL) {
            const char *argv[] = {"AUTH", rc->tgt.user, rc->tgt.password};
            redisAsyncCommandArgv(ac, on_setup_reply, NULL, 3, argv, NULL);
        } else {
            const char *argv[] = {"AUTH", rc->tgt.password};
            redisAsyncCommandArgv(ac, on_setup_reply, NULL, 2, argv, NULL);
        }
    }
    if (select_db && rc->tgt.db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", rc->tgt.db);
        const char *argv[] = {"SELECT", db};
        redisAsyncCommandArgv(ac, on_setup_reply, NULL, 2, argv, NULL);
    }
}

/* --- scripts ------------------------------------------------------------------------------- */

struct redis_script {
    char *source; /* Lua text */
    char sha[41]; /* hex SHA-1 of |source| */
};

int redis_script_new(redis_script **out, const char *source)
{
    *out = NULL;
    if (source == NULL || source[0] == '\0')
        return REDIS_E_INVALID;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(source, strlen(source), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return REDIS_E_INVALID;
    redis_script *s = mem_calloc(1, sizeof(*s));
    s->source = mem_strdup(source);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 20; i++) {
        s->sha[2 * i] = hex[md[i] >> 4];
        s->sha[2 * i + 1] = hex[md[i] & 15];
    }
    s->sha[40] = '\0';
    *out = s;
    return 0;
}

void redis_script_free(redis_script *s)
{
    if (s == NULL)
        return;
    free(s->source);
    free(s);
}

const char *redis_script_sha(const redis_script *s)
{
    return s->sha;
}

/* --- client -------------------------------------------------------------------------------- */

typedef struct req req;

struct redis_client {
    rconn rc;                   /* must be first */
    redis_client_callbacks cbs; /* user connection callbacks */
    void *cbs_ud;               /* their user_data */
    req *head;                  /* in-flight commands, oldest first */
    req *tail;                  /* newest */
    size_t inflight;            /* entries in the list */
    struct event *timeout_ev;   /* command timeout check */
};

struct req {
    req *prev, *next;           /* in-flight list links */
    redis_client *c;            /* owner */
    bool orphan;                /* the user already had the callback; hiredis still holds us */
    bool retried;               /* NOSCRIPT fallback already used */
    redis_reply_cb cb;          /* user callback, may be NULL */
    void *ud;                   /* its user_data */
    int64_t sent_ms;            /* mono ms when written */
    const redis_script *script; /* for EVALSHA requests */
    int argc;                   /* script: keys + args, after the 3 slots below */
    const char **argv;          /* script: EVALSHA|EVAL, sha|source, numkeys, then copies of
                                   the keys and args; one allocation with |argvlen| and the
                                   bytes (so a batch of many arguments costs one malloc) */
    size_t *argvlen;            /* their lengths */
    char numkeys[12];           /* script: decimal numkeys */
};

static void req_free(req *q)
{
    free(q->argv); /* |argvlen| and the bytes share it */
    free(q);
}

static void req_link(redis_client *c, req *q)
{
    q->prev = c->tail;
    q->next = NULL;
    if (c->tail != NULL)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->inflight++;
}

static void req_unlink(redis_client *c, req *q)
{
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        c->head = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    else
        c->tail = q->prev;
    q->prev = q->next = NULL;
    c->inflight--;
}

/* Gives every in-flight command its callback with |err| now; hiredis frees them later. */
static void fail_all(redis_client *c, int err)
{
    req *q;
    while ((q = c->head) != NULL) {
        req_unlink(c, q);
        q->orphan = true;
        if (q->cb != NULL)
            q->cb(c, NULL, err, q->ud);
    }
    event_del(c->timeout_ev);
}

static void arm_timeout(redis_client *c)
{
    if (c->rc.cfg.command_timeout_ms == 0 || c->head == NULL)
        return;
    int64_t due = c->head->sent_ms + c->rc.cfg.command_timeout_ms - clock_mono_ms();
    struct timeval tv = clock_ms_tv(due);
    event_add(c->timeout_ev, &tv);
}

static void on_command_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redis_client *c = arg;
    if (c->head == NULL)
        return;
    if (clock_mono_ms() - c->head->sent_ms < (int64_t)c->rc.cfg.command_timeout_ms) {
        arm_timeout(c);
        return;
    }
    enter(&c->rc);
    log_warn("%s: no reply for %u ms with %zu commands in flight; reconnecting", c->rc.name,
             c->rc.cfg.command_timeout_ms, c->inflight);
    drop(&c->rc, REDIS_E_TIMEOUT);
    leave(&c->rc);
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

/* Writes |q| (EVALSHA/EVAL for scripts) on the current context and links it. */
static int req_send(redis_client *c, req *q, int argc, const char **argv, const size_t *argvlen)
{
    if (redisAsyncCommandArgv(c->rc.ac, on_reply, q, argc, argv, argvlen) != REDIS_OK)
        return REDIS_E_DISCONNECTED;
    q->sent_ms = clock_mono_ms();
    bool was_empty = c->head == NULL;
    req_link(c, q);
    if (was_empty)
        arm_timeout(c);
    return 0;
}

static int script_send(redis_client *c, req *q, bool sha)
{
    q->argv[0] = sha ? "EVALSHA" : "EVAL";
    q->argv[1] = sha ? q->script->sha : q->script->source;
    q->argv[2] = q->numkeys;
    q->argvlen[0] = strlen(q->argv[0]);
    q->argvlen[1] = strlen(q->argv[1]);
    q->argvlen[2] = strlen(q->argv[2]);
    return req_send(c, q, q->argc + 3, q->argv, q->argvlen);
}

static bool is_noscript(const redisReply *reply)
{
    return reply != NULL && reply->type == REDIS_REPLY_ERROR && reply->str != NULL &&
           strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    req *q = privdata;
    if (q->orphan) {
        req_free(q);
        return;
    }
    redis_client *c = q->c;
    redisReply *reply = r;
    enter(&c->rc);
    req_unlink(c, q);
    if (c->head != NULL)
        arm_timeout(c);
    else
        event_del(c->timeout_ev);
    if (q->script != NULL && !q->retried && is_noscript(reply) && c->rc.ac == ac &&
        !c->rc.closing) {
        /* EVAL loads the script into the cache too, so the next EVALSHA hits. */
        q->retried = true;
        if (script_send(c, q, false) == 0) {
            leave(&c->rc);
            return;
        }
        reply = NULL;
    }
    if (q->cb != NULL)
        q->cb(c, reply, reply != NULL ? 0 : REDIS_E_CONNECTION, q->ud);
    req_free(q);
    leave(&c->rc);
}

static void client_attached(rconn *rc, redisAsyncContext *ac)
{
    send_setup(rc, ac, true);
}

static void client_up(rconn *rc)
{
    redis_client *c = (redis_client *)rc;
    if (c->cbs.on_connect != NULL)
        c->cbs.on_connect(c, c->cbs_ud);
}

static void client_down(rconn *rc, int err)
{
    redis_client *c = (redis_client *)rc;
    fail_all(c, err);
    if (!rc->closing && c->cbs.on_disconnect != NULL)
        c->cbs.on_disconnect(c, err, c->cbs_ud);
}

static void client_destroy(rconn *rc)
{
    redis_client *c = (redis_client *)rc;
    event_free(c->timeout_ev);
    rconn_release(rc);
    free(c);
}

static const rconn_ops client_ops = {
    .attached = client_attached,
    .up = client_up,
    .down = client_down,
    .destroy = client_destroy,
};

int redis_client_new(redis_client **out, struct event_base *base, const redis_config *cfg)
{
    *out = NULL;
    redis_client *c = mem_calloc(1, sizeof(*c));
    int rv = rconn_init(&c->rc, base, cfg, &client_ops);
    if (rv != 0) {
        free(c);
        return rv;
    }
    c->timeout_ev = evtimer_new(base, on_command_timeout, c);
    enter(&c->rc);
    rconn_begin(&c->rc);
    leave(&c->rc);
    *out = c;
    return 0;
}

void redis_client_free(redis_client *c)
{
    if (c == NULL || c->rc.closing)
        return;
    enter(&c->rc);
    redisAsyncContext *ac = rconn_close(&c->rc);
    fail_all(c, REDIS_E_CLOSED);
    if (ac != NULL)
        redisAsyncFree(ac);
    leave(&c->rc);
}

void redis_client_set_callbacks(redis_client *c, const redis_client_callbacks *cbs, void *user_data)
{
    if (cbs != NULL)
        c->cbs = *cbs;
    else
        memset(&c->cbs, 0, sizeof(c->cbs));
    c->cbs_ud = user_data;
}

static int check_send(const redis_client *c)
{
    if (c->rc.closing)
        return REDIS_E_CLOSED;
    if (c->rc.ac == NULL)
        return REDIS_E_DISCONNECTED;
    if (c->inflight >= c->rc.cfg.max_inflight)
        return REDIS_E_BUSY;
    return 0;
}

int redis_client_command(redis_client *c, int argc, const char *const *argv, const size_t *argvlen,
                         redis_reply_cb cb, void *user_data)
{
    if (argc <= 0 || argv == NULL)
        return REDIS_E_INVALID;
    int rv = check_send(c);
    if (rv != 0)
        return rv;
    req *q = mem_calloc(1, sizeof(*q));
    q->c = c;
    q->cb = cb;
    q->ud = user_data;
    rv = req_send(c, q, argc, (const char **)argv, argvlen);
    if (rv != 0)
        free(q);
    return rv;
}

int redis_client_commandf(redis_client *c, redis_reply_cb cb, void *user_data, const char *fmt, ...)
{
    int rv = check_send(c);
    if (rv != 0)
        return rv;
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0)
        return REDIS_E_INVALID;
    req *q = mem_calloc(1, sizeof(*q));
    q->c = c;
    q->cb = cb;
    q->ud = user_data;
    if (redisAsyncFormattedCommand(c->rc.ac, on_reply, q, cmd, (size_t)len) != REDIS_OK) {
        free(cmd);
        free(q);
        return REDIS_E_DISCONNECTED;
    }
    free(cmd);
    q->sent_ms = clock_mono_ms();
    bool was_empty = c->head == NULL;
    req_link(c, q);
    if (was_empty)
        arm_timeout(c);
    return 0;
}

int redis_client_eval(redis_client *c, const redis_script *s, int numkeys, int argc,
                      const char *const *argv, const size_t *argvlen, redis_reply_cb cb,
                      void *user_data)
{
    if (s == NULL || numkeys < 0 || argc < numkeys || (argc > 0 && argv == NULL))
        return REDIS_E_INVALID;
    int rv = check_send(c);
    if (rv != 0)
        return rv;
    req *q = mem_calloc(1, sizeof(*q));
    q->c = c;
    q->cb = cb;
    q->ud = user_data;
    q->script = s;
    snprintf(q->numkeys, sizeof(q->numkeys), "%d", numkeys);
    q->argc = argc;
    size_t n = (size_t)argc + 3, bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (argvlen != NULL ? argvlen[i] : strlen(argv[i])) + 1;
    char *block = mem_alloc(n * (sizeof(*q->argv) + sizeof(*q->argvlen)) + bytes);
    q->argv = (const char **)(void *)block;
    q->argvlen = (size_t *)(void *)(block + n * sizeof(*q->argv));
    char *p = block + n * (sizeof(*q->argv) + sizeof(*q->argvlen));
    for (int i = 0; i < argc; i++) {
        size_t len = argvlen != NULL ? argvlen[i] : strlen(argv[i]);
        memcpy(p, argv[i], len);
        p[len] = '\0';
        q->argv[3 + i] = p;
        q->argvlen[3 + i] = len;
        p += len + 1;
    }
    rv = script_send(c, q, true);
    if (rv != 0)
        req_free(q);
    return rv;
}

bool redis_client_connected(const redis_client *c)
{
    return c->rc.state == RC_CONNECTED;
}

size_t redis_client_inflight(const redis_client *c)
{
    return c->inflight;
}

void redis_client_flush(redis_client *c)
{
    if (c->rc.state == RC_CONNECTED && c->rc.ac != NULL)
        redisAsyncHandleWrite(c->rc.ac);
}

/* --- pub/sub ------------------------------------------------------------------------------- */

typedef struct sub_entry {
    char *name;   /* channel or pattern */
    bool pattern; /* PSUBSCRIBE */
} sub_entry;

struct redis_sub {
    rconn rc;                /* must be first */
    redis_sub_callbacks cbs; /* user callbacks */
    void *ud;                /* their user_data */
    sub_entry *subs;         /* kept subscriptions */
    size_t n_subs;           /* entries in use */
    size_t cap_subs;         /* allocated */
    size_t pending;          /* confirmations awaited before on_ready */
    bool ready;              /* on_ready delivered for this connection */
    bool ever_ready;         /* on_ready delivered at least once */
    char probe[80];          /* private channel re-subscribed as a liveness probe */
    struct event *probe_ev;  /* probe period (ping_interval_ms) */
    bool probe_out;          /* a probe awaits its confirmation */
    int64_t probe_sent;      /* mono ms it was sent */
};

static void sub_maybe_ready(redis_sub *s)
{
    if (s->ready || s->pending > 0 || s->rc.state != RC_CONNECTED)
        return;
    s->ready = true;
    bool again = s->ever_ready;
    s->ever_ready = true;
    if (s->cbs.on_ready != NULL)
        s->cbs.on_ready(s, again, s->ud);
}

static void on_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)privdata;
    redis_sub *s = ac->data;
    redisReply *reply = r;
    if (s == NULL || reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    enter(&s->rc);
    const char *kind = reply->element[0]->str;
    redisReply **el = reply->element;
    if (strcmp(kind, "message") == 0 && el[1]->type == REDIS_REPLY_STRING &&
        el[2]->type == REDIS_REPLY_STRING) {
        if (s->cbs.on_message != NULL)
            s->cbs.on_message(s, NULL, el[1]->str, el[1]->len, el[2]->str, el[2]->len, s->ud);
    } else if (strcmp(kind, "pmessage") == 0 && reply->elements >= 4 &&
               el[1]->type == REDIS_REPLY_STRING && el[2]->type == REDIS_REPLY_STRING &&
               el[3]->type == REDIS_REPLY_STRING) {
        if (s->cbs.on_message != NULL)
            s->cbs.on_message(s, el[1]->str, el[2]->str, el[2]->len, el[3]->str, el[3]->len, s->ud);
    } else if (strcmp(kind, "subscribe") == 0 && el[1]->type == REDIS_REPLY_STRING &&
               strcmp(el[1]->str, s->probe) == 0) {
        s->probe_out = false;
    } else if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "psubscribe") == 0) {
        if (s->pending > 0) {
            s->pending--;
            sub_maybe_ready(s);
        }
    }
    leave(&s->rc);
}

static void sub_send(redis_sub *s, const char *verb, const char *name)
{
    const char *argv[] = {verb, name};
    redisAsyncCommandArgv(s->rc.ac, on_sub_reply, NULL, 2, argv, NULL);
}

static void sub_attached(rconn *rc, redisAsyncContext *ac)
{
    send_setup(rc, ac, false);
}

/*
 * A subscribed connection answers no ordinary command in a way hiredis 0.14 can route (PING
 * gets an array reply it mistakes for a message). Subscribing again to a private channel does
 * get a confirmation through the normal path, so that is the probe: one in flight at a time,
 * sent every ping_interval_ms; unanswered for command_timeout_ms, the connection is dropped
 * and rebuilt, and the user resyncs on on_ready. A silent network failure is thus noticed in
 * seconds instead of after the TCP keepalive.
 */
static void on_probe_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    redis_sub *s = arg;
    if (s->rc.state != RC_CONNECTED || s->rc.closing)
        return;
    enter(&s->rc);
    uint32_t limit =
        s->rc.cfg.command_timeout_ms ? s->rc.cfg.command_timeout_ms : s->rc.cfg.ping_interval_ms;
    if (s->probe_out && clock_mono_ms() - s->probe_sent >= (int64_t)limit) {
        log_warn("%s: no answer from %s:%u for %u ms; reconnecting", s->rc.name, s->rc.tgt.host,
                 s->rc.tgt.port, limit);
        drop(&s->rc, REDIS_E_TIMEOUT);
    } else if (!s->probe_out) {
        s->probe_out = true;
        s->probe_sent = clock_mono_ms();
        sub_send(s, "SUBSCRIBE", s->probe);
    }
    leave(&s->rc);
}

static void sub_up(rconn *rc)
{
    redis_sub *s = (redis_sub *)rc;
    s->ready = false;
    s->pending = 0;
    s->probe_out = false;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = 0;
        for (size_t i = 0; i < s->n_subs; i++)
            if (s->subs[i].pattern == (pass == 1))
                n++;
        if (n == 0)
            continue;
        const char **argv = mem_alloc(sizeof(*argv) * (n + 1));
        argv[0] = pass == 0 ? "SUBSCRIBE" : "PSUBSCRIBE";
        size_t k = 1;
        for (size_t i = 0; i < s->n_subs; i++)
            if (s->subs[i].pattern == (pass == 1))
                argv[k++] = s->subs[i].name;
        if (redisAsyncCommandArgv(rc->ac, on_sub_reply, NULL, (int)k, argv, NULL) == REDIS_OK)
            s->pending += n;
        free(argv);
    }
    sub_maybe_ready(s);
}

static void sub_down(rconn *rc, int err)
{
    redis_sub *s = (redis_sub *)rc;
    s->ready = false;
    s->pending = 0;
    s->probe_out = false;
    if (!rc->closing && s->cbs.on_disconnect != NULL)
        s->cbs.on_disconnect(s, err, s->ud);
}

static void sub_destroy(rconn *rc)
{
    redis_sub *s = (redis_sub *)rc;
    for (size_t i = 0; i < s->n_subs; i++)
        free(s->subs[i].name);
    free(s->subs);
    if (s->probe_ev != NULL)
        event_free(s->probe_ev);
    rconn_release(rc);
    free(s);
}

static const rconn_ops sub_ops = {
    .attached = sub_attached,
    .up = sub_up,
    .down = sub_down,
    .destroy = sub_destroy,
};

int redis_sub_new(redis_sub **out, struct event_base *base, const redis_config *cfg,
                  const redis_sub_callbacks *cbs, void *user_data)
{
    *out = NULL;
    redis_sub *s = mem_calloc(1, sizeof(*s));
    int rv = rconn_init(&s->rc, base, cfg, &sub_ops);
    if (rv != 0) {
        free(s);
        return rv;
    }
    if (cbs != NULL)
        s->cbs = *cbs;
    s->ud = user_data;
    snprintf(s->probe, sizeof(s->probe), "__chat_sub_probe:%ld:%08x", (long)getpid(),
             rconn_rand(&s->rc));
    if (s->rc.cfg.ping_interval_ms > 0) {
        s->probe_ev = event_new(base, -1, EV_PERSIST, on_probe_tick, s);
        struct timeval tv = clock_ms_tv(s->rc.cfg.ping_interval_ms);
        event_add(s->probe_ev, &tv);
    }
    enter(&s->rc);
    rconn_begin(&s->rc);
    leave(&s->rc);
    *out = s;
    return 0;
}

void redis_sub_free(redis_sub *s)
{
    if (s == NULL || s->rc.closing)
        return;
    enter(&s->rc);
    if (s->probe_ev != NULL)
        event_del(s->probe_ev);
    redisAsyncContext *ac = rconn_close(&s->rc);
    if (ac != NULL)
        redisAsyncFree(ac);
    leave(&s->rc);
}

static ssize_t sub_find(const redis_sub *s, const char *name, bool pattern)
{
    for (size_t i = 0; i < s->n_subs; i++)
        if (s->subs[i].pattern == pattern && strcmp(s->subs[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

static int sub_add(redis_sub *s, const char *name, bool pattern)
{
    if (s->rc.closing || name == NULL || name[0] == '\0')
        return REDIS_E_INVALID;
    if (sub_find(s, name, pattern) >= 0)
        return 0;
    if (s->n_subs >= s->rc.cfg.max_subscriptions)
        return REDIS_E_LIMIT;
    if (s->n_subs == s->cap_subs) {
        s->cap_subs = s->cap_subs ? s->cap_subs * 2 : 8;
        s->subs = mem_realloc(s->subs, s->cap_subs * sizeof(*s->subs));
    }
    s->subs[s->n_subs].name = mem_strdup(name);
    s->subs[s->n_subs].pattern = pattern;
    s->n_subs++;
    /* Until sub_up() has run it sends the whole set; after that, send this one now. */
    if (s->rc.state == RC_CONNECTED && !s->rc.up_pending) {
        sub_send(s, pattern ? "PSUBSCRIBE" : "SUBSCRIBE", name);
        if (!s->ready)
            s->pending++;
    }
    return 0;
}

static int sub_remove(redis_sub *s, const char *name, bool pattern)
{
    if (s->rc.closing || name == NULL)
        return REDIS_E_INVALID;
    ssize_t i = sub_find(s, name, pattern);
    if (i < 0)
        return REDIS_E_INVALID;
    if (s->rc.state == RC_CONNECTED && !s->rc.up_pending)
        sub_send(s, pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE", name);
    free(s->subs[i].name);
    s->subs[i] = s->subs[s->n_subs - 1];
    s->n_subs--;
    return 0;
}

int redis_sub_subscribe(redis_sub *s, const char *channel)
{
    return sub_add(s, channel, false);
}

int redis_sub_psubscribe(redis_sub *s, const char *pattern)
{
    return sub_add(s, pattern, true);
}

int redis_sub_unsubscribe(redis_sub *s, const char *channel)
{
    return sub_remove(s, channel, false);
}

int redis_sub_punsubscribe(redis_sub *s, const char *pattern)
{
    return sub_remove(s, pattern, true);
}

bool redis_sub_ready(const redis_sub *s)
{
    return s->ready;
}

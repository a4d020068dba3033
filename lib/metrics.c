/* Prometheus metrics and their HTTP endpoint (metrics.h). */
#include "metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>

#include "mem.h"

const char *metrics_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case METRICS_E_INVALID:
        return "invalid metric name, label or buckets";
    case METRICS_E_TYPE:
        return "metric exists with another type, help or labels";
    case METRICS_E_BUCKETS:
        return "histogram exists with other buckets";
    case METRICS_E_LIMIT:
        return "too many metric series";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

const double metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t metrics_latency_buckets_n =
    sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);

typedef enum metric_type {
    MT_COUNTER = 0,
    MT_GAUGE = 1,
    MT_HISTOGRAM = 2,
} metric_type;

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* Series structs: the public handles. Doubles are kept as their bit patterns in atomics. */
struct metrics_counter {
    _Atomic uint64_t v; /* count */
};

struct metrics_gauge {
    _Atomic uint64_t bits; /* double */
};

struct metrics_histogram {
    size_t n;                 /* finite bounds */
    const double *bounds;     /* the family's bounds */
    _Atomic uint64_t *counts; /* n + 1 non-cumulative buckets; the last is (bound[n-1], +Inf] */
    _Atomic uint64_t sum;     /* double */
};

typedef struct series {
    struct series *next; /* in the family, creation order */
    char *labels;        /* rendered label pairs without braces ("" for none); the lookup key */
    union {
        metrics_counter c;
        metrics_gauge g;
        metrics_histogram h;
    } u;
} series;

typedef struct family {
    struct family *next; /* in the registry, creation order */
    char *name;          /* metric name */
    char *help;          /* HELP text */
    char *label_names;   /* label names joined by ',' (signature check) */
    metric_type type;    /* kind */
    double *bounds;      /* histogram bounds (owned) */
    size_t n_bounds;     /* their count */
    series *head;        /* series list */
    series *tail;        /* last series */
} family;

typedef struct collector {
    metrics_collect_cb cb; /* hook */
    void *ud;              /* its user_data */
} collector;

#define MAX_COLLECTORS 64

struct metrics_registry {
    pthread_mutex_t lock;                 /* families, series lists, collectors */
    family *head;                         /* families in creation order */
    family *tail;                         /* last family */
    size_t n_series;                      /* series in all */
    size_t max_series;                    /* cap */
    collector collectors[MAX_COLLECTORS]; /* render hooks */
    size_t n_collectors;                  /* in use */
};

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

int metrics_registry_new(metrics_registry **out, size_t max_series)
{
    metrics_registry *r = mem_calloc(1, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->max_series = max_series ? max_series : 10000;
    *out = r;
    return 0;
}

static void series_free(series *s, metric_type t)
{
    if (t == MT_HISTOGRAM)
        free(s->u.h.counts);
    free(s->labels);
    free(s);
}

void metrics_registry_free(metrics_registry *r)
{
    if (r == NULL)
        return;
    family *f = r->head;
    while (f != NULL) {
        family *fn = f->next;
        series *s = f->head;
        while (s != NULL) {
            series *sn = s->next;
            series_free(s, f->type);
            s = sn;
        }
        free(f->name);
        free(f->help);
        free(f->label_names);
        free(f->bounds);
        free(f);
        f = fn;
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int metrics_registry_add_collector(metrics_registry *r, metrics_collect_cb cb, void *user_data)
{
    pthread_mutex_lock(&r->lock);
    int rv = METRICS_E_LIMIT;
    if (r->n_collectors < MAX_COLLECTORS) {
        r->collectors[r->n_collectors].cb = cb;
        r->collectors[r->n_collectors].ud = user_data;
        r->n_collectors++;
        rv = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rv;
}

/* --- a growable string ----------------------------------------------------------------------- */

typedef struct sbuf {
    char *p;    /* data, NUL-terminated */
    size_t n;   /* length */
    size_t cap; /* allocated */
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
    if (b->n + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more + 1)
        cap *= 2;
    b->p = mem_realloc(b->p, cap);
    b->cap = cap;
}

static void sb_add(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* Prometheus float: shortest round-tripping form, with NaN/+Inf/-Inf spelled out. */
static void sb_double(sbuf *b, double d)
{
    if (isnan(d)) {
        sb_str(b, "NaN");
        return;
    }
    if (isinf(d)) {
        sb_str(b, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    sb_str(b, tmp);
}

/* Label values: backslash, double quote and newline escaped. */
static void sb_label_value(sbuf *b, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            sb_str(b, "\\\\");
        else if (*p == '"')
            sb_str(b, "\\\"");
        else if (*p == '\n')
            sb_str(b, "\\n");
        else
            sb_add(b, p, 1);
    }
}

/* HELP text: backslash and newline escaped. */
static void sb_help(sbuf *b, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            sb_str(b, "\\\\");
        else if (*p == '\n')
            sb_str(b, "\\n");
        else
            sb_add(b, p, 1);
    }
}

/* --- registration ------------------------------------------------------------------------ */

static bool valid_name(const char *s, bool metric)
{
    if (s == NULL || s[0] == '\0')
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (metric && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return metric || strncmp(s, "__", 2) != 0;
}

static family *find_family(metrics_registry *r, const char *name)
{
    for (family *f = r->head; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static int get_series(metrics_registry *r, metric_type type, const char *name, const char *help,
                      const char *const *labels, const double *bounds, size_t n_bounds,
                      series **out)
{
    *out = NULL;
    if (!valid_name(name, true) || help == NULL)
        return METRICS_E_INVALID;
    if (type == MT_HISTOGRAM) {
        if (bounds == NULL && n_bounds > 0)
            return METRICS_E_INVALID;
        for (size_t i = 0; i < n_bounds; i++)
            if (isnan(bounds[i]) || isinf(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                return METRICS_E_INVALID;
    }
    /* Render the label names, pairs and lookup key. */
    sbuf names = {0}, pairs = {0};
    sb_str(&names, "");
    sb_str(&pairs, "");
    int rv = 0;
    for (size_t i = 0; labels != NULL && labels[i] != NULL; i += 2) {
        const char *k = labels[i], *v = labels[i + 1];
        if (v == NULL || !valid_name(k, false) || (type == MT_HISTOGRAM && strcmp(k, "le") == 0)) {
            rv = METRICS_E_INVALID;
            goto out;
        }
        if (i > 0) {
            sb_str(&names, ",");
            sb_str(&pairs, ",");
        }
        sb_str(&names, k);
        sb_printf(&pairs, "%s=\"", k);
        sb_label_value(&pairs, v);
        sb_str(&pairs, "\"");
    }

    pthread_mutex_lock(&r->lock);
    family *f = find_family(r, name);
    if (f != NULL) {
        if (f->type != type || strcmp(f->help, help) != 0 || strcmp(f->label_names, names.p) != 0)
            rv = METRICS_E_TYPE;
        else if (type == MT_HISTOGRAM &&
                 (f->n_bounds != n_bounds ||
                  (n_bounds > 0 && memcmp(f->bounds, bounds, n_bounds * sizeof(double)) != 0)))
            rv = METRICS_E_BUCKETS;
        if (rv != 0)
            goto unlock;
        for (series *s = f->head; s != NULL; s = s->next) {
            /* Same label names in the same order: the escaped pairs identify the series. */
            if (strcmp(s->labels, pairs.p) == 0) {
                *out = s;
                goto unlock;
            }
        }
    }
    if (r->n_series >= r->max_series) {
        rv = METRICS_E_LIMIT;
        goto unlock;
    }
    if (f == NULL) {
        f = mem_calloc(1, sizeof(*f));
        f->name = mem_strdup(name);
        f->help = mem_strdup(help);
        f->label_names = mem_strdup(names.p);
        f->type = type;
        if (type == MT_HISTOGRAM && n_bounds > 0) {
            f->bounds = mem_dup(bounds, n_bounds * sizeof(double));
            f->n_bounds = n_bounds;
        }
        if (r->tail != NULL)
            r->tail->next = f;
        else
            r->head = f;
        r->tail = f;
    }
    series *s = mem_calloc(1, sizeof(*s));
    s->labels = mem_strdup(pairs.p);
    if (type == MT_HISTOGRAM) {
        s->u.h.n = f->n_bounds;
        s->u.h.bounds = f->bounds;
        s->u.h.counts = mem_calloc(f->n_bounds + 1, sizeof(_Atomic uint64_t));
        for (size_t i = 0; i <= f->n_bounds; i++)
            atomic_init(&s->u.h.counts[i], 0);
        atomic_init(&s->u.h.sum, dbits(0.0));
    } else if (type == MT_GAUGE) {
        atomic_init(&s->u.g.bits, dbits(0.0));
    } else {
        atomic_init(&s->u.c.v, 0);
    }
    if (f->tail != NULL)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    r->n_series++;
    *out = s;
unlock:
    pthread_mutex_unlock(&r->lock);
out:
    free(names.p);
    free(pairs.p);
    return rv;
}

int metrics_counter_get(metrics_registry *r, const char *name, const char *help,
                        const char *const *labels, metrics_counter **out)
{
    series *s;
    int rv = get_series(r, MT_COUNTER, name, help, labels, NULL, 0, &s);
    *out = rv == 0 ? &s->u.c : NULL;
    return rv;
}

int metrics_gauge_get(metrics_registry *r, const char *name, const char *help,
                      const char *const *labels, metrics_gauge **out)
{
    series *s;
    int rv = get_series(r, MT_GAUGE, name, help, labels, NULL, 0, &s);
    *out = rv == 0 ? &s->u.g : NULL;
    return rv;
}

int metrics_histogram_get(metrics_registry *r, const char *name, const char *help,
                          const char *const *labels, const double *bounds, size_t n_bounds,
                          metrics_histogram **out)
{
    series *s;
    int rv = get_series(r, MT_HISTOGRAM, name, help, labels, bounds, n_bounds, &s);
    *out = rv == 0 ? &s->u.h : NULL;
    return rv;
}

/* --- updates ------------------------------------------------------------------------------- */

void metrics_counter_inc(metrics_counter *c)
{
    atomic_fetch_add_explicit(&c->v, 1, memory_order_relaxed);
}

void metrics_counter_add(metrics_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t metrics_counter_value(const metrics_counter *c)
{
    return atomic_load_explicit(&((metrics_counter *)c)->v, memory_order_relaxed);
}

void metrics_gauge_set(metrics_gauge *g, double v)
{
    atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

static void add_double(_Atomic uint64_t *bits, double delta)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(bits, &old, dbits(bitsd(old) + delta),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

void metrics_gauge_add(metrics_gauge *g, double delta)
{
    add_double(&g->bits, delta);
}

double metrics_gauge_value(const metrics_gauge *g)
{
    return bitsd(atomic_load_explicit(&((metrics_gauge *)g)->bits, memory_order_relaxed));
}

void metrics_histogram_observe(metrics_histogram *h, double v)
{
    /* Binary search for the first bound >= v ("le" buckets); NaN lands in +Inf. */
    size_t lo = 0, hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->counts[lo], 1, memory_order_relaxed);
    add_double(&h->sum, v);
}

uint64_t metrics_histogram_count(const metrics_histogram *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= h->n; i++)
        n += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    return n;
}

double metrics_histogram_sum(const metrics_histogram *h)
{
    return bitsd(atomic_load_explicit(&((metrics_histogram *)h)->sum, memory_order_relaxed));
}

/* --- rendering ----------------------------------------------------------------------------- */

static void render_labels(sbuf *b, const char *pairs, const char *extra_k, const char *extra_v)
{
    bool any = pairs[0] != '\0' || extra_k != NULL;
    if (!any)
        return;
    sb_str(b, "{");
    sb_str(b, pairs);
    if (extra_k != NULL) {
        if (pairs[0] != '\0')
            sb_str(b, ",");
        sb_printf(b, "%s=\"%s\"", extra_k, extra_v);
    }
    sb_str(b, "}");
}

int metrics_render(metrics_registry *r, char **out, size_t *len)
{
    /* Collectors run without the lock: they usually call metrics_*_get or set gauges. */
    collector cs[MAX_COLLECTORS];
    pthread_mutex_lock(&r->lock);
    size_t nc = r->n_collectors;
    memcpy(cs, r->collectors, nc * sizeof(cs[0]));
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < nc; i++)
        cs[i].cb(r, cs[i].ud);

    sbuf b = {0};
    sb_str(&b, "");
    pthread_mutex_lock(&r->lock);
    for (family *f = r->head; f != NULL; f = f->next) {
        sb_printf(&b, "# HELP %s ", f->name);
        sb_help(&b, f->help);
        sb_printf(&b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (series *s = f->head; s != NULL; s = s->next) {
            if (f->type == MT_COUNTER) {
                sb_str(&b, f->name);
                render_labels(&b, s->labels, NULL, NULL);
                sb_printf(&b, " %llu\n", (unsigned long long)metrics_counter_value(&s->u.c));
            } else if (f->type == MT_GAUGE) {
                sb_str(&b, f->name);
                render_labels(&b, s->labels, NULL, NULL);
                sb_str(&b, " ");
                sb_double(&b, metrics_gauge_value(&s->u.g));
                sb_str(&b, "\n");
            } else {
                const metrics_histogram *h = &s->u.h;
                uint64_t cum = 0;
                for (size_t i = 0; i <= h->n; i++) {
                    cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
                    sbuf le = {0};
                    if (i < h->n)
                        sb_double(&le, h->bounds[i]);
                    else
                        sb_str(&le, "+Inf");
                    sb_printf(&b, "%s_bucket", f->name);
                    render_labels(&b, s->labels, "le", le.p);
                    sb_printf(&b, " %llu\n", (unsigned long long)cum);
                    free(le.p);
                }
                sb_printf(&b, "%s_sum", f->name);
                render_labels(&b, s->labels, NULL, NULL);
                sb_str(&b, " ");
                sb_double(&b, metrics_histogram_sum(h));
                sb_printf(&b, "\n%s_count", f->name);
                render_labels(&b, s->labels, NULL, NULL);
                /* The count equals the +Inf bucket by construction. */
                sb_printf(&b, " %llu\n", (unsigned long long)cum);
            }
        }
    }
    pthread_mutex_unlock(&r->lock);
    *out = b.p;
    *len = b.n;
    return 0;
}

/* --- HTTP ---------------------------------------------------------------------------------- */

struct metrics_http {
    struct evhttp *http;      /* evhttp server */
    metrics_registry *reg;    /* borrowed */
    uint16_t port;            /* bound port */
    metrics_health_cb health; /* or NULL */
    void *health_ud;          /* its user_data */
};

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                       const char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "Cache-Control", "no-store");
    struct evbuffer *buf = evbuffer_new();
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
        evbuffer_add(buf, body, len);
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    metrics_http *h = arg;
    const char *uri = evhttp_request_get_uri(req);
    const struct evhttp_uri *parsed = evhttp_request_get_evhttp_uri(req);
    const char *path = parsed != NULL ? evhttp_uri_get_path(parsed) : uri;
    if (path == NULL)
        path = "";
    if (strcmp(path, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        metrics_render(h->reg, &text, &len);
        reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
        free(text);
    } else if (strcmp(path, "/healthz") == 0) {
        bool ok = h->health == NULL || h->health(h->health_ud) == 0;
        if (ok)
            reply_text(req, 200, "OK", "text/plain; charset=utf-8", "ok\n", 3);
        else
            reply_text(req, 503, "Service Unavailable", "text/plain; charset=utf-8", "unhealthy\n",
                       10);
    } else {
        reply_text(req, 404, "Not Found", "text/plain; charset=utf-8", "not found\n", 10);
    }
}

int metrics_http_new(metrics_http **out, struct event_base *base, metrics_registry *r,
                     const char *host, uint16_t port)
{
    *out = NULL;
    if (base == NULL || r == NULL)
        return METRICS_E_INVALID;
    metrics_http *h = mem_calloc(1, sizeof(*h));
    h->reg = r;
    h->http = evhttp_new(base);
    if (h->http == NULL) {
        free(h);
        return -ENOMEM;
    }
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(h->http, 10);
    evhttp_set_max_headers_size(h->http, 16384);
    evhttp_set_max_body_size(h->http, 0);
    evhttp_set_gencb(h->http, on_request, h);
    struct evhttp_bound_socket *bs =
        evhttp_bind_socket_with_handle(h->http, host ? host : "0.0.0.0", port);
    if (bs == NULL) {
        int e = errno ? errno : EADDRINUSE;
        evhttp_free(h->http);
        free(h);
        return -e;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    h->port = port;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    *out = h;
    return 0;
}

uint16_t metrics_http_port(const metrics_http *h)
{
    return h->port;
}

void metrics_http_set_health(metrics_http *h, metrics_health_cb cb, void *user_data)
{
    h->health = cb;
    h->health_ud = user_data;
}

void metrics_http_free(metrics_http *h)
{
    if (h == NULL)
        return;
    evhttp_free(h->http);
    free(h);
}

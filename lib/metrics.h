/*
 * metrics.h: Prometheus metrics (text exposition format 0.0.4) served over plain HTTP.
 *
 * A registry holds metric families (counter, gauge, histogram), each a set of series told
 * apart by label values. Look a series up once (metrics_*_get, which takes a lock and may
 * allocate) and keep the pointer: updates (inc/add/set/observe) are lock-free atomics, safe
 * from any thread. Series live as long as the registry; there is no unregister, and the
 * number of series is capped (max_series) so a label fed from user input cannot exhaust
 * memory -- beyond the cap, get returns METRICS_E_LIMIT.
 *
 * metrics_http serves GET /metrics and GET /healthz on a given event_base with libevent's
 * evhttp; rendering reads the atomics, so workers are never paused by a scrape.
 */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 success, negative failure. */
enum {
    METRICS_E_INVALID = -1700, /* bad metric or label name, bad bounds */
    METRICS_E_TYPE = -1701,    /* the name exists with another type, help or label names */
    METRICS_E_BUCKETS = -1702, /* a histogram of that name exists with other buckets */
    METRICS_E_LIMIT = -1703,   /* max_series reached */
};

/* Returns a static description of |err| (a METRICS_E_* or -errno). */
const char *metrics_strerror(int err);

typedef struct metrics_registry metrics_registry;
typedef struct metrics_counter metrics_counter;
typedef struct metrics_gauge metrics_gauge;
typedef struct metrics_histogram metrics_histogram;

/* Creates a registry holding at most |max_series| series in all (0 = 10000). */
int metrics_registry_new(metrics_registry **out, size_t max_series);

/* Frees |r| and every series; no update may run concurrently. */
void metrics_registry_free(metrics_registry *r);

/*
 * Finds or creates the series |name|{labels}. |labels| is NULL or a NULL-terminated list of
 * name/value pairs: (const char *[]){"method", "Send", "code", "OK", NULL}. Values are any
 * UTF-8 (escaped on output); names follow Prometheus rules ([a-zA-Z_][a-zA-Z0-9_]*, no "__"
 * prefix; metric names may also contain ':'). All series of one name must use the same label
 * names in the same order, and the same |help|. Strings are copied. On success |*out| stays
 * valid until the registry is freed. Returns 0, METRICS_E_INVALID, METRICS_E_TYPE,
 * METRICS_E_LIMIT.
 */
int metrics_counter_get(metrics_registry *r, const char *name, const char *help,
                        const char *const *labels, metrics_counter **out);
int metrics_gauge_get(metrics_registry *r, const char *name, const char *help,
                      const char *const *labels, metrics_gauge **out);
/* Histogram buckets: |n_bounds| finite upper bounds in strictly increasing order (+Inf is
 * implicit). Every series of one name must use the same bounds (METRICS_E_BUCKETS). */
int metrics_histogram_get(metrics_registry *r, const char *name, const char *help,
                          const char *const *labels, const double *bounds, size_t n_bounds,
                          metrics_histogram **out);

/* Updates; lock-free, any thread. */
void metrics_counter_inc(metrics_counter *c);
void metrics_counter_add(metrics_counter *c, uint64_t n);
void metrics_gauge_set(metrics_gauge *g, double v);
void metrics_gauge_add(metrics_gauge *g, double delta);
void metrics_histogram_observe(metrics_histogram *h, double v);

/* Reads (tests, status RPCs). */
uint64_t metrics_counter_value(const metrics_counter *c);
double metrics_gauge_value(const metrics_gauge *g);
uint64_t metrics_histogram_count(const metrics_histogram *h);
double metrics_histogram_sum(const metrics_histogram *h);

/* Latency buckets in seconds, 0.5 ms .. 10 s. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_n;

/* A hook run just before every render (without the registry lock held, so it may call
 * metrics_*_get), to set gauges that are computed rather than tracked (queue depths, lag).
 * It runs on the rendering thread: the HTTP server's loop. */
typedef void (*metrics_collect_cb)(metrics_registry *r, void *user_data);

/* Adds a collector (kept for the registry's life). Returns 0 or METRICS_E_LIMIT (max 64). */
int metrics_registry_add_collector(metrics_registry *r, metrics_collect_cb cb, void *user_data);

/* Renders every family in the text exposition format into a malloc'd NUL-terminated buffer
 * (|*out|, freed by the caller with free()); |*len| excludes the NUL. Returns 0. */
int metrics_render(metrics_registry *r, char **out, size_t *len);

/* --- HTTP ---------------------------------------------------------------------------------- */

typedef struct metrics_http metrics_http;

/* Health check for /healthz: return 0 when healthy (200 "ok"), anything else for 503. */
typedef int (*metrics_health_cb)(void *user_data);

/* Serves |r| on |host|:|port| (port 0 picks one; see metrics_http_port) on |base|. |base| and
 * |r| must outlive the server. Returns 0, METRICS_E_INVALID, or -errno when binding fails. */
int metrics_http_new(metrics_http **out, struct event_base *base, metrics_registry *r,
                     const char *host, uint16_t port);

/* The bound port. */
uint16_t metrics_http_port(const metrics_http *h);

/* Installs a health check (NULL = always healthy). Call on the server's loop thread. */
void metrics_http_set_health(metrics_http *h, metrics_health_cb cb, void *user_data);

/* Stops serving and frees |h|. Call on the loop thread. */
void metrics_http_free(metrics_http *h);

#ifdef __cplusplus
}
#endif

#endif /* METRICS_H */

/*
 * presence_bench: load and latency for svc-presence, on our client runtime (rpc_client.h) and
 * the generated PresenceService stubs. Tokens are minted locally with the service's secret
 * (auth_token_mint), one per simulated user.
 *
 *   presence_bench heartbeat --target H:P --secret S [--users N] [--threads T] [--conns C]
 *                  [--inflight K] [--seconds S] [--warmup W]
 *       Heartbeats (ttl 60 s, device "d0") round-robin over N users, K in flight per thread.
 *       The first pass brings each user online; after it every heartbeat is a TTL refresh,
 *       the steady state of a real deployment. Prints calls/s and latency percentiles. Every
 *       response is checked: ttl_ms as asked, expires_at_ms = now + ttl (+-1 s, Redis and this
 *       machine share a clock); a call that ends OK without such a response counts as an error.
 *
 *   presence_bench get --target H:P --secret S [--users N] [--batch B] [--threads T]
 *                  [--conns C] [--inflight K] [--seconds S] [--warmup W]
 *       GetPresence of B random users out of N. Prints calls/s and latency percentiles. Every
 *       response is checked: the users asked, each once, in the order of their first mention.
 *
 *   presence_bench watch --target H:P --watch-target H:P --secret S [--users N] [--rate R]
 *                  [--conns C] [--seconds S]
 *       Opens ceil(N/500) WatchPresence streams on --watch-target covering N users (each user
 *       watched once), waits for every snapshot, then flips R users per second (Heartbeat to
 *       bring one online, SetOffline to take it offline) through --target, at most one change
 *       in flight per user, and measures each change from the moment the RPC is sent to the
 *       moment the watcher receives it. Prints changes, latency percentiles and changes not
 *       seen within 5 s.
 *
 * Output is one "key=value ..." line on stdout; exit status 0 when there were no errors.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "auth.h"
#include "chat/v1/presence.rpc-c.h"
#include "mem.h"
#include "rpc_client.h"

#define MAX_CONNS 64
#define MAX_INFLIGHT 4096
#define WATCH_CHUNK 500

typedef struct opts {
    const char *mode;
    const char *target;
    const char *watch_target;
    const char *secret;
    int users;
    int threads;
    int conns;
    int inflight;
    int seconds;
    int warmup;
    int batch;
    int rate;
} opts;

static opts O = {
    .users = 10000,
    .threads = 1,
    .conns = 4,
    .inflight = 128,
    .seconds = 10,
    .warmup = 2,
    .batch = 500,
    .rate = 500,
};

static const char *user_prefix = "bench-"; /* watch mode: "wbench-", users of its own */
static char **user_ids;                    /* "<prefix><i>" */
static rpc_mdlist *user_md;                /* authorization per user */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- latency samples ------------------------------------------------------------------------ */

typedef struct samples {
    uint32_t *us;
    size_t n, cap;
} samples;

static void samples_add(samples *s, int64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1 << 16;
        s->us = mem_realloc(s->us, s->cap * sizeof(*s->us));
    }
    s->us[s->n++] = (uint32_t)(ns / 1000);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const samples *s, double p)
{
    if (s->n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
    return s->us[i] / 1000.0;
}

static void samples_merge(samples *into, const samples *from)
{
    for (size_t i = 0; i < from->n; i++)
        samples_add(into, (int64_t)from->us[i] * 1000);
}

/* --- unary load (heartbeat, get) --------------------------------------------------------- */

typedef struct worker worker;

typedef struct slot {
    worker *w;
    int64_t t0;
    int64_t wall0_ms;       /* CLOCK_REALTIME when sent (heartbeat check) */
    bool answered;          /* a response arrived and was right */
    int asked[WATCH_CHUNK]; /* get: the user indexes asked, in order */
} slot;

struct worker {
    int index;
    struct event_base *base;
    rpc_channel *ch[MAX_CONNS];
    slot slots[MAX_INFLIGHT];
    uint64_t next_user; /* round robin (heartbeat) */
    unsigned rng;       /* random users (get) */
    bool measuring;
    bool stopping;
    int active;          /* calls in flight */
    uint64_t ok, errors; /* while measuring */
    uint64_t bad;        /* responses that failed their check (all, warm-up included) */
    uint64_t all_ok;     /* including warm-up, for CPU per call */
    int last_error;
    char last_message[128];
    samples lat;
    int64_t t0, t1;
    bool done;
};

static void start_one(slot *s);

#define HB_TTL_MS 60000

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long user_index(const char *id);

static void on_hb_message(rpc_ccall *call, const Chat__V1__HeartbeatResponse *msg, void *ud)
{
    (void)call;
    slot *s = ud;
    int64_t lo = s->wall0_ms + HB_TTL_MS - 1000, hi = wall_ms() + HB_TTL_MS + 1000;
    if (msg->ttl_ms == HB_TTL_MS && msg->expires_at_ms >= lo && msg->expires_at_ms <= hi)
        s->answered = true;
    else
        s->w->bad++;
}

static void on_get_message(rpc_ccall *call, const Chat__V1__GetPresenceResponse *msg, void *ud)
{
    (void)call;
    slot *s = ud;
    /* the response lists the users asked, each once, in the order of first mention: walk the
     * request along the response, skipping repeats of users already answered */
    size_t k = 0;
    bool good = msg->n_users >= 1;
    for (size_t i = 0; i < msg->n_users && good; i++) {
        long u = user_index(msg->users[i]->user_id);
        while (k < (size_t)O.batch && s->asked[k] != u)
            k++;
        good = k < (size_t)O.batch && msg->users[i]->online == (msg->users[i]->online_devices > 0);
    }
    if (good)
        s->answered = true;
    else
        s->w->bad++;
}

static void unary_closed(slot *s, const rpc_status *st)
{
    worker *w = s->w;
    w->active--;
    rpc_status checked = *st;
    if (st->code == RPC_STATUS_OK && !s->answered) {
        checked.code = RPC_STATUS_INTERNAL;
        checked.message = "OK without a valid response";
    }
    st = &checked;
    if (st->code == RPC_STATUS_OK)
        w->all_ok++;
    if (w->measuring) {
        if (st->code == RPC_STATUS_OK) {
            w->ok++;
            samples_add(&w->lat, now_ns() - s->t0);
        } else {
            w->errors++;
            w->last_error = st->code;
            snprintf(w->last_message, sizeof(w->last_message), "%s", st->message);
        }
    }
    if (!w->stopping)
        start_one(s);
    else if (w->active == 0)
        w->done = true;
}

static void on_hb_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    unary_closed(ud, st);
}

static void on_get_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    unary_closed(ud, st);
}

static void start_one(slot *s)
{
    worker *w = s->w;
    size_t idx = (size_t)(s - w->slots);
    rpc_channel *ch = w->ch[idx % (size_t)O.conns];
    rpc_call_opts co = {.timeout_ms = 10000, .wait_for_ready = true};
    s->t0 = now_ns();
    s->answered = false;
    int rv;
    if (strcmp(O.mode, "heartbeat") == 0) {
        /* threads interleave over the users so that each user is refreshed evenly */
        size_t u = (size_t)((w->next_user++ * (uint64_t)O.threads + (uint64_t)w->index) %
                            (uint64_t)O.users);
        co.metadata = &user_md[u];
        s->wall0_ms = wall_ms();
        Chat__V1__HeartbeatRequest req = CHAT__V1__HEARTBEAT_REQUEST__INIT;
        req.device_id = "d0";
        req.ttl_ms = HB_TTL_MS;
        const Chat__V1__PresenceService__Heartbeat__RpcClientCallbacks cb = {
            .on_message = on_hb_message, .on_close = on_hb_close};
        rv = chat__v1__presence_service__rpc_heartbeat(NULL, ch, &req, &co, &cb, s);
    } else {
        char *ids[WATCH_CHUNK];
        for (int i = 0; i < O.batch; i++) {
            s->asked[i] = (int)(rand_r(&w->rng) % (unsigned)O.users);
            ids[i] = user_ids[s->asked[i]];
        }
        co.metadata = &user_md[rand_r(&w->rng) % (unsigned)O.users];
        Chat__V1__GetPresenceRequest req = CHAT__V1__GET_PRESENCE_REQUEST__INIT;
        req.n_user_ids = (size_t)O.batch;
        req.user_ids = ids;
        const Chat__V1__PresenceService__GetPresence__RpcClientCallbacks cb = {
            .on_message = on_get_message, .on_close = on_get_close};
        rv = chat__v1__presence_service__rpc_get_presence(NULL, ch, &req, &co, &cb, s);
    }
    if (rv == 0)
        w->active++;
    else
        fprintf(stderr, "presence_bench: cannot start a call: %s\n", rpc_strerror(rv));
}

static void on_warm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    w->measuring = true;
    w->t0 = now_ns();
}

static void on_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    worker *w = arg;
    w->measuring = false;
    w->stopping = true;
    w->t1 = now_ns();
    if (w->active == 0)
        w->done = true;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    w->base = event_base_new();
    w->rng = 12345u + (unsigned)w->index;
    for (int i = 0; i < O.conns; i++)
        if (rpc_channel_new(&w->ch[i], w->base, O.target, NULL) != 0) {
            fprintf(stderr, "presence_bench: bad target %s\n", O.target);
            exit(2);
        }
    for (int i = 0; i < O.inflight; i++) {
        w->slots[i].w = w;
        start_one(&w->slots[i]);
    }
    struct timeval warm = {O.warmup, 0}, end = {O.warmup + O.seconds, 0};
    struct event *ew = evtimer_new(w->base, on_warm, w), *ee = evtimer_new(w->base, on_end, w);
    evtimer_add(ew, &warm);
    evtimer_add(ee, &end);
    rpc_run_until(w->base, &w->done, (int64_t)(O.warmup + O.seconds + 30) * 1000);
    event_free(ew);
    event_free(ee);
    for (int i = 0; i < O.conns; i++)
        rpc_channel_free(w->ch[i]);
    event_base_free(w->base);
    return NULL;
}

static int run_unary(void)
{
    worker *ws = mem_calloc((size_t)O.threads, sizeof(*ws));
    pthread_t *th = mem_calloc((size_t)O.threads, sizeof(*th));
    for (int i = 0; i < O.threads; i++) {
        ws[i].index = i;
        pthread_create(&th[i], NULL, worker_main, &ws[i]);
    }
    samples all = {0};
    uint64_t ok = 0, errors = 0, all_ok = 0, bad = 0;
    double secs = 0;
    int last_error = 0;
    const char *last_message = "";
    for (int i = 0; i < O.threads; i++) {
        pthread_join(th[i], NULL);
        samples_merge(&all, &ws[i].lat);
        ok += ws[i].ok;
        all_ok += ws[i].all_ok;
        bad += ws[i].bad;
        errors += ws[i].errors;
        if (ws[i].errors) {
            last_error = ws[i].last_error;
            last_message = ws[i].last_message;
        }
        double s = (double)(ws[i].t1 - ws[i].t0) / 1e9;
        if (s > secs)
            secs = s;
    }
    qsort(all.us, all.n, sizeof(*all.us), cmp_u32);
    printf("mode=%s users=%d threads=%d conns=%d inflight=%d batch=%d seconds=%.1f calls=%llu "
           "errors=%llu calls_per_s=%.0f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f "
           "max_ms=%.3f all_calls=%llu bad_responses=%llu\n",
           O.mode, O.users, O.threads, O.conns, O.inflight,
           strcmp(O.mode, "get") == 0 ? O.batch : 0, secs, (unsigned long long)ok,
           (unsigned long long)errors, secs > 0 ? (double)ok / secs : 0, pct_ms(&all, 0.5),
           pct_ms(&all, 0.9), pct_ms(&all, 0.99), pct_ms(&all, 0.999), pct_ms(&all, 1.0),
           (unsigned long long)all_ok, (unsigned long long)bad);
    if (errors)
        fprintf(stderr, "presence_bench: last error %s: %s\n", rpc_status_name(last_error),
                last_message);
    return errors || bad ? 1 : 0;
}

/* --- watch latency ------------------------------------------------------------------------- */

typedef struct wuser {
    bool online;     /* as last seen by the watcher */
    bool inflight;   /* a change was sent and not yet seen */
    bool want;       /* the state that change makes */
    int64_t sent_ns; /* when it was sent */
} wuser;

typedef struct wbench {
    struct event_base *base;
    rpc_channel *wch[MAX_CONNS]; /* to the watched instance */
    rpc_channel *cch[MAX_CONNS]; /* to the changing instance */
    wuser *u;
    int streams, snapshots, closed;
    bool measuring, stopping, done;
    int64_t t0, t1;
    unsigned rng;
    uint64_t sent, seen, rpc_errors, unexpected;
    int inflight;
    samples lat;
    struct event *tick;
    int64_t next_change_ns; /* pacing */
} wbench;

static wbench WB;

static long user_index(const char *id)
{
    return strtol(id + strlen(user_prefix), NULL, 10);
}

static void on_watch_message(rpc_ccall *call, const Chat__V1__WatchPresenceResponse *msg, void *ud)
{
    (void)call;
    (void)ud;
    int64_t now = now_ns();
    if (msg->snapshot) {
        for (size_t i = 0; i < msg->n_users; i++)
            WB.u[user_index(msg->users[i]->user_id)].online = msg->users[i]->online;
        WB.snapshots++;
        return;
    }
    for (size_t i = 0; i < msg->n_users; i++) {
        wuser *u = &WB.u[user_index(msg->users[i]->user_id)];
        u->online = msg->users[i]->online;
        if (u->inflight && u->online == u->want) {
            u->inflight = false;
            WB.inflight--;
            WB.seen++;
            if (WB.measuring)
                samples_add(&WB.lat, now - u->sent_ns);
        } else if (!u->inflight) {
            WB.unexpected++;
        }
    }
}

static void on_watch_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    (void)ud;
    WB.closed++;
    if (!WB.stopping)
        fprintf(stderr, "presence_bench: watch stream ended: %s %s\n", rpc_status_name(st->code),
                st->message);
}

static void on_change_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    (void)ud;
    if (st->code != RPC_STATUS_OK) {
        WB.rpc_errors++;
        fprintf(stderr, "presence_bench: change failed: %s %s\n", rpc_status_name(st->code),
                st->message);
    }
}

static void send_change(void)
{
    for (int tries = 0; tries < 16; tries++) {
        size_t i = (size_t)(rand_r(&WB.rng) % (unsigned)O.users);
        wuser *u = &WB.u[i];
        if (u->inflight)
            continue;
        u->inflight = true;
        u->want = !u->online;
        u->sent_ns = now_ns();
        WB.inflight++;
        WB.sent++;
        rpc_channel *ch = WB.cch[i % (size_t)O.conns];
        rpc_call_opts co = {.timeout_ms = 10000, .wait_for_ready = true, .metadata = &user_md[i]};
        if (u->want) {
            Chat__V1__HeartbeatRequest req = CHAT__V1__HEARTBEAT_REQUEST__INIT;
            req.device_id = "w0";
            req.ttl_ms = 120000;
            const Chat__V1__PresenceService__Heartbeat__RpcClientCallbacks cb = {
                .on_close = on_change_close};
            chat__v1__presence_service__rpc_heartbeat(NULL, ch, &req, &co, &cb, NULL);
        } else {
            Chat__V1__SetOfflineRequest req = CHAT__V1__SET_OFFLINE_REQUEST__INIT;
            req.device_id = "w0";
            const Chat__V1__PresenceService__SetOffline__RpcClientCallbacks cb = {
                .on_close = on_change_close};
            chat__v1__presence_service__rpc_set_offline(NULL, ch, &req, &co, &cb, NULL);
        }
        return;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    int64_t now = now_ns();
    if (WB.snapshots < WB.streams) {
        WB.next_change_ns = now;
        return;
    }
    if (!WB.measuring && !WB.stopping && WB.t0 == 0) {
        WB.measuring = true;
        WB.t0 = now;
        WB.next_change_ns = now;
    }
    if (WB.measuring) {
        int64_t period = 1000000000LL / O.rate;
        while (WB.next_change_ns <= now) {
            send_change();
            WB.next_change_ns += period;
        }
        if (now - WB.t0 >= (int64_t)O.seconds * 1000000000LL) {
            WB.measuring = false;
            WB.t1 = now;
        }
    } else if (WB.t1 != 0 && !WB.stopping) {
        /* drain: wait up to 5 s for the changes still in flight */
        if (WB.inflight == 0 || now - WB.t1 >= 5000000000LL) {
            WB.stopping = true;
            WB.done = true;
        }
    }
}

static int run_watch(void)
{
    WB.base = event_base_new();
    WB.rng = 4242;
    WB.u = mem_calloc((size_t)O.users, sizeof(*WB.u));
    for (int i = 0; i < O.conns; i++) {
        if (rpc_channel_new(&WB.wch[i], WB.base, O.watch_target, NULL) != 0 ||
            rpc_channel_new(&WB.cch[i], WB.base, O.target, NULL) != 0) {
            fprintf(stderr, "presence_bench: bad target\n");
            return 2;
        }
    }
    WB.streams = (O.users + WATCH_CHUNK - 1) / WATCH_CHUNK;
    rpc_ccall **calls = mem_calloc((size_t)WB.streams, sizeof(*calls));
    for (int s = 0; s < WB.streams; s++) {
        int first = s * WATCH_CHUNK;
        int n = O.users - first < WATCH_CHUNK ? O.users - first : WATCH_CHUNK;
        Chat__V1__WatchPresenceRequest req = CHAT__V1__WATCH_PRESENCE_REQUEST__INIT;
        req.n_user_ids = (size_t)n;
        req.user_ids = &user_ids[first];
        rpc_call_opts co = {.wait_for_ready = true, .metadata = &user_md[first]};
        const Chat__V1__PresenceService__WatchPresence__RpcClientCallbacks cb = {
            .on_message = on_watch_message, .on_close = on_watch_close};
        if (chat__v1__presence_service__rpc_watch_presence(&calls[s], WB.wch[s % O.conns], &req,
                                                           &co, &cb, NULL) != 0) {
            fprintf(stderr, "presence_bench: cannot start a watch\n");
            return 2;
        }
    }
    WB.tick = event_new(WB.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 1000};
    event_add(WB.tick, &tv);
    int64_t t_start = now_ns();
    rpc_run_until(WB.base, &WB.done, (int64_t)(O.seconds + 60) * 1000);
    int64_t snap_s = WB.t0 ? WB.t0 - t_start : 0;
    for (int s = 0; s < WB.streams; s++)
        if (calls[s] && WB.closed < WB.streams)
            rpc_ccall_cancel(calls[s]);
    qsort(WB.lat.us, WB.lat.n, sizeof(*WB.lat.us), cmp_u32);
    double secs = WB.t1 && WB.t0 ? (double)(WB.t1 - WB.t0) / 1e9 : 0;
    printf("mode=watch users=%d streams=%d rate=%d seconds=%.1f snapshots_ms=%.0f changes=%llu "
           "seen=%llu missing=%d unexpected=%llu rpc_errors=%llu p50_ms=%.3f p90_ms=%.3f "
           "p99_ms=%.3f max_ms=%.3f\n",
           O.users, WB.streams, O.rate, secs, (double)snap_s / 1e6, (unsigned long long)WB.sent,
           (unsigned long long)WB.seen, WB.inflight, (unsigned long long)WB.unexpected,
           (unsigned long long)WB.rpc_errors, pct_ms(&WB.lat, 0.5), pct_ms(&WB.lat, 0.9),
           pct_ms(&WB.lat, 0.99), pct_ms(&WB.lat, 1.0));
    return WB.inflight || WB.rpc_errors || WB.snapshots < WB.streams ? 1 : 0;
}

/* --- main ---------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: presence_bench heartbeat|get|watch --target H:P --secret S "
                    "[--watch-target H:P] [--users N] [--threads T] [--conns C] [--inflight K] "
                    "[--seconds S] [--warmup W] [--batch B] [--rate R]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    O.mode = argv[1];
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc)
            usage();
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--target") == 0)
            O.target = v;
        else if (strcmp(k, "--watch-target") == 0)
            O.watch_target = v;
        else if (strcmp(k, "--secret") == 0)
            O.secret = v;
        else if (strcmp(k, "--users") == 0)
            O.users = atoi(v);
        else if (strcmp(k, "--threads") == 0)
            O.threads = atoi(v);
        else if (strcmp(k, "--conns") == 0)
            O.conns = atoi(v);
        else if (strcmp(k, "--inflight") == 0)
            O.inflight = atoi(v);
        else if (strcmp(k, "--seconds") == 0)
            O.seconds = atoi(v);
        else if (strcmp(k, "--warmup") == 0)
            O.warmup = atoi(v);
        else if (strcmp(k, "--batch") == 0)
            O.batch = atoi(v);
        else if (strcmp(k, "--rate") == 0)
            O.rate = atoi(v);
        else
            usage();
    }
    bool watch = strcmp(O.mode, "watch") == 0;
    if (O.target == NULL || O.secret == NULL || O.users < 1 || O.threads < 1 || O.conns < 1 ||
        O.conns > MAX_CONNS || O.inflight < 1 || O.inflight > MAX_INFLIGHT || O.seconds < 1 ||
        O.warmup < 0 || O.batch < 1 || O.batch > WATCH_CHUNK || O.rate < 1 ||
        (watch && O.watch_target == NULL) ||
        (!watch && strcmp(O.mode, "heartbeat") != 0 && strcmp(O.mode, "get") != 0))
        usage();
    if (watch)
        user_prefix = "wbench-";
    user_ids = mem_calloc((size_t)O.users, sizeof(*user_ids));
    user_md = mem_calloc((size_t)O.users, sizeof(*user_md));
    for (int i = 0; i < O.users; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s%d", watch ? "wbench-" : "bench-", i);
        user_ids[i] = mem_strdup(id);
        char *tok;
        if (auth_token_mint(O.secret, strlen(O.secret), id, 3600, &tok) != 0) {
            fprintf(stderr, "presence_bench: cannot mint a token (secret too short?)\n");
            return 2;
        }
        size_t n = strlen(tok) + 8;
        char *bearer = mem_alloc(n);
        snprintf(bearer, n, "Bearer %s", tok);
        rpc_mdlist_add_str(&user_md[i], "authorization", bearer);
        free(bearer);
        free(tok);
    }
    return watch ? run_watch() : run_unary();
}

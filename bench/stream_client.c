/*
 * stream_client: messages per second on one bidi stream
 * (grpc.testing.TestService/FullDuplexCall) for bench/run.sh, on our client
 * runtime (rpc_client.h), so every server is measured by the same client.
 *
 *   stream_client --target HOST:PORT [--seconds N] [--warmup N] [--window N] [--size BYTES]
 *
 * Every request carries a |size|-byte payload and asks for one |size|-byte
 * response. |window| requests are kept in flight: 1 is ping-pong (bound by
 * the round trip), larger windows measure throughput. Responses come back in
 * order on one stream, so a message's latency is its response's arrival time
 * minus its request's send time.
 *
 * Prints one line and exits 0 when the stream ended with OK:
 *   window=W size=S messages=N seconds=T msgs_per_s=X p50_us=A p99_us=B mean_us=C
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "grpc/testing/test.rpc-c.h"
#include "mem.h"
#include "rpc_client.h"

#define MAX_WINDOW 4096

typedef struct bench {
    rpc_ccall *call;       /* the one stream */
    int window;            /* requests kept in flight */
    int64_t *sent_ns;      /* ring of send times of in-flight requests, |window| entries */
    int head, inflight;    /* ring position and fill */
    bool measuring;        /* between warm-up and the end */
    bool stopping;         /* half-closed: send nothing more */
    int64_t t0, t1;        /* measured interval, ns */
    uint64_t count;        /* responses received while measuring */
    uint32_t *lat_us;      /* latencies while measuring */
    size_t n_lat, cap_lat; /* used, allocated */
    Grpc__Testing__StreamingOutputCallRequest req; /* the request sent every time */
    bool done;                                     /* on_close ran */
    int code;                                      /* final status */
    char message[256];                             /* final status message */
} bench;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int send_one(bench *b)
{
    int rv = grpc__testing__test_service__rpc_full_duplex_call_send_request(b->call, &b->req);
    if (rv < 0)
        return rv;
    b->sent_ns[(b->head + b->inflight) % b->window] = now_ns();
    b->inflight++;
    return 0;
}

static void on_message(rpc_ccall *call, const Grpc__Testing__StreamingOutputCallResponse *msg,
                       void *user_data)
{
    (void)call;
    (void)msg;
    bench *b = user_data;
    if (b->inflight == 0)
        return; /* more responses than requests: the server is wrong; on_close will tell */
    int64_t sent = b->sent_ns[b->head];
    b->head = (b->head + 1) % b->window;
    b->inflight--;
    if (b->measuring) {
        b->count++;
        if (b->n_lat == b->cap_lat) {
            b->cap_lat = b->cap_lat ? b->cap_lat * 2 : 1 << 16;
            b->lat_us = mem_realloc(b->lat_us, b->cap_lat * sizeof(*b->lat_us));
        }
        b->lat_us[b->n_lat++] = (uint32_t)((now_ns() - sent) / 1000);
    }
    if (!b->stopping)
        send_one(b);
}

static void on_close(rpc_ccall *call, const rpc_status *st, void *user_data)
{
    (void)call;
    bench *b = user_data;
    b->code = st->code;
    snprintf(b->message, sizeof(b->message), "%s", st->message);
    b->call = NULL;
    b->done = true;
}

static void on_warm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bench *b = arg;
    b->measuring = true;
    b->t0 = now_ns();
}

static void on_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bench *b = arg;
    b->measuring = false;
    b->stopping = true;
    b->t1 = now_ns();
    if (b->call)
        rpc_ccall_close_send(b->call);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t percentile(const uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s --target HOST:PORT [--seconds N] [--warmup N] [--window N] "
            "[--size BYTES]\n",
            argv0);
}

int main(int argc, char **argv)
{
    const char *target = NULL;
    int seconds = 10, warmup = 1, window = 1, size = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL) {
            usage(argv[0]);
            return 2;
        }
        if (strcmp(a, "--target") == 0)
            target = v;
        else if (strcmp(a, "--seconds") == 0)
            seconds = atoi(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atoi(v);
        else if (strcmp(a, "--window") == 0)
            window = atoi(v);
        else if (strcmp(a, "--size") == 0)
            size = atoi(v);
        else {
            usage(argv[0]);
            return 2;
        }
        i++;
    }
    if (target == NULL || seconds < 1 || warmup < 0 || window < 1 || window > MAX_WINDOW ||
        size < 0 || size > (1 << 20)) {
        usage(argv[0]);
        return 2;
    }

    struct event_base *base = event_base_new();
    rpc_channel *ch;
    if (base == NULL || rpc_channel_new(&ch, base, target, NULL) < 0) {
        fprintf(stderr, "stream_client: bad target %s\n", target);
        return 2;
    }

    bench b = {.window = window};
    b.sent_ns = mem_calloc((size_t)window, sizeof(*b.sent_ns));
    Grpc__Testing__Payload payload = GRPC__TESTING__PAYLOAD__INIT;
    payload.body.len = (size_t)size;
    payload.body.data = mem_calloc(1, (size_t)size + 1);
    Grpc__Testing__ResponseParameters rp = GRPC__TESTING__RESPONSE_PARAMETERS__INIT;
    rp.size = size;
    Grpc__Testing__ResponseParameters *rps[1] = {&rp};
    Grpc__Testing__StreamingOutputCallRequest req =
        GRPC__TESTING__STREAMING_OUTPUT_CALL_REQUEST__INIT;
    req.n_response_parameters = 1;
    req.response_parameters = rps;
    req.payload = &payload;
    b.req = req;

    const rpc_call_opts opts = {.wait_for_ready = true};
    const Grpc__Testing__TestService__FullDuplexCall__RpcClientCallbacks cb = {
        .on_message = on_message,
        .on_close = on_close,
    };
    if (grpc__testing__test_service__rpc_full_duplex_call(&b.call, ch, &opts, &cb, &b) < 0) {
        fprintf(stderr, "stream_client: cannot start the call\n");
        return 1;
    }
    for (int i = 0; i < window; i++)
        send_one(&b);

    struct event *warm = evtimer_new(base, on_warm, &b);
    struct event *end = evtimer_new(base, on_end, &b);
    struct timeval tw = {warmup, 0}, te = {warmup + seconds, 0};
    evtimer_add(warm, &tw);
    evtimer_add(end, &te);

    int rv = rpc_run_until(base, &b.done, (int64_t)(warmup + seconds + 30) * 1000);
    event_free(warm);
    event_free(end);
    int exit_code = 0;
    if (rv < 0 || b.code != RPC_STATUS_OK || b.t1 == 0) {
        fprintf(stderr, "stream_client: stream ended with %s (%s)%s\n", rpc_status_name(b.code),
                b.message, rv < 0 ? ", timed out" : "");
        exit_code = 1;
    } else {
        double secs = (double)(b.t1 - b.t0) / 1e9;
        qsort(b.lat_us, b.n_lat, sizeof(*b.lat_us), cmp_u32);
        double sum = 0;
        for (size_t i = 0; i < b.n_lat; i++)
            sum += b.lat_us[i];
        printf("window=%d size=%d messages=%llu seconds=%.2f msgs_per_s=%.0f p50_us=%u "
               "p99_us=%u mean_us=%.0f\n",
               window, size, (unsigned long long)b.count, secs, (double)b.count / secs,
               percentile(b.lat_us, b.n_lat, 0.50), percentile(b.lat_us, b.n_lat, 0.99),
               b.n_lat ? sum / (double)b.n_lat : 0.0);
    }
    rpc_channel_free(ch);
    event_base_free(base);
    free(b.lat_us);
    free(b.sent_ns);
    free(payload.body.data);
    return exit_code;
}

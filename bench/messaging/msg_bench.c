/*
 * msg_bench: load client for svc-messaging on lib/rpc_client.h and the generated stubs.
 *
 *   msg_bench send   --addr H:P --brokers B --secret S [--rate 2000] [--seconds 10] [--senders 8]
 *       send -> SendResultFrame latency over Connect at a fixed rate (open loop)
 *   msg_bench fanout --addr H:P --brokers B --secret S [--members 100] [--rate 20] [--seconds 10]
 *       send -> DeliveryFrame latency at every member device (all online, all acking)
 *   msg_bench conns  --addr H:P --secret S --streams 20000 [--pid PID] [--hold 5]
 *       N idle Connect streams (Hello'd), 100 per HTTP/2 connection; server RSS from /proc
 *
 * The chat is created by producing ChatEvent{chat_created} to chat.events (the service
 * learns membership from the log). Numbers are printed; nothing is pass/fail.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "chat/v1/events.pb-c.h"
#include "chat/v1/messaging.rpc-c.h"
#include "kafka.h"
#include "rpc_client.h"
#include "rpc_server.h"

typedef struct dev {
    rpc_ccall *call;
    int idx;
    char user[32];
    bool welcomed;
    bool closed;
    uint64_t acked;
} dev;

static struct {
    const char *mode, *addr, *brokers, *secret;
    int rate, seconds, senders, members, streams, hold;
    long pid;
    struct event_base *base;
    rpc_channel **chans;
    int n_chans;
    dev *devs;
    int n_devs, welcomed, closed;
    uint64_t chat_id;
    double *lat;
    size_t n_lat, cap_lat;
    uint64_t sent, results, failed, deliveries;
    int64_t t_end;
    int64_t t_start;          /* sending started, us */
    double worst_ms[64];      /* slowest send->ack per second of sending (by send time) */
    uint64_t rejected_in[64]; /* not-OK results per second of arrival */
    double carry;
    uint64_t cmid_seq;
    bool done;
} B;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void lat_add(double us)
{
    if (B.n_lat == B.cap_lat) {
        B.cap_lat = B.cap_lat ? B.cap_lat * 2 : 65536;
        B.lat = realloc(B.lat, B.cap_lat * sizeof(double));
    }
    B.lat[B.n_lat++] = us;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what)
{
    if (B.n_lat == 0) {
        printf("%s: no samples\n", what);
        return;
    }
    qsort(B.lat, B.n_lat, sizeof(double), cmp_d);
#define PCT(p) (B.lat[(size_t)((p) / 100.0 * (double)(B.n_lat - 1))] / 1000.0)
    printf("%s: n=%zu p50=%.2fms p90=%.2fms p99=%.2fms p99.9=%.2fms max=%.2fms\n", what, B.n_lat,
           PCT(50), PCT(90), PCT(99), PCT(99.9), B.lat[B.n_lat - 1] / 1000.0);
}

static long rss_kib(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

static void dev_send(dev *d, const Chat__V1__ConnectRequest *r)
{
    if (!d->closed)
        chat__v1__messaging_service__rpc_connect_send_request(d->call, r);
}

static void on_msg(rpc_ccall *call, const Chat__V1__ConnectResponse *m, void *ud)
{
    (void)call;
    dev *d = ud;
    switch (m->frame_case) {
    case CHAT__V1__CONNECT_RESPONSE__FRAME_WELCOME:
        d->welcomed = true;
        B.welcomed++;
        break;
    case CHAT__V1__CONNECT_RESPONSE__FRAME_SEND_RESULT: {
        B.results++;
        if (m->send_result->status != CHAT__V1__SEND_STATUS__SEND_STATUS_OK) {
            B.failed++;
            int64_t s = (now_us() - B.t_start) / 1000000;
            if (s >= 0 && s < 64)
                B.rejected_in[s]++;
            break;
        }
        int64_t t0 = 0; /* cmid: b-<us>-<n> */
        sscanf(m->send_result->client_message_id, "b-%" SCNd64, &t0);
        if (strcmp(B.mode, "send") == 0) {
            double us = (double)(now_us() - t0);
            lat_add(us);
            int64_t s = (t0 - B.t_start) / 1000000;
            if (s >= 0 && s < 64 && us / 1000.0 > B.worst_ms[s])
                B.worst_ms[s] = us / 1000.0;
        }
        break;
    }
    case CHAT__V1__CONNECT_RESPONSE__FRAME_DELIVERY: {
        Chat__V1__DeliveryFrame *f = m->delivery;
        if (f->event_case == CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_POSTED) {
            B.deliveries++;
            int64_t t0 = 0;
            if (strcmp(B.mode, "fanout") == 0 &&
                sscanf(f->message_posted->body, "t=%" SCNd64, &t0) == 1)
                lat_add((double)(now_us() - t0));
        }
        Chat__V1__AckFrame a = CHAT__V1__ACK_FRAME__INIT;
        a.session_seq = f->session_seq;
        Chat__V1__ConnectRequest r = CHAT__V1__CONNECT_REQUEST__INIT;
        r.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_ACK;
        r.ack = &a;
        dev_send(d, &r);
        break;
    }
    default:
        break;
    }
}

static void on_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    dev *d = ud;
    d->closed = true;
    B.closed++;
    if (st->code != 0 && B.closed <= 5)
        fprintf(stderr, "stream %d (%s) ended: %s %s\n", d->idx, d->user, rpc_status_name(st->code),
                st->message);
}

static int dev_open(dev *d, rpc_channel *ch)
{
    char *tok = NULL;
    if (auth_token_mint(B.secret, strlen(B.secret), d->user, 3600, &tok) != 0)
        return -1;
    char hdr[1024];
    snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
    free(tok);
    rpc_mdlist md = {0};
    rpc_mdlist_add_str(&md, "authorization", hdr);
    rpc_call_opts opts = {.metadata = &md, .wait_for_ready = true};
    Chat__V1__MessagingService__Connect__RpcClientCallbacks cb = {.on_message = on_msg,
                                                                  .on_close = on_close};
    int rv = chat__v1__messaging_service__rpc_connect(&d->call, ch, &opts, &cb, d);
    rpc_mdlist_clear(&md);
    if (rv != 0)
        return rv;
    Chat__V1__Hello h = CHAT__V1__HELLO__INIT;
    char devid[32];
    snprintf(devid, sizeof(devid), "bench-%d", d->idx);
    h.device_id = devid;
    Chat__V1__ConnectRequest r = CHAT__V1__CONNECT_REQUEST__INIT;
    r.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_HELLO;
    r.hello = &h;
    dev_send(d, &r);
    return 0;
}

static void send_one(dev *d)
{
    char cmid[64], body[64];
    int64_t t = now_us();
    snprintf(cmid, sizeof(cmid), "b-%" PRId64 "-%" PRIu64, t, ++B.cmid_seq);
    snprintf(body, sizeof(body), "t=%" PRId64, t);
    Chat__V1__SendFrame s = CHAT__V1__SEND_FRAME__INIT;
    s.client_message_id = cmid;
    s.chat_id = B.chat_id;
    s.body = body;
    Chat__V1__ConnectRequest r = CHAT__V1__CONNECT_REQUEST__INIT;
    r.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_SEND;
    r.send = &s;
    dev_send(d, &r);
    B.sent++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (now_us() >= B.t_end) {
        B.done = true;
        return;
    }
    /* Open loop: as many sends as the elapsed time calls for, whatever the timer's jitter. */
    static int64_t start;
    if (start == 0)
        start = now_us();
    uint64_t due = (uint64_t)((double)(now_us() - start) * B.rate / 1e6);
    int n_senders = strcmp(B.mode, "send") == 0 ? B.senders : 1;
    while (B.sent < due)
        send_one(&B.devs[B.sent % (uint64_t)n_senders]);
}

static void on_delivered(kafka_producer *p, const kafka_delivery *d, void *ud)
{
    (void)p;
    *(int *)ud = d->err == 0 ? 1 : -1;
}

/* Produces chat_created for B.chat_id with the given members; waits for the report. */
static int create_chat(char **members, size_t n)
{
    kafka_config kc;
    kafka_config_init(&kc);
    kc.brokers = B.brokers;
    kc.name = "bench-producer";
    kafka_producer *p;
    if (kafka_producer_new(&p, B.base, &kc, NULL, NULL) != 0)
        return -1;
    Chat__V1__Chat chat = CHAT__V1__CHAT__INIT;
    chat.chat_id = B.chat_id;
    chat.kind = CHAT__V1__CHAT_KIND__CHAT_KIND_GROUP;
    chat.creator_id = members[0];
    chat.created_at_ms = (int64_t)time(NULL) * 1000;
    chat.member_count = (uint32_t)n;
    chat.n_member_ids = n;
    chat.member_ids = members;
    Chat__V1__ChatEvent ev = CHAT__V1__CHAT_EVENT__INIT;
    ev.event_id = B.chat_id ^ 0x55;
    ev.chat_id = B.chat_id;
    ev.produced_at_ms = chat.created_at_ms;
    ev.origin_site = "a";
    ev.producer = "msg_bench";
    ev.actor_id = members[0];
    ev.event_case = CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED;
    ev.chat_created = &chat;
    size_t len = chat__v1__chat_event__get_packed_size(&ev);
    uint8_t *buf = malloc(len);
    chat__v1__chat_event__pack(&ev, buf);
    char key[24];
    snprintf(key, sizeof(key), "%" PRIu64, B.chat_id);
    int res = 0;
    int rv = kafka_producer_send(p, "chat.events", KAFKA_PARTITION_ANY, key, strlen(key), buf, len,
                                 NULL, 0, on_delivered, &res);
    free(buf);
    if (rv == 0) {
        bool fin = false;
        for (int i = 0; i < 200 && res == 0; i++) {
            struct timeval tv = {0, 50000};
            event_base_loopexit(B.base, &tv);
            event_base_dispatch(B.base);
        }
        (void)fin;
    }
    kafka_producer_free(p);
    return res == 1 ? 0 : -1;
}

static void run_for(int64_t ms);

static int probe_code;
static void on_probe_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    (void)ud;
    probe_code = st->code;
}

/* True once the service knows the chat: a non-member's Send is PERMISSION_DENIED, not
 * NOT_FOUND (the service starts consuming at the latest offsets, so an early chat_created may
 * have been missed: then it is produced again). */
static bool chat_known(char **members, size_t n)
{
    for (int attempt = 0; attempt < 60; attempt++) {
        char *tok = NULL;
        auth_token_mint(B.secret, strlen(B.secret), "probe-nonmember", 600, &tok);
        char hdr[1024];
        snprintf(hdr, sizeof(hdr), "Bearer %s", tok);
        free(tok);
        rpc_mdlist md = {0};
        rpc_mdlist_add_str(&md, "authorization", hdr);
        rpc_call_opts opts = {.metadata = &md, .wait_for_ready = true, .timeout_ms = 5000};
        Chat__V1__SendRequest req = CHAT__V1__SEND_REQUEST__INIT;
        req.client_message_id = "probe";
        req.chat_id = B.chat_id;
        req.body = "probe";
        Chat__V1__MessagingService__Send__RpcClientCallbacks cb = {.on_close = on_probe_close};
        probe_code = -1;
        chat__v1__messaging_service__rpc_send(NULL, B.chans[0], &req, &opts, &cb, NULL);
        rpc_mdlist_clear(&md);
        for (int i = 0; i < 300 && probe_code < 0; i++)
            run_for(10);
        if (probe_code == RPC_STATUS_PERMISSION_DENIED)
            return true;
        if (attempt % 4 == 3 && create_chat(members, n) != 0)
            return false;
        run_for(500);
    }
    return false;
}

static void run_for(int64_t ms)
{
    int64_t end = now_us() + ms * 1000;
    while (now_us() < end) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(B.base, &tv);
        event_base_dispatch(B.base);
    }
}

static void run_until_welcomed(int n, int64_t ms)
{
    int64_t end = now_us() + ms * 1000;
    while (B.welcomed + B.closed < n && now_us() < end) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(B.base, &tv);
        event_base_dispatch(B.base);
    }
}

static const char *arg(int argc, char **argv, const char *name, const char *def)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return def;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: msg_bench send|fanout|conns --addr H:P [--brokers B] --secret S "
                        "[--rate N] [--seconds N] [--senders N] [--members N] [--streams N] "
                        "[--pid PID] [--hold S]\n");
        return 2;
    }
    B.mode = argv[1];
    B.addr = arg(argc, argv, "--addr", "127.0.0.1:50052");
    B.brokers = arg(argc, argv, "--brokers", "127.0.0.1:9092");
    B.secret = arg(argc, argv, "--secret", getenv("JWT_SECRET"));
    B.rate = atoi(arg(argc, argv, "--rate", strcmp(B.mode, "send") == 0 ? "2000" : "20"));
    B.seconds = atoi(arg(argc, argv, "--seconds", "10"));
    B.senders = atoi(arg(argc, argv, "--senders", "8"));
    B.members = atoi(arg(argc, argv, "--members", "100"));
    B.streams = atoi(arg(argc, argv, "--streams", "1000"));
    B.hold = atoi(arg(argc, argv, "--hold", "5"));
    B.pid = atol(arg(argc, argv, "--pid", "0"));
    if (B.secret == NULL) {
        fprintf(stderr, "--secret or JWT_SECRET needed\n");
        return 2;
    }
    B.base = event_base_new();
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    B.chat_id = ((uint64_t)rand() << 31 ^ (uint64_t)rand()) | 1;
    bool conns = strcmp(B.mode, "conns") == 0;
    B.n_devs = conns ? B.streams : strcmp(B.mode, "send") == 0 ? B.senders : B.members;
    B.devs = calloc((size_t)B.n_devs, sizeof(dev));
    B.n_chans = (B.n_devs + 99) / 100;
    B.chans = calloc((size_t)B.n_chans, sizeof(*B.chans));
    rpc_channel_config cc;
    rpc_channel_config_init(&cc);
    for (int i = 0; i < B.n_chans; i++)
        if (rpc_channel_new(&B.chans[i], B.base, B.addr, &cc) != 0)
            return 1;
    char **members = calloc((size_t)B.n_devs, sizeof(char *));
    for (int i = 0; i < B.n_devs; i++) {
        B.devs[i].idx = i;
        snprintf(B.devs[i].user, sizeof(B.devs[i].user), "%s%d", conns ? "c" : "m", i);
        members[i] = B.devs[i].user;
    }
    if (!conns) {
        if (create_chat(members, (size_t)B.n_devs) != 0) {
            fprintf(stderr, "could not produce chat_created to %s\n", B.brokers);
            return 1;
        }
        if (!chat_known(members, (size_t)B.n_devs)) {
            fprintf(stderr, "the service never learned the chat\n");
            return 1;
        }
    }
    long rss0 = B.pid ? rss_kib(B.pid) : -1;
    int64_t t0 = now_us();
    for (int i = 0; i < B.n_devs; i++) {
        dev_open(&B.devs[i], B.chans[i / 100]);
        if (i % 500 == 499) /* let the loop breathe while opening */
            run_for(5);
    }
    run_until_welcomed(B.n_devs, 120000);
    printf("%s: %d/%d streams welcomed in %.1f s (%d ended)\n", B.mode, B.welcomed, B.n_devs,
           (now_us() - t0) / 1e6, B.closed);
    if (conns) {
        run_for((int64_t)B.hold * 1000);
        long rss1 = B.pid ? rss_kib(B.pid) : -1;
        printf("conns: server RSS %ld KiB before, %ld KiB with %d streams: %.1f KiB/stream "
               "(%d still open)\n",
               rss0, rss1, B.welcomed, rss1 > 0 ? (double)(rss1 - rss0) / B.welcomed : 0.0,
               B.n_devs - B.closed);
        return 0;
    }
    struct event *tick = event_new(B.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 1000};
    event_add(tick, &tv);
    B.t_start = now_us();
    B.t_end = B.t_start + (int64_t)B.seconds * 1000000;
    run_for((int64_t)B.seconds * 1000);
    event_del(tick);
    run_for(2000); /* drain results and deliveries */
    double secs = B.seconds;
    printf("%s: rate target %d msg/s, sent %" PRIu64 " (%.0f/s), results %" PRIu64
           " (not OK: %" PRIu64 "), deliveries %" PRIu64 " (expected %" PRIu64 ")\n",
           B.mode, B.rate, B.sent, B.sent / secs, B.results, B.failed, B.deliveries,
           strcmp(B.mode, "fanout") == 0 ? B.sent * (uint64_t)B.n_devs
                                         : B.sent * (uint64_t)B.senders);
    report(strcmp(B.mode, "send") == 0 ? "send->ack" : "send->delivered");
    if (strcmp(B.mode, "send") == 0) {
        /* when the tail happened: one stall or a steady spread */
        printf("send: slowest ack (ms) / not-OK results per second:");
        for (int i = 0; i < B.seconds && i < 64; i++)
            printf(" %.0f/%" PRIu64, B.worst_ms[i], B.rejected_in[i]);
        printf("\n");
    }
    return 0;
}

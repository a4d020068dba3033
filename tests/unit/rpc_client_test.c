/*
 * Unit tests of lib/rpc_client.c: client-only behaviour, against peers the test scripts itself
 * on the same event loop (no server of ours): a refused port, a TCP listener that never
 * answers, one that accepts and closes (backoff timing), and a small nghttp2 server session
 * that answers each stream the way a test asks (status mapping, Trailers-Only, missing
 * grpc-status, oversized and unparsable messages, GOAWAY, gzip) and records what the client
 * sent (request headers, RST_STREAM codes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "grpc/testing/messages.pb-c.h"
#include "clock.h"
#include "rpc_client.h"
#include "rpc_wire.h"

static const rpc_method_desc m_unary = {"UnaryCall", "/grpc.testing.TestService/UnaryCall",
                                        RPC_UNARY, &grpc__testing__simple_request__descriptor,
                                        &grpc__testing__simple_response__descriptor};
static const rpc_method_desc m_bidi = {"FullDuplexCall", "/grpc.testing.TestService/FullDuplexCall",
                                       RPC_BIDI_STREAMING,
                                       &grpc__testing__streaming_output_call_request__descriptor,
                                       &grpc__testing__streaming_output_call_response__descriptor};

/* ------------------------------------------------------------------------------------------ */
/* the scripted peer                                                                           */

typedef enum peer_mode {
    PEER_SILENT, /* accept, never write */
    PEER_CLOSE,  /* accept and close at once */
    PEER_H2,     /* HTTP/2 server session; streams answered by |answer| */
} peer_mode;

struct peer;
struct pconn;

#define MAX_HDRS 32
#define MAX_STREAMS 32

typedef struct pstream {
    int32_t id;             /* stream id */
    int nhdrs;              /* request headers recorded */
    char *names[MAX_HDRS];  /* owned */
    char *values[MAX_HDRS]; /* owned */
    uint8_t body[1 << 16];  /* request body (first 64 KiB) */
    size_t body_len;        /* bytes in |body| */
    size_t body_total;      /* request body bytes received in all */
    bool ended;             /* END_STREAM from the client */
    int rst;                /* RST_STREAM code from the client, -1 none */
    /* response being sent */
    const uint8_t *out;          /* body to send */
    size_t out_len, out_off;     /* its size and progress */
    const char *const *trailers; /* name, value, ..., NULL: sent after the body */
} pstream;

/* Called when a stream's request is complete (or its headers arrived, with answer_early). */
typedef void (*answer_fn)(struct pconn *pc, pstream *st);

typedef struct pconn {
    struct peer *p;
    int fd;
    struct event *ev;
    nghttp2_session *ng;
    pstream streams[MAX_STREAMS];
    int nstreams;
    bool dead;
} pconn;

typedef struct peer {
    struct event_base *base;
    peer_mode mode;
    int lfd;             /* listening socket */
    uint16_t port;       /* its port */
    struct event *lev;   /* accept event (NULL in PEER_SILENT: the kernel completes TCP) */
    int64_t accepts[32]; /* accept times, ms */
    int naccepts;        /* connections accepted */
    pconn *conns[8];     /* PEER_H2 connections */
    int nconns;
    int held_fds[8];   /* PEER_SILENT/unused fds kept open */
    answer_fn answer;  /* PEER_H2 behaviour */
    int pings;         /* PINGs received (not ACKs) */
    bool answer_early; /* answer on the request headers instead of END_STREAM */
    bool big_window;   /* advertise 1 GiB flow-control windows (large requests) */
} peer;

static pstream *pc_stream(pconn *pc, int32_t id, bool create)
{
    for (int i = 0; i < pc->nstreams; i++)
        if (pc->streams[i].id == id)
            return &pc->streams[i];
    if (!create || pc->nstreams == MAX_STREAMS)
        return NULL;
    pstream *st = &pc->streams[pc->nstreams++];
    memset(st, 0, sizeof(*st));
    st->id = id;
    st->rst = -1;
    return st;
}

static const char *ps_header(const pstream *st, const char *name)
{
    for (int i = 0; i < st->nhdrs; i++)
        if (strcmp(st->names[i], name) == 0)
            return st->values[i];
    return NULL;
}

static ssize_t p_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)ng;
    (void)flags;
    pconn *pc = ud;
    ssize_t n = send(pc->fd, data, len, MSG_NOSIGNAL);
    if (n < 0)
        return errno == EAGAIN ? NGHTTP2_ERR_WOULDBLOCK : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static int p_on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                       void *ud)
{
    (void)ng;
    (void)flags;
    pstream *st = pc_stream(ud, frame->hd.stream_id, true);
    if (st && st->nhdrs < MAX_HDRS) {
        st->names[st->nhdrs] = strndup((const char *)name, namelen);
        st->values[st->nhdrs] = strndup((const char *)value, valuelen);
        st->nhdrs++;
    }
    return 0;
}

static int p_on_data(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
                     size_t len, void *ud)
{
    (void)ng;
    (void)flags;
    pstream *st = pc_stream(ud, id, true);
    if (st) {
        st->body_total += len;
        size_t take = sizeof(st->body) - st->body_len;
        if (take > len)
            take = len;
        memcpy(st->body + st->body_len, data, take);
        st->body_len += take;
    }
    return 0;
}

static int p_on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *ud)
{
    (void)ng;
    pconn *pc = ud;
    if (frame->hd.type == NGHTTP2_PING && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
        pc->p->pings++;
    pstream *st = pc_stream(pc, frame->hd.stream_id, false);
    if (st == NULL)
        return 0;
    if (frame->hd.type == NGHTTP2_RST_STREAM) {
        st->rst = (int)frame->rst_stream.error_code;
        return 0;
    }
    bool end = (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
               (frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
    if (end)
        st->ended = true;
    bool headers = frame->hd.type == NGHTTP2_HEADERS;
    if (pc->p->answer && ((pc->p->answer_early && headers) || (!pc->p->answer_early && end)))
        pc->p->answer(pc, st);
    return 0;
}

static ssize_t p_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    pstream *st = pc_stream(ud, id, false);
    size_t n = st->out_len - st->out_off;
    if (n > length)
        n = length;
    memcpy(buf, st->out + st->out_off, n);
    st->out_off += n;
    if (st->out_off == st->out_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->trailers) {
            nghttp2_nv nv[8];
            size_t k = 0;
            for (; st->trailers[2 * k] && k < 8; k++) {
                nv[k].name = (uint8_t *)(uintptr_t)st->trailers[2 * k];
                nv[k].namelen = strlen(st->trailers[2 * k]);
                nv[k].value = (uint8_t *)(uintptr_t)st->trailers[2 * k + 1];
                nv[k].valuelen = strlen(st->trailers[2 * k + 1]);
                nv[k].flags = NGHTTP2_NV_FLAG_NONE;
            }
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(ng, id, nv, k);
        }
    }
    return (ssize_t)n;
}

/* Answers |st|: headers (":status", then name/value pairs, NULL-ended), then |body| (may be
 * NULL) and |trailers| (may be NULL). No body and no trailers: the headers end the stream. */
static void p_respond(pconn *pc, pstream *st, const char *status, const char *const *hdrs,
                      const uint8_t *body, size_t body_len, const char *const *trailers)
{
    nghttp2_nv nv[12];
    size_t k = 0;
    nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)(uintptr_t)status, 7, strlen(status),
                           NGHTTP2_NV_FLAG_NONE};
    for (size_t i = 0; hdrs && hdrs[2 * i] && k < 12; i++)
        nv[k++] =
            (nghttp2_nv){(uint8_t *)(uintptr_t)hdrs[2 * i], (uint8_t *)(uintptr_t)hdrs[2 * i + 1],
                         strlen(hdrs[2 * i]), strlen(hdrs[2 * i + 1]), NGHTTP2_NV_FLAG_NONE};
    st->out = body;
    st->out_len = body ? body_len : 0;
    st->out_off = 0;
    st->trailers = trailers;
    if (body == NULL && trailers == NULL) {
        nghttp2_submit_response(pc->ng, st->id, nv, k, NULL);
    } else {
        nghttp2_data_provider prd = {.read_callback = p_read_body};
        nghttp2_submit_response(pc->ng, st->id, nv, k, &prd);
    }
}

static void pc_flush(pconn *pc)
{
    if (!pc->dead && nghttp2_session_send(pc->ng) != 0)
        pc->dead = true;
}

static void p_conn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    pconn *pc = arg;
    uint8_t buf[16384];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        pc->dead = true;
        event_del(pc->ev);
        return;
    }
    if (nghttp2_session_mem_recv(pc->ng, buf, (size_t)n) < 0) {
        pc->dead = true;
        event_del(pc->ev);
        return;
    }
    pc_flush(pc);
}

static void p_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    peer *p = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (p->naccepts < 32)
        p->accepts[p->naccepts] = clock_mono_ms();
    p->naccepts++;
    if (p->mode == PEER_CLOSE) {
        close(fd);
        return;
    }
    pconn *pc = calloc(1, sizeof(*pc));
    pc->p = p;
    pc->fd = fd;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, p_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, p_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, p_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, p_on_frame_recv);
    nghttp2_session_server_new(&pc->ng, cbs, pc);
    nghttp2_session_callbacks_del(cbs);
    if (p->big_window) {
        nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30}};
        nghttp2_submit_settings(pc->ng, NGHTTP2_FLAG_NONE, iv, 1);
        nghttp2_session_set_local_window_size(pc->ng, NGHTTP2_FLAG_NONE, 0, 1 << 30);
    } else {
        nghttp2_submit_settings(pc->ng, NGHTTP2_FLAG_NONE, NULL, 0);
    }
    pc->ev = event_new(p->base, fd, EV_READ | EV_PERSIST, p_conn_cb, pc);
    event_add(pc->ev, NULL);
    pc_flush(pc);
    if (p->nconns < 8)
        p->conns[p->nconns++] = pc;
}

static void peer_start(peer *p, struct event_base *base, peer_mode mode)
{
    memset(p, 0, sizeof(*p));
    p->base = base;
    p->mode = mode;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(p->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t alen = sizeof(a);
    getsockname(p->lfd, (struct sockaddr *)&a, &alen);
    p->port = ntohs(a.sin_port);
    assert_int_equal(listen(p->lfd, 16), 0);
    if (mode != PEER_SILENT) {
        p->lev = event_new(base, p->lfd, EV_READ | EV_PERSIST, p_accept_cb, p);
        event_add(p->lev, NULL);
    }
}

static void peer_stop(peer *p)
{
    for (int i = 0; i < p->nconns; i++) {
        pconn *pc = p->conns[i];
        for (int s = 0; s < pc->nstreams; s++)
            for (int h = 0; h < pc->streams[s].nhdrs; h++) {
                free(pc->streams[s].names[h]);
                free(pc->streams[s].values[h]);
            }
        nghttp2_session_del(pc->ng);
        event_free(pc->ev);
        close(pc->fd);
        free(pc);
    }
    if (p->lev)
        event_free(p->lev);
    close(p->lfd);
}

static char *peer_target(const peer *p)
{
    static char buf[32];
    snprintf(buf, sizeof(buf), "127.0.0.1:%u", p->port);
    return buf;
}

/* A port nothing listens on. */
static uint16_t closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    socklen_t alen = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    close(fd);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------------------------------ */
/* client side recording                                                                       */

typedef struct rec {
    int closes;                         /* on_close count (must end at 1) */
    int code;                           /* status */
    char message[256];                  /* status message */
    int64_t closed_at;                  /* ms */
    int headers;                        /* on_headers count */
    int messages;                       /* on_message count */
    bool compressed;                    /* flag of the last message */
    int32_t last_size;                  /* payload size of the last SimpleResponse */
    char trailer[64];                   /* value of trailer "x-t" */
    bool done;                          /* closes > 0 */
    rpc_channel *free_channel_on_close; /* frees this channel from inside on_close */
} rec;

static void r_headers(rpc_ccall *call, const rpc_mdlist *md, void *ud)
{
    (void)call;
    (void)md;
    ((rec *)ud)->headers++;
}

static void r_message(rpc_ccall *call, const ProtobufCMessage *msg, void *ud)
{
    rec *r = ud;
    r->messages++;
    r->compressed = rpc_ccall_message_compressed(call);
    if (msg->descriptor == &grpc__testing__simple_response__descriptor) {
        const Grpc__Testing__SimpleResponse *resp = (const Grpc__Testing__SimpleResponse *)msg;
        r->last_size = resp->payload ? (int32_t)resp->payload->body.len : 0;
    }
}

static void r_close(rpc_ccall *call, const rpc_status *st, void *ud)
{
    (void)call;
    rec *r = ud;
    r->closes++;
    r->code = st->code;
    snprintf(r->message, sizeof(r->message), "%s", st->message);
    r->closed_at = clock_mono_ms();
    const rpc_md *t = rpc_mdlist_get(st->trailers, "x-t");
    if (t)
        snprintf(r->trailer, sizeof(r->trailer), "%s", (const char *)t->value);
    r->done = true;
    if (r->free_channel_on_close)
        rpc_channel_free(r->free_channel_on_close);
}

static const rpc_ccall_callbacks rcb = {r_headers, r_message, r_close};

typedef struct fixture {
    struct event_base *base;
    peer p;
    bool peer_started;
    rpc_channel *ch;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->ch)
        rpc_channel_free(f->ch);
    if (f->peer_started)
        peer_stop(&f->p);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void start_peer(fixture *f, peer_mode mode, answer_fn answer)
{
    peer_start(&f->p, f->base, mode);
    f->p.answer = answer;
    f->peer_started = true;
}

static void open_channel(fixture *f, const char *target, const rpc_channel_config *cfg)
{
    assert_int_equal(rpc_channel_new(&f->ch, f->base, target, cfg), 0);
}

/* Starts a unary call with a small request and half-closes. */
static rpc_ccall *unary(fixture *f, const rpc_call_opts *opts, rec *r)
{
    Grpc__Testing__SimpleRequest req;
    grpc__testing__simple_request__init(&req);
    req.response_size = 10;
    rpc_ccall *call = NULL;
    assert_int_equal(rpc_ccall_start(&call, f->ch, &m_unary, opts, &rcb, r), 0);
    assert_int_equal(rpc_ccall_send(call, &req.base), 0);
    assert_int_equal(rpc_ccall_close_send(call), 0);
    return call;
}

static void run_for(fixture *f, int64_t ms)
{
    bool never = false;
    rpc_run_until(f->base, &never, ms);
}

/* ------------------------------------------------------------------------------------------ */
/* tests                                                                                       */

static void test_bad_targets(void **state)
{
    fixture *f = *state;
    rpc_channel *ch = NULL;
    assert_int_equal(rpc_channel_new(&ch, f->base, "nohost", NULL), RPC_ERR_INVALID);
    assert_int_equal(rpc_channel_new(&ch, f->base, "h:0", NULL), RPC_ERR_INVALID);
    assert_int_equal(rpc_channel_new(&ch, f->base, "h:99999", NULL), RPC_ERR_INVALID);
    assert_int_equal(rpc_channel_new(&ch, f->base, ":80", NULL), RPC_ERR_INVALID);
    assert_int_equal(rpc_channel_new(&ch, f->base, "::1:80", NULL), RPC_ERR_INVALID);
    assert_int_equal(rpc_channel_new(&ch, f->base, "[::1]:80", NULL), 0);
    rpc_channel_free(ch);
    assert_int_equal(rpc_channel_new(&ch, f->base, "localhost:80", NULL), 0);
    rpc_channel_free(ch);
}

static void test_connect_refused_is_unavailable(void **state)
{
    fixture *f = *state;
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%u", closed_port());
    open_channel(f, target, NULL);
    rec r = {0};
    int64_t t0 = clock_mono_ms();
    unary(f, NULL, &r);
    assert_int_equal(r.closes, 0); /* never synchronously from start/send */
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(r.message, "refused"));
    assert_true(r.closed_at - t0 < 1000);

    /* During the backoff a fail-fast call fails at once, asynchronously. */
    rec r2 = {0};
    unary(f, NULL, &r2);
    assert_int_equal(r2.closes, 0);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 500), 0);
    assert_int_equal(r2.code, RPC_STATUS_UNAVAILABLE);
    assert_false(rpc_channel_connected(f->ch));
    run_for(f, 50);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r2.closes, 1);
}

static void test_wait_for_ready_until_deadline(void **state)
{
    fixture *f = *state;
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%u", closed_port());
    rpc_channel_config cfg;
    rpc_channel_config_init(&cfg);
    cfg.backoff_initial_ms = 50;
    open_channel(f, target, &cfg);
    rec r = {0};
    rpc_call_opts opts = {.timeout_ms = 400, .wait_for_ready = true};
    int64_t t0 = clock_mono_ms();
    unary(f, &opts, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_DEADLINE_EXCEEDED);
    assert_true(r.closed_at - t0 >= 395);
    assert_true(r.closed_at - t0 < 1500);
}

static void test_deadline_on_silent_listener(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_SILENT, NULL); /* the kernel completes TCP; nobody speaks HTTP/2 */
    open_channel(f, peer_target(&f->p), NULL);
    rec r = {0};
    rpc_call_opts opts = {.timeout_ms = 300};
    int64_t t0 = clock_mono_ms();
    unary(f, &opts, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_DEADLINE_EXCEEDED);
    assert_true(r.closed_at - t0 >= 295);
    assert_true(r.closed_at - t0 < 1500);
    assert_int_equal(r.closes, 1);
}

static void never_answer(pconn *pc, pstream *st)
{
    (void)pc;
    (void)st;
}

static void test_deadline_resets_stream_and_sends_headers(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, never_answer);
    open_channel(f, peer_target(&f->p), NULL);
    static const uint8_t bin[] = {0xab, 0x00, 0xff};
    rpc_mdlist md = {0};
    assert_int_equal(rpc_mdlist_add_str(&md, "x-plain", "v1"), 0);
    assert_int_equal(rpc_mdlist_add(&md, "x-data-bin", bin, sizeof(bin)), 0);
    rpc_call_opts opts = {.timeout_ms = 500, .metadata = &md};
    rec r = {0};
    unary(f, &opts, &r);
    rpc_mdlist_clear(&md);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_DEADLINE_EXCEEDED);
    run_for(f, 100); /* let the RST_STREAM arrive */

    assert_int_equal(f->p.nconns, 1);
    pconn *pc = f->p.conns[0];
    assert_int_equal(pc->nstreams, 1);
    pstream *st = &pc->streams[0];
    assert_string_equal(ps_header(st, ":method"), "POST");
    assert_string_equal(ps_header(st, ":scheme"), "http");
    assert_string_equal(ps_header(st, ":path"), "/grpc.testing.TestService/UnaryCall");
    assert_string_equal(ps_header(st, ":authority"), peer_target(&f->p));
    assert_string_equal(ps_header(st, "content-type"), "application/grpc");
    assert_string_equal(ps_header(st, "te"), "trailers");
    assert_string_equal(ps_header(st, "grpc-accept-encoding"), "identity,gzip");
    assert_non_null(ps_header(st, "user-agent"));
    assert_null(ps_header(st, "grpc-encoding"));
    assert_string_equal(ps_header(st, "x-plain"), "v1");
    assert_string_equal(ps_header(st, "x-data-bin"), "qwD/");
    const char *to = ps_header(st, "grpc-timeout");
    assert_non_null(to);
    int64_t ms = 0;
    assert_int_equal(rpc_timeout_parse(to, strlen(to), &ms), 0);
    assert_true(ms > 0 && ms <= 500);
    assert_true(st->ended);
    /* Half-closed by the client already, but the response is abandoned: RST_STREAM(CANCEL). */
    assert_int_equal(st->rst, NGHTTP2_CANCEL);
}

static void test_deadline_rst_cancel(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, never_answer);
    open_channel(f, peer_target(&f->p), NULL);
    rpc_call_opts opts = {.timeout_ms = 300};
    rec r = {0};
    rpc_ccall *call = NULL;
    assert_int_equal(rpc_ccall_start(&call, f->ch, &m_bidi, &opts, &rcb, &r), 0);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_DEADLINE_EXCEEDED);
    run_for(f, 100);
    assert_int_equal(f->p.conns[0]->nstreams, 1);
    assert_int_equal(f->p.conns[0]->streams[0].rst, NGHTTP2_CANCEL);
}

static void test_cancel(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, never_answer);
    open_channel(f, peer_target(&f->p), NULL);

    /* Cancel before the connection exists: CANCELLED, synchronously. */
    rec r0 = {0};
    rpc_ccall *c0 = NULL;
    assert_int_equal(rpc_ccall_start(&c0, f->ch, &m_bidi, NULL, &rcb, &r0), 0);
    rpc_ccall_cancel(c0);
    assert_int_equal(r0.closes, 1);
    assert_int_equal(r0.code, RPC_STATUS_CANCELLED);

    /* Cancel an open stream: CANCELLED and RST_STREAM(CANCEL) on the wire. */
    rec r = {0};
    rpc_ccall *call = NULL;
    assert_int_equal(rpc_ccall_start(&call, f->ch, &m_bidi, NULL, &rcb, &r), 0);
    for (int i = 0; i < 100 && f->p.nconns == 0; i++)
        run_for(f, 10);
    for (int i = 0; i < 100 && f->p.conns[0]->nstreams == 0; i++)
        run_for(f, 10);
    assert_int_equal(f->p.conns[0]->nstreams, 1);
    rpc_ccall_cancel(call);
    assert_int_equal(r.closes, 1);
    assert_int_equal(r.code, RPC_STATUS_CANCELLED);
    run_for(f, 100);
    assert_int_equal(f->p.conns[0]->streams[0].rst, NGHTTP2_CANCEL);
    assert_int_equal(r.closes, 1);
}

static const char *status_to_answer;

static void answer_http_status(pconn *pc, pstream *st)
{
    p_respond(pc, st, status_to_answer, NULL, NULL, 0, NULL);
}

static void test_http_status_mapping(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *http;
        int code;
    } map[] = {
        {"400", RPC_STATUS_INTERNAL},          {"401", RPC_STATUS_UNAUTHENTICATED},
        {"403", RPC_STATUS_PERMISSION_DENIED}, {"404", RPC_STATUS_UNIMPLEMENTED},
        {"429", RPC_STATUS_UNAVAILABLE},       {"502", RPC_STATUS_UNAVAILABLE},
        {"503", RPC_STATUS_UNAVAILABLE},       {"504", RPC_STATUS_UNAVAILABLE},
        {"500", RPC_STATUS_UNKNOWN},           {"302", RPC_STATUS_UNKNOWN},
    };
    start_peer(f, PEER_H2, answer_http_status);
    open_channel(f, peer_target(&f->p), NULL);
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        status_to_answer = map[i].http;
        rec r = {0};
        unary(f, NULL, &r);
        assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
        assert_int_equal(r.code, map[i].code);
        assert_int_equal(r.closes, 1);
    }
}

static void answer_trailers_only(pconn *pc, pstream *st)
{
    static const char *const h[] = {"content-type",
                                    "application/grpc",
                                    "grpc-status",
                                    "5",
                                    "grpc-message",
                                    "not%20here%",
                                    "x-t",
                                    "tv",
                                    NULL};
    p_respond(pc, st, "200", h, NULL, 0, NULL);
}

static void test_trailers_only(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_trailers_only);
    open_channel(f, peer_target(&f->p), NULL);
    rec r = {0};
    unary(f, NULL, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_NOT_FOUND);
    assert_string_equal(r.message, "not here%");
    assert_string_equal(r.trailer, "tv");
    assert_int_equal(r.headers, 0);
    assert_int_equal(r.messages, 0);
}

static uint8_t *framed_response(size_t payload, bool gzip, size_t *len)
{
    static uint8_t zeros[4096];
    Grpc__Testing__Payload p;
    grpc__testing__payload__init(&p);
    p.body.data = zeros;
    p.body.len = payload;
    Grpc__Testing__SimpleResponse resp;
    grpc__testing__simple_response__init(&resp);
    resp.payload = &p;
    uint8_t *out = NULL;
    assert_int_equal(rpc_frame_message(&resp.base, gzip, 1 << 20, &out, len), 0);
    return out;
}

static uint8_t *resp_body;
static size_t resp_len;
static const char *const *resp_trailers;
static const char *const *resp_headers;

static void answer_scripted(pconn *pc, pstream *st)
{
    p_respond(pc, st, "200", resp_headers, resp_body, resp_len, resp_trailers);
}

static const char *const grpc_headers[] = {"content-type", "application/grpc", NULL};
static const char *const gzip_headers[] = {"content-type", "application/grpc+proto",
                                           "grpc-encoding", "gzip", NULL};
static const char *const ok_trailers[] = {"grpc-status", "0", "x-t", "ok", NULL};
static const char *const no_status_trailers[] = {"x-t", "1", NULL};

static void test_full_response_and_gzip(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_scripted);
    open_channel(f, peer_target(&f->p), NULL);

    resp_headers = grpc_headers;
    resp_body = framed_response(100, false, &resp_len);
    resp_trailers = ok_trailers;
    rec r = {0};
    unary(f, NULL, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_OK);
    assert_int_equal(r.headers, 1);
    assert_int_equal(r.messages, 1);
    assert_int_equal(r.last_size, 100);
    assert_false(r.compressed);
    assert_string_equal(r.trailer, "ok");
    assert_true(rpc_channel_connected(f->ch));
    free(resp_body);

    /* A gzip-compressed response, and a gzip-compressed request. */
    resp_headers = gzip_headers;
    resp_body = framed_response(3000, true, &resp_len);
    rec r2 = {0};
    rpc_call_opts gz = {.compression = "gzip"};
    unary(f, &gz, &r2);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 5000), 0);
    assert_int_equal(r2.code, RPC_STATUS_OK);
    assert_int_equal(r2.last_size, 3000);
    assert_true(r2.compressed);
    free(resp_body);
    pstream *st = &f->p.conns[0]->streams[1];
    assert_string_equal(ps_header(st, "grpc-encoding"), "gzip");
    assert_true(st->body_len > 5);
    assert_int_equal(st->body[0], 1); /* compressed flag */
    ProtobufCMessage *req = NULL;
    assert_int_equal(rpc_decode_message(&grpc__testing__simple_request__descriptor, true,
                                        st->body + 5, st->body_len - 5, 1 << 20, &req),
                     0);
    assert_int_equal(((Grpc__Testing__SimpleRequest *)req)->response_size, 10);
    protobuf_c_message_free_unpacked(req, NULL);

    /* The compressed flag with grpc-encoding identity is a protocol error. */
    resp_headers = grpc_headers;
    resp_body = framed_response(10, true, &resp_len);
    rec r3 = {0};
    unary(f, NULL, &r3);
    assert_int_equal(rpc_run_until(f->base, &r3.done, 5000), 0);
    assert_int_equal(r3.code, RPC_STATUS_INTERNAL);
    free(resp_body);
    resp_body = NULL;
}

/* A request far larger than the socket buffers while the server does not read: the client's
 * coalesced writes keep what the socket refused and finish on EV_WRITE, in order, and a call
 * started meanwhile goes out after it, intact. */
static void test_large_request_while_peer_stalls(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_scripted);
    f->p.big_window = true;
    open_channel(f, peer_target(&f->p), NULL);
    resp_headers = grpc_headers;
    resp_body = framed_response(10, false, &resp_len);
    resp_trailers = ok_trailers;
    rec r0 = {0};
    unary(f, NULL, &r0);
    assert_int_equal(rpc_run_until(f->base, &r0.done, 5000), 0);
    assert_int_equal(r0.code, RPC_STATUS_OK);
    pconn *pc = f->p.conns[0];
    event_del(pc->ev); /* the server stops reading */

    enum { BIG = 24 << 20 };
    Grpc__Testing__SimpleRequest req;
    grpc__testing__simple_request__init(&req);
    Grpc__Testing__Payload payload;
    grpc__testing__payload__init(&payload);
    payload.body.data = malloc(BIG);
    payload.body.len = BIG;
    for (size_t i = 0; i < BIG; i++)
        payload.body.data[i] = (uint8_t)(i * 7);
    req.payload = &payload;
    req.response_size = 10;
    size_t framed = 5 + grpc__testing__simple_request__get_packed_size(&req);
    rec r1 = {0}, r2 = {0};
    rpc_ccall *call = NULL;
    assert_int_equal(rpc_ccall_start(&call, f->ch, &m_unary, NULL, &rcb, &r1), 0);
    assert_int_equal(rpc_ccall_send(call, &req.base), 0);
    assert_int_equal(rpc_ccall_close_send(call), 0);
    run_for(f, 300);
    unary(f, NULL, &r2); /* queued behind the blocked bytes */
    run_for(f, 100);
    assert_false(r1.done);
    assert_false(r2.done);
    event_add(pc->ev, NULL); /* reading again */
    assert_int_equal(rpc_run_until(f->base, &r2.done, 10000), 0);
    assert_int_equal(rpc_run_until(f->base, &r1.done, 10000), 0);
    assert_int_equal(r1.code, RPC_STATUS_OK);
    assert_int_equal(r2.code, RPC_STATUS_OK);
    pstream *s1 = pc_stream(pc, 3, false), *s2 = pc_stream(pc, 5, false);
    assert_non_null(s1);
    assert_non_null(s2);
    assert_int_equal(s1->body_total, framed);
    assert_true(s1->ended);
    assert_true(s2->ended);
    assert_int_equal(s2->body_total, s2->body_len);
    ProtobufCMessage *small = NULL;
    assert_int_equal(rpc_decode_message(&grpc__testing__simple_request__descriptor, false,
                                        s2->body + 5, s2->body_len - 5, 1 << 20, &small),
                     0);
    assert_int_equal(((Grpc__Testing__SimpleRequest *)small)->response_size, 10);
    protobuf_c_message_free_unpacked(small, NULL);
    free(payload.body.data);
    free(resp_body);
    resp_body = NULL;
}

static void test_missing_status(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_scripted);
    open_channel(f, peer_target(&f->p), NULL);
    resp_headers = grpc_headers;
    resp_body = framed_response(1, false, &resp_len);

    /* Trailers without grpc-status. */
    resp_trailers = no_status_trailers;
    rec r = {0};
    unary(f, NULL, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_UNKNOWN);

    /* No trailers at all: DATA ends the stream. */
    resp_trailers = NULL;
    rec r2 = {0};
    unary(f, NULL, &r2);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 5000), 0);
    assert_int_equal(r2.code, RPC_STATUS_INTERNAL);

    /* Not gRPC at all. */
    static const char *const html[] = {"content-type", "text/html", NULL};
    resp_headers = html;
    resp_trailers = ok_trailers;
    rec r3 = {0};
    unary(f, NULL, &r3);
    assert_int_equal(rpc_run_until(f->base, &r3.done, 5000), 0);
    assert_int_equal(r3.code, RPC_STATUS_UNKNOWN);
    free(resp_body);
    resp_body = NULL;
}

static void test_oversized_and_unparsable(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_scripted);
    f->p.answer_early = true; /* answer while the client still sends: it must reset */
    rpc_channel_config cfg;
    rpc_channel_config_init(&cfg);
    cfg.max_recv_message = 1024;
    open_channel(f, peer_target(&f->p), &cfg);
    resp_headers = grpc_headers;
    resp_trailers = ok_trailers;

    /* A length prefix over the limit: RESOURCE_EXHAUSTED before the body arrives, and RST. */
    static uint8_t big[5 + 64] = {0, 0, 0, 0x10, 0}; /* announces 4096 bytes */
    resp_body = big;
    resp_len = sizeof(big);
    rec r = {0};
    rpc_ccall *call = NULL;
    assert_int_equal(rpc_ccall_start(&call, f->ch, &m_bidi, NULL, &rcb, &r), 0);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_RESOURCE_EXHAUSTED);
    run_for(f, 100);
    assert_int_equal(f->p.conns[0]->streams[0].rst, NGHTTP2_CANCEL);

    /* Bytes that are no SimpleResponse: INTERNAL. */
    static uint8_t junk[] = {0, 0, 0, 0, 3, 0x0a, 0x05, 0x01};
    resp_body = junk;
    resp_len = sizeof(junk);
    f->p.answer_early = false;
    rec r2 = {0};
    unary(f, NULL, &r2);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 5000), 0);
    assert_int_equal(r2.code, RPC_STATUS_INTERNAL);
    resp_body = NULL;

    /* A truncated message at the end of the stream: INTERNAL. */
    static uint8_t cut[] = {0, 0, 0, 0, 9, 0x0a};
    resp_body = cut;
    resp_len = sizeof(cut);
    rec r3 = {0};
    unary(f, NULL, &r3);
    assert_int_equal(rpc_run_until(f->base, &r3.done, 5000), 0);
    assert_int_equal(r3.code, RPC_STATUS_INTERNAL);
    resp_body = NULL;
}

static int goaway_count;

static void answer_goaway_first(pconn *pc, pstream *st)
{
    if (pc->p->nconns == 1) {
        /* First connection: refuse everything. */
        nghttp2_submit_goaway(pc->ng, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        goaway_count++;
        return;
    }
    resp_headers = grpc_headers;
    resp_trailers = ok_trailers;
    answer_scripted(pc, st);
}

static void test_goaway_moves_to_new_connection(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_goaway_first);
    open_channel(f, peer_target(&f->p), NULL);
    resp_body = framed_response(5, false, &resp_len);
    goaway_count = 0;
    rec r = {0};
    unary(f, NULL, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(goaway_count, 1);
    assert_int_equal(r.code, RPC_STATUS_UNAVAILABLE); /* stream 1 > last_stream_id 0 */

    rec r2 = {0};
    unary(f, NULL, &r2);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 5000), 0);
    assert_int_equal(r2.code, RPC_STATUS_OK);
    assert_int_equal(f->p.nconns, 2);
    free(resp_body);
    resp_body = NULL;
}

static void answer_and_goaway(pconn *pc, pstream *st)
{
    resp_headers = grpc_headers;
    resp_trailers = ok_trailers;
    if (pc->p->nconns == 1)
        nghttp2_submit_goaway(pc->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR, NULL, 0);
    answer_scripted(pc, st);
}

static void test_goaway_lets_processed_calls_finish(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_and_goaway);
    f->p.answer_early = true; /* GOAWAY while the client's stream is still open */
    open_channel(f, peer_target(&f->p), NULL);
    resp_body = framed_response(7, false, &resp_len);
    rec r = {0};
    rpc_ccall *call = NULL;
    assert_int_equal(rpc_ccall_start(&call, f->ch, &m_bidi, NULL, &rcb, &r), 0);
    for (int i = 0; i < 200 && r.headers == 0 && !r.done; i++)
        run_for(f, 10);
    assert_int_equal(r.headers, 1);
    /* A new call while the old connection drains goes to a new connection. */
    rec r2 = {0};
    f->p.answer_early = false;
    unary(f, NULL, &r2);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 5000), 0);
    assert_int_equal(r2.code, RPC_STATUS_OK);
    assert_int_equal(f->p.nconns, 2);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_OK); /* stream 1 <= last_stream_id: it completed */
    free(resp_body);
    resp_body = NULL;
}

static bool lost_answer_ok;

static void answer_when_allowed(pconn *pc, pstream *st)
{
    if (!lost_answer_ok)
        return;
    resp_headers = grpc_headers;
    resp_trailers = ok_trailers;
    answer_scripted(pc, st);
}

static void test_connection_lost_then_reconnect(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, answer_when_allowed);
    open_channel(f, peer_target(&f->p), NULL);
    resp_body = framed_response(3, false, &resp_len);
    lost_answer_ok = false;
    rec r = {0};
    unary(f, NULL, &r);
    for (int i = 0; i < 200 && (f->p.nconns == 0 || f->p.conns[0]->nstreams == 0); i++)
        run_for(f, 10);
    assert_true(rpc_channel_connected(f->ch));
    /* The server goes away without GOAWAY: the call in flight fails UNAVAILABLE. */
    pconn *pc = f->p.conns[0];
    shutdown(pc->fd, SHUT_RDWR);
    event_del(pc->ev);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_UNAVAILABLE);
    assert_false(rpc_channel_connected(f->ch));
    /* The connection had been READY, so the next call reconnects at once (no backoff). */
    lost_answer_ok = true;
    rec r2 = {0};
    int64_t t0 = clock_mono_ms();
    unary(f, NULL, &r2);
    assert_int_equal(rpc_run_until(f->base, &r2.done, 5000), 0);
    assert_int_equal(r2.code, RPC_STATUS_OK);
    assert_true(clock_mono_ms() - t0 < 500);
    assert_int_equal(f->p.nconns, 2);
    free(resp_body);
    resp_body = NULL;
}

static void test_keepalive_pings(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, never_answer);
    rpc_channel_config cfg;
    rpc_channel_config_init(&cfg);
    cfg.keepalive_ms = 100;
    open_channel(f, peer_target(&f->p), &cfg);
    rec r = {0};
    rpc_call_opts opts = {.timeout_ms = 700};
    unary(f, &opts, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_DEADLINE_EXCEEDED);
    /* ~600 ms connected and one PING per 100 ms of silence (PING ACKs count as traffic, so
     * about one per 100-200 ms). */
    assert_true(f->p.pings >= 2);
    assert_true(f->p.pings <= 8);
    assert_true(rpc_channel_connected(f->ch)); /* the PINGs were answered: still connected */
}

static void test_backoff_timing(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_CLOSE, NULL);
    rpc_channel_config cfg;
    rpc_channel_config_init(&cfg);
    cfg.backoff_initial_ms = 100;
    cfg.backoff_max_ms = 600;
    open_channel(f, peer_target(&f->p), &cfg);
    rec r = {0};
    rpc_call_opts opts = {.timeout_ms = 2500, .wait_for_ready = true};
    unary(f, &opts, &r);
    assert_int_equal(rpc_run_until(f->base, &r.done, 5000), 0);
    assert_int_equal(r.code, RPC_STATUS_DEADLINE_EXCEEDED);

    /* Attempt k+1 starts backoff(k) after attempt k: 100 ms, then x1.6 with +-20% jitter,
     * capped at 600 ms: 100, 160, 256, 409.6, 600, 600 ... */
    double nominal = 100;
    assert_true(f->p.naccepts >= 5);
    for (int i = 1; i < f->p.naccepts && i < 32; i++) {
        int64_t gap = f->p.accepts[i] - f->p.accepts[i - 1];
        double jitter = i == 1 ? 0 : 0.2;
        double lo = nominal * (1 - jitter) - 25, hi = nominal * (1 + jitter) + 100;
        if (gap < lo || gap > hi)
            fail_msg("attempt %d came %lld ms after the previous one, want %.0f..%.0f", i + 1,
                     (long long)gap, lo, hi);
        nominal = nominal * 1.6 > 600 ? 600 : nominal * 1.6;
    }
}

static void test_free_channel_from_callback(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, never_answer);
    open_channel(f, peer_target(&f->p), NULL);
    rec a = {0}, b = {0};
    a.free_channel_on_close = f->ch;
    rpc_call_opts opts = {.timeout_ms = 200};
    unary(f, &opts, &a);
    unary(f, NULL, &b);
    assert_int_equal(rpc_run_until(f->base, &a.done, 5000), 0);
    f->ch = NULL; /* freed from a's on_close; b was cancelled by it */
    assert_int_equal(a.code, RPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(b.closes, 1);
    assert_int_equal(b.code, RPC_STATUS_CANCELLED);
    run_for(f, 50);
    assert_int_equal(a.closes, 1);
}

static void test_send_after_close(void **state)
{
    fixture *f = *state;
    start_peer(f, PEER_H2, never_answer);
    open_channel(f, peer_target(&f->p), NULL);
    rec r = {0};
    rpc_ccall *call = unary(f, NULL, &r);
    Grpc__Testing__SimpleRequest req;
    grpc__testing__simple_request__init(&req);
    assert_int_equal(rpc_ccall_send(call, &req.base), RPC_ERR_CLOSED);
    assert_int_equal(rpc_ccall_send_ex(call, &req.base, true), RPC_ERR_INVALID);
    rpc_ccall_cancel(call);
    assert_int_equal(r.code, RPC_STATUS_CANCELLED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused_is_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_for_ready_until_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_on_silent_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_resets_stream_and_sends_headers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_deadline_rst_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_status_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_response_and_gzip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_and_unparsable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_moves_to_new_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_goaway_lets_processed_calls_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_pings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_lost_then_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backoff_timing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_channel_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_request_while_peer_stalls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * rpc_conn.c: server-side HTTP/2 connections (nghttp2 with mem_recv/mem_send
 * on a nonblocking socket) and the gRPC calls on their streams.
 *
 * Writes are coalesced: every change that produces frames schedules one flush
 * per loop iteration (the write event made active), which drains nghttp2 into
 * one buffer and hands it to the socket in as few send() calls as possible.
 */
#include "rpc_server_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"

#define WBUF_FLUSH 65536 /* coalesce up to this many bytes per send() */
/* Response metadata entries per list (initial, trailing): the add functions refuse more, so
 * a Trailers-Only HEADERS (both lists + 6 fixed fields) always fits the name/value array. */
#define RPC__MAX_RESPONSE_MD 32

typedef struct outchunk {
    struct outchunk *next;
    size_t len; /* bytes in data */
    size_t off; /* bytes already handed to nghttp2 */
    uint8_t data[];
} outchunk;

struct rpc__conn {
    rpc__worker *w;      /* owner */
    rpc__link link;      /* in w->conns */
    int fd;              /* socket */
    struct event *rev;   /* readable */
    struct event *wev;   /* writable; also made active to schedule a flush */
    struct event *timer; /* idle / keepalive */
    nghttp2_session *ng; /* HTTP/2 state */
    uint8_t *wbuf;       /* bytes produced by nghttp2 not yet taken by the socket */
    size_t wlen, woff;   /* unsent bytes in |wbuf|, bytes of them already sent */
    rpc__link calls;     /* open calls */
    size_t n_calls;      /* entries in |calls| */
    size_t queued;       /* response bytes queued in calls, not yet given to nghttp2 */
    int64_t last_recv;   /* ms of the last byte read */
    int64_t ping_sent;   /* ms a keepalive PING went out, 0 when none pending */
    bool reading_paused; /* reads stopped for back-pressure */
    bool goaway;         /* GOAWAY submitted */
    bool closing;        /* close requested while inside nghttp2 */
    bool closed;         /* fd closed; waiting to be freed */
    int in_io;           /* nesting depth of mem_recv/mem_send */
    char peer[64];       /* "ip:port" */
};

typedef enum call_state {
    CALL_HEADERS = 0, /* receiving request headers */
    CALL_ACTIVE,      /* dispatched to the handler */
    CALL_DONE,        /* finished or cancelled */
} call_state;

struct rpc_call {
    rpc__conn *conn;           /* NULL once the stream is closed */
    int32_t stream_id;         /* HTTP/2 stream */
    int refs;                  /* the stream holds one; handlers may hold more */
    call_state state;          /* see call_state */
    const rpc__method *m;      /* method, NULL until resolved */
    rpc_mdlist md;             /* request metadata */
    char *path;                /* :path */
    bool method_post;          /* :method was POST */
    bool content_type_ok;      /* content-type is application/grpc[+proto|;...] */
    bool has_content_type;     /* content-type present */
    bool headers_too_large;    /* request header list over the limit */
    bool bad_timeout;          /* unparsable grpc-timeout */
    bool bad_metadata;         /* a -bin value that is not base64 */
    bool req_gzip;             /* grpc-encoding: gzip */
    char *bad_encoding;        /* unsupported grpc-encoding, owned */
    bool accept_gzip;          /* client listed gzip in grpc-accept-encoding */
    size_t header_bytes;       /* request header bytes seen */
    int64_t timeout_ms;        /* from grpc-timeout, 0 = none */
    int64_t deadline;          /* monotonic ms, 0 = none */
    struct event *deadline_ev; /* deadline timer */
    rpc_deframer df;           /* request message reassembly */
    ProtobufCMessage *request; /* unary/server-streaming request, owned */
    int n_requests;            /* messages received */
    bool last_compressed;      /* the last request message had the compressed flag */
    bool remote_closed;        /* END_STREAM received */
    outchunk *head, *tail;     /* queued response frames */
    size_t queued;             /* bytes in the chunks, not yet given to nghttp2 */
    bool headers_sent;         /* response HEADERS submitted */
    bool finishing;            /* trailers wait for the queue to drain */
    int code;                  /* final status */
    char *message;             /* final message, owned */
    rpc_mdlist initial_md;     /* response initial metadata */
    rpc_mdlist trailing_md;    /* response trailing metadata */
    bool gzip_resp;            /* compress responses */
    bool want_writable;        /* a send returned WOULDBLOCK */
    bool cancel_reported;      /* on_cancel delivered */
    rpc_call_callbacks cb;     /* handler callbacks */
    void *call_data;           /* for |cb| */
    void *data;                /* rpc_call_set_data */
    void (*data_free)(void *); /* frees |data| */
    rpc__link conn_link;       /* in conn->calls */
    rpc__link watch_link;      /* health watchers */
    rpc__worker *w;            /* the worker */
    int64_t started;           /* ms at dispatch, for the latency metric */
    char peer[64];             /* copy of the connection's peer */
};

static void conn_schedule_flush(rpc__conn *c);
static void conn_close(rpc__conn *c);
static void call_detach(rpc_call *call, rpc_cancel_reason reason);

/* --- calls ---------------------------------------------------------------------------------- */

static void call_free(rpc_call *call)
{
    if (call->data_free)
        call->data_free(call->data);
    rpc_mdlist_clear(&call->md);
    rpc_mdlist_clear(&call->initial_md);
    rpc_mdlist_clear(&call->trailing_md);
    free(call->path);
    free(call->message);
    free(call->bad_encoding);
    if (call->request)
        protobuf_c_message_free_unpacked(call->request, NULL);
    rpc_deframer_free(&call->df);
    for (outchunk *o = call->head, *n; o; o = n) {
        n = o->next;
        free(o);
    }
    if (call->deadline_ev)
        event_free(call->deadline_ev);
    free(call);
}

void rpc_call_ref(rpc_call *call)
{
    call->refs++;
}

void rpc_call_unref(rpc_call *call)
{
    if (--call->refs == 0)
        call_free(call);
}

bool rpc_call_is_done(const rpc_call *call)
{
    return call->state == CALL_DONE;
}

void rpc_call_set_callbacks(rpc_call *call, const rpc_call_callbacks *cb, void *call_data)
{
    call->cb = *cb;
    call->call_data = call_data;
}

void rpc_call_set_data(rpc_call *call, void *data, void (*free_fn)(void *))
{
    call->data = data;
    call->data_free = free_fn;
}

void *rpc_call_data(const rpc_call *call)
{
    return call->data;
}

const rpc_mdlist *rpc_call_metadata(const rpc_call *call)
{
    return &call->md;
}

const char *rpc_call_metadata_get(const rpc_call *call, const char *key)
{
    const rpc_md *m = rpc_mdlist_get(&call->md, key);
    return m ? (const char *)m->value : NULL;
}

int64_t rpc_call_deadline(const rpc_call *call)
{
    return call->deadline;
}

const rpc_method_desc *rpc_call_method(const rpc_call *call)
{
    return call->m ? call->m->desc : NULL;
}

struct event_base *rpc_call_base(const rpc_call *call)
{
    return call->w->base;
}

void *rpc_call_worker_data(const rpc_call *call)
{
    return call->w->worker_data;
}

rpc_server *rpc_call_server(const rpc_call *call)
{
    return call->w->srv;
}

const char *rpc_call_peer(const rpc_call *call)
{
    return call->peer;
}

bool rpc_call_request_compressed(const rpc_call *call)
{
    return call->last_compressed;
}

rpc__link *rpc__call_watch_link(rpc_call *call)
{
    return &call->watch_link;
}

rpc_call *rpc__call_from_watch_link(rpc__link *l)
{
    return RPC__CONTAINER_OF(l, rpc_call, watch_link);
}

rpc__worker *rpc__call_worker(const rpc_call *call)
{
    return call->w;
}

int rpc_call_add_initial_metadata(rpc_call *call, const char *key, const void *v, size_t len)
{
    if (call->state == CALL_DONE || call->headers_sent)
        return RPC_ERR_CLOSED;
    if (!rpc_md_key_valid(key, true))
        return RPC_ERR_INVALID;
    if (call->initial_md.n >= RPC__MAX_RESPONSE_MD)
        return RPC_ERR_TOO_LARGE;
    return rpc_mdlist_add(&call->initial_md, key, v, len);
}

int rpc_call_add_trailing_metadata(rpc_call *call, const char *key, const void *v, size_t len)
{
    if (call->state == CALL_DONE)
        return RPC_ERR_CLOSED;
    if (!rpc_md_key_valid(key, true))
        return RPC_ERR_INVALID;
    if (call->trailing_md.n >= RPC__MAX_RESPONSE_MD)
        return RPC_ERR_TOO_LARGE;
    return rpc_mdlist_add(&call->trailing_md, key, v, len);
}

int rpc_call_set_compression(rpc_call *call, const char *encoding)
{
    if (strcmp(encoding, "identity") == 0) {
        call->gzip_resp = false;
        return 0;
    }
    if (strcmp(encoding, "gzip") != 0)
        return RPC_ERR_UNSUPPORTED;
    if (call->headers_sent)
        return RPC_ERR_CLOSED;
    if (call->accept_gzip)
        call->gzip_resp = true;
    return 0;
}

/* Builds nghttp2 name/value pairs; values of -bin keys are base64-encoded into |owned|. */
typedef struct nvbuf {
    nghttp2_nv nv[2 * RPC__MAX_RESPONSE_MD + 8];
    size_t n;
    char *owned[2 * RPC__MAX_RESPONSE_MD];
    size_t n_owned;
} nvbuf;

static void nv_add(nvbuf *b, const char *name, const char *value, size_t vlen)
{
    if (b->n == sizeof(b->nv) / sizeof(b->nv[0]))
        return; /* cannot happen: the add functions cap each list (RPC__MAX_RESPONSE_MD) */
    nghttp2_nv *nv = &b->nv[b->n++];
    nv->name = (uint8_t *)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)value;
    nv->valuelen = vlen;
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static void nv_add_md(nvbuf *b, const rpc_mdlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const rpc_md *m = &l->items[i];
        if (rpc_md_key_is_bin(m->key)) {
            if (b->n_owned == sizeof(b->owned) / sizeof(b->owned[0]))
                return;
            char *e = rpc_base64_encode(m->value, m->value_len);
            b->owned[b->n_owned++] = e;
            nv_add(b, m->key, e, strlen(e));
        } else {
            nv_add(b, m->key, (const char *)m->value, m->value_len);
        }
    }
}

static void nv_free(nvbuf *b)
{
    for (size_t i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
}

static void nv_add_status(nvbuf *b, int code, const char *message, char *codebuf, char **encoded)
{
    static const char *const codes[] = {"0", "1",  "2",  "3",  "4",  "5",  "6",  "7", "8",
                                        "9", "10", "11", "12", "13", "14", "15", "16"};
    if (code >= 0 && code <= 16) {
        nv_add(b, "grpc-status", codes[code], strlen(codes[code]));
    } else {
        snprintf(codebuf, 12, "%d", code);
        nv_add(b, "grpc-status", codebuf, strlen(codebuf));
    }
    *encoded = NULL;
    if (message && message[0]) {
        *encoded = rpc_percent_encode(message);
        nv_add(b, "grpc-message", *encoded, strlen(*encoded));
    }
}

static ssize_t data_read(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data);

static int call_submit_headers(rpc_call *call)
{
    nvbuf b = {0};
    nv_add(&b, ":status", "200", 3);
    nv_add(&b, "content-type", "application/grpc", 16);
    nv_add(&b, "grpc-accept-encoding", "identity,gzip", 13);
    if (call->gzip_resp)
        nv_add(&b, "grpc-encoding", "gzip", 4);
    nv_add_md(&b, &call->initial_md);
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = data_read};
    int rv = nghttp2_submit_response(call->conn->ng, call->stream_id, b.nv, b.n, &prd);
    nv_free(&b);
    call->headers_sent = true;
    return rv == 0 ? 0 : RPC_ERR_HTTP2;
}

/* Trailers-Only: one HEADERS frame with END_STREAM carrying status and all metadata. */
static void call_submit_trailers_only(rpc_call *call, int http_status)
{
    nvbuf b = {0};
    char st[8], code[12];
    char *enc;
    snprintf(st, sizeof(st), "%d", http_status);
    nv_add(&b, ":status", st, strlen(st));
    nv_add(&b, "content-type", "application/grpc", 16);
    nv_add(&b, "grpc-accept-encoding", "identity,gzip", 13);
    nv_add_status(&b, call->code, call->message, code, &enc);
    nv_add_md(&b, &call->initial_md);
    nv_add_md(&b, &call->trailing_md);
    nghttp2_submit_response(call->conn->ng, call->stream_id, b.nv, b.n, NULL);
    call->headers_sent = true;
    free(enc);
    nv_free(&b);
}

static void call_submit_trailers(rpc_call *call)
{
    nvbuf b = {0};
    char code[12];
    char *enc;
    nv_add_status(&b, call->code, call->message, code, &enc);
    nv_add_md(&b, &call->trailing_md);
    nghttp2_submit_trailer(call->conn->ng, call->stream_id, b.nv, b.n);
    free(enc);
    nv_free(&b);
}

static ssize_t data_read(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)ng;
    (void)stream_id;
    (void)user_data;
    rpc_call *call = source->ptr;
    size_t n = 0;
    while (n < length && call->head) {
        outchunk *o = call->head;
        size_t take = o->len - o->off;
        if (take > length - n)
            take = length - n;
        memcpy(buf + n, o->data + o->off, take);
        o->off += take;
        n += take;
        if (o->off == o->len) {
            call->head = o->next;
            if (call->head == NULL)
                call->tail = NULL;
            free(o);
        }
    }
    call->queued -= n;
    if (call->conn)
        call->conn->queued -= n;
    if (call->head == NULL && call->finishing) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        call_submit_trailers(call);
        call->finishing = false;
        return (ssize_t)n;
    }
    if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    return (ssize_t)n;
}

/* A call with an empty queue may always queue one message: a unary reply never blocks, and
 * memory stays bounded by streams x (stream_send_buffer + max_send_message). */
static bool call_has_room(const rpc_call *call)
{
    const rpc_server_config *cfg = &call->w->srv->cfg;
    if (call->queued == 0)
        return true;
    return call->queued < cfg->stream_send_buffer &&
           (call->conn == NULL || call->conn->queued < cfg->conn_send_buffer);
}

bool rpc_call_writable(const rpc_call *call)
{
    return call->state != CALL_DONE && call->conn != NULL && call_has_room(call);
}

int rpc_call_send_flags(rpc_call *call, const ProtobufCMessage *msg, unsigned flags)
{
    if (call->state == CALL_DONE || call->conn == NULL)
        return RPC_ERR_CLOSED;
    if (!call_has_room(call)) {
        call->want_writable = true;
        return RPC_ERR_WOULDBLOCK;
    }
    uint8_t *buf;
    size_t flen;
    bool gz = call->gzip_resp && !(flags & RPC_SEND_NO_COMPRESS);
    /* Serialized straight into the queue chunk (its bytes are its flexible tail). */
    int rv = rpc_frame_message_at(msg, gz, call->w->srv->cfg.max_send_message,
                                  offsetof(outchunk, data), &buf, &flen);
    if (rv < 0)
        return rv;
    outchunk *o = (outchunk *)(void *)buf;
    o->next = NULL;
    o->len = flen;
    o->off = 0;
    if (call->tail)
        call->tail->next = o;
    else
        call->head = o;
    call->tail = o;
    call->queued += flen;
    call->conn->queued += flen;
    if (!call->headers_sent) {
        if (call_submit_headers(call) < 0)
            return RPC_ERR_HTTP2;
    } else {
        nghttp2_session_resume_data(call->conn->ng, call->stream_id);
    }
    conn_schedule_flush(call->conn);
    return 0;
}

int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg)
{
    return rpc_call_send_flags(call, msg, 0);
}

/* Ends the call with call->code/message already set. */
static void call_end(rpc_call *call)
{
    call->state = CALL_DONE;
    rpc__metrics_record(call->w->srv, call->m, call->code, rpc_now_ms() - call->started);
    if (call->deadline_ev)
        event_del(call->deadline_ev);
    if (call->watch_link.next != &call->watch_link)
        rpc__link_remove(&call->watch_link);
    if (call->conn == NULL)
        return;
    if (!call->headers_sent) {
        call_submit_trailers_only(call, 200);
    } else {
        call->finishing = true;
        nghttp2_session_resume_data(call->conn->ng, call->stream_id);
    }
    conn_schedule_flush(call->conn);
}

int rpc_call_finish(rpc_call *call, int code, const char *message)
{
    if (call->state == CALL_DONE)
        return RPC_ERR_CLOSED;
    call->code = code;
    free(call->message);
    call->message = message ? mem_strdup(message) : NULL;
    call_end(call);
    return 0;
}

int rpc_call_finishf(rpc_call *call, int code, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return rpc_call_finish(call, code, buf);
}

int rpc_call_reply(rpc_call *call, const ProtobufCMessage *msg)
{
    int rv = rpc_call_send(call, msg);
    if (rv < 0) {
        if (rv == RPC_ERR_TOO_LARGE)
            rpc_call_finish(call, RPC_STATUS_RESOURCE_EXHAUSTED, "response larger than the limit");
        return rv;
    }
    return rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

/* Reports cancellation to the handler once. */
static void call_report_cancel(rpc_call *call, rpc_cancel_reason reason)
{
    if (call->cancel_reported || call->m == NULL)
        return;
    call->cancel_reported = true;
    if (call->cb.on_cancel) {
        rpc_call_ref(call);
        call->cb.on_cancel(call, reason, call->call_data);
        rpc_call_unref(call);
    }
}

/* The stream is gone: detach from the connection and drop the stream's reference. */
static void call_detach(rpc_call *call, rpc_cancel_reason reason)
{
    rpc__conn *c = call->conn;
    if (c == NULL)
        return;
    rpc__link_remove(&call->conn_link);
    c->n_calls--;
    atomic_fetch_sub(&call->w->srv->n_calls, 1);
    c->queued -= call->queued;
    call->conn = NULL;
    if (call->watch_link.next != &call->watch_link)
        rpc__link_remove(&call->watch_link);
    if (call->state != CALL_DONE) {
        call->state = CALL_DONE;
        rpc__metrics_record(call->w->srv, call->m, RPC_STATUS_CANCELLED,
                            rpc_now_ms() - call->started);
        if (call->deadline_ev)
            event_del(call->deadline_ev);
        call_report_cancel(call, reason);
    }
    rpc_call_unref(call);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_call *call = arg;
    if (call->state == CALL_DONE)
        return;
    rpc_call_ref(call);
    rpc_call_finish(call, RPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
    call_report_cancel(call, RPC_CANCEL_DEADLINE);
    rpc_call_unref(call);
}

/* Immediate error before dispatch (Trailers-Only). */
static void call_fail_early(rpc_call *call, int http_status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void call_fail_early(rpc_call *call, int http_status, int code, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    call->code = code;
    call->message = mem_strdup(buf);
    call->state = CALL_DONE;
    call_submit_trailers_only(call, http_status);
    conn_schedule_flush(call->conn);
}

static bool service_known(const rpc_server *srv, const char *path)
{
    const char *slash = strchr(path + 1, '/');
    if (slash == NULL)
        return false;
    size_t n = (size_t)(slash - path - 1);
    for (size_t i = 0; i < srv->n_services; i++)
        if (strncmp(srv->services[i]->name, path + 1, n) == 0 && srv->services[i]->name[n] == '\0')
            return true;
    return false;
}

/* Request headers complete: validate and hand the call to its handler. */
static void call_dispatch(rpc_call *call)
{
    rpc_server *srv = call->w->srv;
    if (!call->method_post) {
        call_fail_early(call, 405, RPC_STATUS_INTERNAL, "gRPC requires method POST");
        return;
    }
    if (!call->content_type_ok) {
        call_fail_early(call, 415, RPC_STATUS_INTERNAL, "invalid gRPC request content-type %s",
                        call->has_content_type ? "" : "(missing)");
        return;
    }
    if (call->headers_too_large) {
        call_fail_early(call, 200, RPC_STATUS_RESOURCE_EXHAUSTED,
                        "request header list larger than %u bytes", srv->cfg.max_header_list);
        return;
    }
    if (call->bad_timeout) {
        call_fail_early(call, 200, RPC_STATUS_INTERNAL, "malformed grpc-timeout");
        return;
    }
    if (call->bad_metadata) {
        call_fail_early(call, 200, RPC_STATUS_INTERNAL, "malformed binary metadata");
        return;
    }
    if (call->path == NULL) {
        call_fail_early(call, 200, RPC_STATUS_UNIMPLEMENTED, "missing :path");
        return;
    }
    call->m = rpc__server_find_method(srv, call->path, strlen(call->path));
    if (call->m == NULL) {
        if (service_known(srv, call->path))
            call_fail_early(call, 200, RPC_STATUS_UNIMPLEMENTED, "unknown method %s", call->path);
        else
            call_fail_early(call, 200, RPC_STATUS_UNIMPLEMENTED, "unknown service %s", call->path);
        return;
    }
    if (call->bad_encoding) {
        /* Not dispatched: the handler never hears of this call. */
        call->m = NULL;
        call_fail_early(call, 200, RPC_STATUS_UNIMPLEMENTED,
                        "grpc-encoding %s is not supported (identity, gzip)", call->bad_encoding);
        return;
    }
    call->state = CALL_ACTIVE;
    call->started = rpc_now_ms();
    if (call->timeout_ms > 0) {
        call->deadline = rpc_now_ms() + call->timeout_ms;
        call->deadline_ev = evtimer_new(call->w->base, on_deadline, call);
        struct timeval tv = {call->timeout_ms / 1000, (call->timeout_ms % 1000) * 1000};
        event_add(call->deadline_ev, &tv);
    }
    rpc_deframer_init(&call->df, srv->cfg.max_recv_message);
    const rpc_method_desc *d = call->m->desc;
    if ((d->kind == RPC_CLIENT_STREAMING || d->kind == RPC_BIDI_STREAMING) &&
        call->m->handler->on_start) {
        rpc_call_ref(call);
        call->m->handler->on_start(call, call->m->user_data);
        rpc_call_unref(call);
    }
}

static int on_request_message(bool compressed, const uint8_t *data, size_t len, void *ud)
{
    rpc_call *call = ud;
    if (call->state != CALL_ACTIVE)
        return 0; /* finished early: drop what still arrives */
    const rpc__method *m = call->m;
    rpc_server *srv = call->w->srv;
    if (compressed && !call->req_gzip) {
        rpc_call_finish(call, RPC_STATUS_INTERNAL,
                        "compressed message without a grpc-encoding header");
        return 0;
    }
    ProtobufCMessage *msg = NULL;
    int rv =
        rpc_decode_message(m->desc->input, compressed, data, len, srv->cfg.max_recv_message, &msg);
    if (rv == RPC_ERR_TOO_LARGE) {
        rpc_call_finishf(call, RPC_STATUS_RESOURCE_EXHAUSTED,
                         "decompressed message larger than max (%zu)", srv->cfg.max_recv_message);
        return 0;
    }
    if (rv < 0) {
        rpc_call_finish(call, RPC_STATUS_INTERNAL, "grpc: error unmarshalling request");
        return 0;
    }
    call->last_compressed = compressed;
    call->n_requests++;
    bool streaming_in =
        m->desc->kind == RPC_CLIENT_STREAMING || m->desc->kind == RPC_BIDI_STREAMING;
    rpc_call_ref(call);
    if (streaming_in) {
        m->handler->on_message(call, msg, m->user_data);
        protobuf_c_message_free_unpacked(msg, NULL);
    } else if (call->n_requests > 1) {
        protobuf_c_message_free_unpacked(msg, NULL);
        rpc_call_finish(call, RPC_STATUS_UNIMPLEMENTED,
                        "more than one request message for a unary request");
    } else {
        call->request = msg;
        m->handler->on_request(call, msg, m->user_data);
    }
    rpc_call_unref(call);
    return 0;
}

/* END_STREAM from the client. */
static void call_remote_close(rpc_call *call)
{
    call->remote_closed = true;
    if (call->state != CALL_ACTIVE)
        return;
    if (rpc_deframer_partial(&call->df)) {
        rpc_call_finish(call, RPC_STATUS_INTERNAL, "truncated message at end of stream");
        return;
    }
    const rpc__method *m = call->m;
    bool streaming_in =
        m->desc->kind == RPC_CLIENT_STREAMING || m->desc->kind == RPC_BIDI_STREAMING;
    if (!streaming_in) {
        if (call->n_requests == 0)
            rpc_call_finish(call, RPC_STATUS_UNIMPLEMENTED,
                            "no request message for a unary request");
        return;
    }
    if (m->handler->on_half_close) {
        rpc_call_ref(call);
        m->handler->on_half_close(call, m->user_data);
        rpc_call_unref(call);
    }
}

/* --- nghttp2 callbacks --------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    rpc__conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    rpc_call *call = mem_calloc(1, sizeof(*call));
    call->conn = c;
    call->w = c->w;
    call->stream_id = frame->hd.stream_id;
    call->refs = 1;
    rpc__link_init(&call->watch_link);
    memcpy(call->peer, c->peer, sizeof(call->peer));
    rpc__link_insert(&c->calls, &call->conn_link);
    c->n_calls++;
    atomic_fetch_add(&c->w->srv->n_calls, 1);
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, call);
    return 0;
}

static bool has_token(const uint8_t *v, size_t len, const char *tok)
{
    size_t tl = strlen(tok);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && v[e - 1] == ' ')
            e--;
        if (e - s == tl && memcmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    rpc_call *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (call == NULL || call->state != CALL_HEADERS)
        return 0; /* trailers from a client are not part of gRPC: ignored */
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes > call->w->srv->cfg.max_header_list) {
        call->headers_too_large = true;
        return 0;
    }
#define IS(s) (namelen == sizeof(s) - 1 && memcmp(name, s, namelen) == 0)
    if (IS(":path")) {
        free(call->path);
        call->path = mem_strndup((const char *)value, valuelen);
    } else if (IS(":method")) {
        call->method_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    } else if (IS("content-type")) {
        call->has_content_type = true;
        call->content_type_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                                (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (IS("grpc-timeout")) {
        if (rpc_timeout_parse((const char *)value, valuelen, &call->timeout_ms) < 0)
            call->bad_timeout = true;
    } else if (IS("grpc-encoding")) {
        if (valuelen == 4 && memcmp(value, "gzip", 4) == 0)
            call->req_gzip = true;
        else if (!(valuelen == 8 && memcmp(value, "identity", 8) == 0)) {
            free(call->bad_encoding);
            call->bad_encoding = mem_strndup((const char *)value, valuelen > 64 ? 64 : valuelen);
        }
    } else if (IS("grpc-accept-encoding")) {
        call->accept_gzip = has_token(value, valuelen, "gzip");
    } else if (namelen > 0 && name[0] == ':') {
        /* other pseudo-headers (:scheme, :authority) are not metadata */
    } else if (IS("te") || IS("connection")) {
    } else {
        char key[256];
        if (namelen >= sizeof(key))
            return 0;
        memcpy(key, name, namelen);
        key[namelen] = '\0';
        if (rpc_md_key_is_bin(key)) {
            uint8_t *bin;
            size_t binlen;
            if (rpc_base64_decode((const char *)value, valuelen, &bin, &binlen) < 0) {
                call->bad_metadata = true;
                return 0;
            }
            rpc_mdlist_add(&call->md, key, bin, binlen);
            free(bin);
        } else {
            rpc_mdlist_add(&call->md, key, value, valuelen);
        }
    }
#undef IS
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    rpc__conn *c = user_data;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
        rpc_call *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
        if (call == NULL)
            return 0;
        if (call->state == CALL_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS))
            call_dispatch(call);
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            call_remote_close(call);
        break;
    }
    case NGHTTP2_DATA: {
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            rpc_call *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
            if (call)
                call_remote_close(call);
        }
        break;
    }
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_sent = 0;
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    rpc_call *call = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (call == NULL || call->state != CALL_ACTIVE)
        return 0;
    int rv = rpc_deframer_feed(&call->df, data, len, on_request_message, call);
    if (rv == RPC_ERR_TOO_LARGE) {
        rpc_call_finishf(call, RPC_STATUS_RESOURCE_EXHAUSTED,
                         "received message larger than max (%zu)",
                         call->w->srv->cfg.max_recv_message);
    } else if (rv < 0) {
        rpc_call_finish(call, RPC_STATUS_INTERNAL, "malformed gRPC message framing");
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    rpc_call *call = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    /* Response complete while the client still sends: tell it to stop (RFC 9113 8.1). */
    if (call && !call->remote_closed)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)error_code;
    rpc__conn *c = user_data;
    rpc_call *call = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (call == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
    call_detach(call, c->closing ? RPC_CANCEL_CONN : RPC_CANCEL_CLIENT);
    return 0;
}

static nghttp2_session_callbacks *make_callbacks(void)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
}

static nghttp2_option *make_option(const rpc_server_config *cfg)
{
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* Flood defences, set explicitly rather than trusting library defaults. */
    nghttp2_option_set_stream_reset_rate_limit(opt, cfg->stream_reset_burst,
                                               cfg->stream_reset_rate);
    nghttp2_option_set_max_continuations(opt, cfg->max_continuations);
    nghttp2_option_set_max_settings(opt, cfg->max_settings);
    nghttp2_option_set_max_outbound_ack(opt, cfg->max_outbound_ack);
    nghttp2_option_set_max_send_header_block_length(opt, 65536);
    return opt;
}

void rpc__conns_cleanup(rpc__worker *w)
{
    free(w->wscratch);
    w->wscratch = NULL;
    w->wscap = 0;
    if (w->ng_option)
        nghttp2_option_del(w->ng_option);
    if (w->ng_callbacks)
        nghttp2_session_callbacks_del(w->ng_callbacks);
    w->ng_option = NULL;
    w->ng_callbacks = NULL;
}

/* --- connection I/O ------------------------------------------------------------------------ */

static void conn_free(rpc__conn *c)
{
    rpc__worker *w = c->w;
    rpc__link_remove(&c->link);
    w->n_conns--;
    atomic_fetch_sub(&w->srv->n_conns, 1);
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->timer);
    free(c->wbuf);
    free(c);
    rpc__worker_conn_closed(w);
}

static void conn_close(rpc__conn *c)
{
    if (c->closed)
        return;
    if (c->in_io) {
        c->closing = true;
        return;
    }
    c->closing = true;
    c->closed = true;
    /* Detach calls first: nghttp2_session_del does not report stream closes. */
    while (!rpc__link_empty(&c->calls)) {
        rpc_call *call = RPC__CONTAINER_OF(c->calls.next, rpc_call, conn_link);
        nghttp2_session_set_stream_user_data(c->ng, call->stream_id, NULL);
        call_detach(call, c->w->stopping ? RPC_CANCEL_SHUTDOWN : RPC_CANCEL_CONN);
    }
    nghttp2_session_del(c->ng);
    c->ng = NULL;
    close(c->fd);
    conn_free(c);
}

static void conn_after_io(rpc__conn *c);

/* Moves frames from nghttp2 to the socket. Returns false if the connection closed.
 * Frames are collected in the worker's scratch buffer (up to WBUF_FLUSH bytes per send()); a
 * connection holds a buffer of its own only for bytes the socket did not take, so an idle
 * connection keeps none. Nothing re-enters conn_write while the scratch is in use: flushes
 * asked for from callbacks are scheduled with event_active. */
static bool conn_write(rpc__conn *c)
{
    rpc__worker *w = c->w;
    for (;;) {
        /* This connection's unsent bytes go first. */
        while (c->woff < c->wlen) {
            ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    event_add(c->wev, NULL);
                    return true;
                }
                if (errno == EINTR)
                    continue;
                conn_close(c);
                return false;
            }
            c->woff += (size_t)n;
        }
        if (c->wbuf) {
            free(c->wbuf);
            c->wbuf = NULL;
            c->woff = c->wlen = 0;
        }
        if (c->ng == NULL)
            return true;
        size_t len = 0;
        c->in_io++;
        while (len < WBUF_FLUSH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->ng, &data);
            if (n < 0) {
                c->in_io--;
                conn_close(c);
                return false;
            }
            if (n == 0)
                break;
            if (len + (size_t)n > w->wscap) {
                size_t ncap = w->wscap ? w->wscap : WBUF_FLUSH;
                while (ncap < len + (size_t)n)
                    ncap *= 2;
                w->wscratch = mem_realloc(w->wscratch, ncap);
                w->wscap = ncap;
            }
            memcpy(w->wscratch + len, data, (size_t)n);
            len += (size_t)n;
        }
        c->in_io--;
        if (c->closing) {
            conn_close(c);
            return false;
        }
        if (len == 0)
            break;
        size_t off = 0;
        while (off < len) {
            ssize_t n = send(c->fd, w->wscratch + off, len - off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                if (errno != EAGAIN && errno != EWOULDBLOCK) {
                    conn_close(c);
                    return false;
                }
                /* The socket is full: keep the rest on the connection until it is writable. */
                c->wbuf = mem_dup(w->wscratch + off, len - off);
                c->wlen = len - off;
                c->woff = 0;
                event_add(c->wev, NULL);
                return true;
            }
            off += (size_t)n;
        }
    }
    event_del(c->wev);
    return true;
}

static void conn_notify_writable(rpc__conn *c)
{
    rpc_call *ready[64];
    size_t n = 0;
    for (rpc__link *l = c->calls.next; l != &c->calls && n < 64; l = l->next) {
        rpc_call *call = RPC__CONTAINER_OF(l, rpc_call, conn_link);
        const rpc_server_config *cfg = &c->w->srv->cfg;
        if (call->want_writable && call->queued <= cfg->stream_send_buffer / 2 &&
            c->queued <= cfg->conn_send_buffer / 2) {
            call->want_writable = false;
            rpc_call_ref(call);
            ready[n++] = call;
        }
    }
    for (size_t i = 0; i < n; i++) {
        rpc_call *call = ready[i];
        if (call->state != CALL_DONE && call->cb.on_writable)
            call->cb.on_writable(call, call->call_data);
        rpc_call_unref(call);
    }
}

static void conn_after_io(rpc__conn *c)
{
    if (!conn_write(c))
        return;
    if (c->ng == NULL)
        return;
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) && c->wlen == 0) {
        conn_close(c);
        return;
    }
    if (c->goaway && c->n_calls == 0 && c->wlen == 0) {
        conn_close(c);
        return;
    }
    /* Back-pressure: a peer that does not read what the socket already holds gets no more
     * reads. Bytes waiting for the peer's flow-control window do not count: reading is how its
     * WINDOW_UPDATE arrives. */
    bool congested = c->wlen > 0;
    if (congested && !c->reading_paused) {
        event_del(c->rev);
        c->reading_paused = true;
    } else if (!congested && c->reading_paused) {
        event_add(c->rev, NULL);
        c->reading_paused = false;
    }
    conn_notify_writable(c);
}

static void conn_schedule_flush(rpc__conn *c)
{
    if (c == NULL || c->closed)
        return;
    if (!c->in_io)
        event_active(c->wev, EV_WRITE, 0);
}

static void on_conn_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    rpc__conn *c = arg;
    rpc__worker *w = c->w;
    /* Bounded reads per wake-up keep one connection from starving the others. */
    for (int i = 0; i < 4; i++) {
        ssize_t n = recv(fd, w->rbuf, sizeof(w->rbuf), 0);
        if (n == 0) {
            conn_close(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            conn_close(c);
            return;
        }
        c->last_recv = rpc_now_ms();
        c->in_io++;
        ssize_t rv = nghttp2_session_mem_recv(c->ng, w->rbuf, (size_t)n);
        c->in_io--;
        if (rv < 0) {
            log_debug("%s: HTTP/2 error from %s: %s", w->srv->cfg.name, c->peer,
                      nghttp2_strerror((int)rv));
            /* nghttp2 has queued a GOAWAY for protocol errors: try to send it, then close. */
            c->closing = false;
            conn_write(c);
            conn_close(c);
            return;
        }
        if (c->closing) {
            conn_close(c);
            return;
        }
        if ((size_t)n < sizeof(w->rbuf))
            break;
    }
    conn_after_io(c);
}

static void on_conn_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_after_io(arg);
}

static void on_conn_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc__conn *c = arg;
    const rpc_server_config *cfg = &c->w->srv->cfg;
    int64_t now = rpc_now_ms();
    int64_t quiet = now - c->last_recv;
    if (c->n_calls == 0 && cfg->idle_timeout_ms && quiet >= cfg->idle_timeout_ms) {
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                              (const uint8_t *)"idle", 4);
        c->goaway = true;
        conn_after_io(c);
        return;
    }
    if (cfg->keepalive_ms) {
        if (c->ping_sent && now - c->ping_sent >= cfg->keepalive_timeout_ms) {
            log_debug("%s: keepalive timeout for %s", c->w->srv->cfg.name, c->peer);
            conn_close(c);
            return;
        }
        if (!c->ping_sent && quiet >= cfg->keepalive_ms) {
            nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, NULL);
            c->ping_sent = now;
            conn_after_io(c);
            if (c->closed)
                return;
        }
    }
}

void rpc__conn_accept(rpc__worker *w, int fd, const struct sockaddr *sa, socklen_t salen)
{
    (void)salen;
    rpc_server *srv = w->srv;
    if (w->ng_callbacks == NULL) {
        w->ng_callbacks = make_callbacks();
        w->ng_option = make_option(&srv->cfg);
    }
    rpc__conn *c = mem_calloc(1, sizeof(*c));
    c->w = w;
    c->fd = fd;
    rpc__link_init(&c->calls);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    nghttp2_session_server_new2(&c->ng, w->ng_callbacks, c, w->ng_option);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, srv->cfg.initial_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, srv->cfg.max_header_list},
    };
    nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    /* A larger connection window so many streams are not serialized behind 64 KiB. */
    nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)(srv->cfg.initial_window * 4 > 0x7fffffff
                                                        ? 0x7fffffff
                                                        : srv->cfg.initial_window * 4));
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, on_conn_read, c);
    c->wev = event_new(w->base, fd, EV_WRITE, on_conn_write, c);
    c->timer = event_new(w->base, -1, EV_PERSIST, on_conn_timer, c);
    c->last_recv = rpc_now_ms();
    rpc__link_insert(&w->conns, &c->link);
    w->n_conns++;
    atomic_fetch_add(&srv->n_conns, 1);
    event_add(c->rev, NULL);
    uint32_t tick = 10000;
    if (srv->cfg.keepalive_ms && srv->cfg.keepalive_ms / 2 < tick)
        tick = srv->cfg.keepalive_ms / 2;
    if (srv->cfg.keepalive_timeout_ms && srv->cfg.keepalive_timeout_ms / 2 < tick)
        tick = srv->cfg.keepalive_timeout_ms / 2;
    if (srv->cfg.idle_timeout_ms && srv->cfg.idle_timeout_ms / 2 < tick)
        tick = srv->cfg.idle_timeout_ms / 2;
    if (tick < 50)
        tick = 50;
    struct timeval tv = {tick / 1000, (tick % 1000) * 1000};
    event_add(c->timer, &tv);
    conn_after_io(c);
}

void rpc__conns_drain(rpc__worker *w)
{
    for (rpc__link *l = w->conns.next, *n; l != &w->conns; l = n) {
        n = l->next;
        rpc__conn *c = RPC__CONTAINER_OF(l, rpc__conn, link);
        if (c->goaway || c->closed)
            continue;
        nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR,
                              NULL, 0);
        c->goaway = true;
        conn_after_io(c);
    }
}

void rpc__conns_close_all(rpc__worker *w)
{
    while (!rpc__link_empty(&w->conns)) {
        rpc__conn *c = RPC__CONTAINER_OF(w->conns.next, rpc__conn, link);
        c->in_io = 0;
        conn_close(c);
    }
}

/*
 * rpc_client.c: the gRPC client channel (rpc_client.h) on nghttp2 + libevent.
 *
 * A channel owns at most one current connection, the one new calls go to,
 * plus connections draining after a GOAWAY. A call waits on the channel's
 * pending list until a connection is READY (the server's SETTINGS arrived),
 * then becomes one HTTP/2 stream on it. Requests go out through a data
 * provider that reads the call's queue of framed messages; when the queue is
 * empty the provider defers and rpc_ccall_send() resumes it.
 *
 * Re-entrancy (hiredis REDIS_IN_CALLBACK style):
 * - Every libevent callback, and every public function that may run user
 *   callbacks, brackets its work with ch_enter()/ch_leave(). Inside the
 *   bracket rpc_channel_free() only marks the channel, and dead connections
 *   are only marked; both are freed at the outermost ch_leave(), never inside
 *   an nghttp2 callback.
 * - A call whose status is decided while one of its own callbacks runs
 *   (call->hold > 0) gets on_close when that callback returns.
 * - nghttp2 never points at a call directly: a stream's user data is a small
 *   stream_ref that the call clears when it ends. nghttp2 may still send or
 *   close the stream afterwards; the ref lives until on_stream_close (or the
 *   session is deleted).
 *
 * Names: "localhost" and numeric IPv4/IPv6 hosts are resolved without DNS;
 * other names through evdns (the resolver's configuration is read once, when
 * the channel is created).
 *
 * Buffers, per connection: reads go through one 16 KiB stack buffer; writes are
 * coalesced: everything nghttp2 has to send is collected (nghttp2_session_mem_send)
 * into the connection's write buffer, up to CLIENT_WRITE_FLUSH bytes, and handed to
 * the socket in one send(), so a burst of calls costs one system call, not two per
 * call; bytes the socket does not take wait there for EV_WRITE (nghttp2 is not asked
 * for more meanwhile). Per call: the request queue (unbounded by design, see
 * rpc_ccall_send), the deframer's partial message (<= max_recv_message), and
 * response metadata (<= CLIENT_MAX_HEADER_LIST per header block).
 */
#include "rpc_client.h"

#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/util.h>
#include <nghttp2/nghttp2.h>

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "rpc_wire.h"

#ifndef CHAT_VERSION
#define CHAT_VERSION "0.1.0"
#endif

#define CLIENT_STREAM_WINDOW (1 << 20)    /* per-stream receive window we advertise, bytes */
#define CLIENT_CONN_WINDOW (16 << 20)     /* connection receive window, bytes */
#define CLIENT_MAX_HEADER_LIST (64 << 10) /* per response header block (RFC 7541 sizes) */
#define CLIENT_MAX_SEND_MESSAGE INT32_MAX /* largest request message, bytes */
#define CLIENT_READ_CHUNK 16384           /* bytes per recv() */
#define CLIENT_READS_PER_EVENT 8          /* recv() calls per readable event, for fairness */
#define CLIENT_WRITE_FLUSH 65536          /* coalesce up to this many bytes per send() */
#define KEEPALIVE_TIMEOUT_MS 20000        /* a keepalive PING unanswered this long kills the conn */
#define BACKOFF_MULTIPLIER 1.6
#define BACKOFF_JITTER 0.2

/* ------------------------------------------------------------------------------------------ */
/* intrusive lists                                                                             */

typedef struct clink {
    struct clink *prev, *next;
} clink;

#define CONTAINER_OF(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

static void clink_init(clink *h)
{
    h->prev = h->next = h;
}

static bool clink_empty(const clink *h)
{
    return h->next == h;
}

static void clink_add_tail(clink *h, clink *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static void clink_del(clink *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* ------------------------------------------------------------------------------------------ */
/* types                                                                                       */

typedef enum ch_state {
    CH_IDLE,       /* no connection; the next call starts one */
    CH_CONNECTING, /* ch->conn is being set up */
    CH_READY,      /* ch->conn takes calls */
    CH_BACKOFF,    /* the last attempt failed; waiting for backoff_ev */
} ch_state;

typedef enum conn_state {
    CONN_INIT,       /* created; resolution starts from the deferred event */
    CONN_RESOLVING,  /* waiting for evdns */
    CONN_CONNECTING, /* nonblocking connect() in progress */
    CONN_HANDSHAKE,  /* TCP up, preface sent, waiting for the server's SETTINGS */
    CONN_READY,      /* takes new calls */
    CONN_DRAINING,   /* GOAWAY received or stream ids exhausted: finishes its calls only */
    CONN_DEAD,       /* closed; freed at the outermost ch_leave() */
} conn_state;

typedef enum call_state {
    CALL_PENDING,  /* on ch->pending, no stream yet */
    CALL_ACTIVE,   /* a stream on call->conn */
    CALL_FINISHED, /* status decided; on_close pending or running */
} call_state;

typedef enum resp_encoding { ENC_IDENTITY, ENC_GZIP, ENC_OTHER } resp_encoding;

typedef struct sendbuf {
    struct sendbuf *next;
    size_t len;     /* bytes in data */
    size_t off;     /* bytes already handed to nghttp2 */
    uint8_t data[]; /* one framed message */
} sendbuf;

struct rpc_ccall;

/* What nghttp2 holds as a stream's user data. */
typedef struct stream_ref {
    struct rpc_ccall *call; /* NULL once the call ended */
    int32_t stream_id;      /* the stream */
    clink link;             /* in conn->refs */
} stream_ref;

typedef struct cconn {
    rpc_channel *ch;                          /* owner */
    clink link;                               /* in ch->conns */
    conn_state state;                         /* see conn_state */
    int fd;                                   /* socket, -1 before connect */
    struct event *rev;                        /* readable (persistent) */
    struct event *wev;                        /* writable or connected; activated to flush */
    struct event *timer;                      /* connect deadline, then keepalive ticks */
    nghttp2_session *ng;                      /* from CONN_HANDSHAKE on */
    clink calls;                              /* rpc_ccall.link of ACTIVE calls */
    size_t ncalls;                            /* entries in |calls| */
    clink refs;                               /* every stream_ref alive */
    struct evutil_addrinfo *addrs;            /* resolved addresses (owned) */
    struct evutil_addrinfo *next_addr;        /* next one to try */
    struct evdns_getaddrinfo_request *dnsreq; /* in flight while CONN_RESOLVING */
    bool write_blocked;                       /* the socket said EAGAIN */
    uint8_t *wbuf;                            /* output collected from nghttp2, or NULL */
    size_t wcap;                              /* allocated bytes of |wbuf| */
    size_t wlen;                              /* bytes in |wbuf| */
    size_t woff;                              /* of which already sent */
    bool ping_outstanding;                    /* keepalive PING sent, no ACK yet */
    int64_t ping_sent_ms;                     /* when */
    int64_t last_read_ms;                     /* last bytes from the server */
} cconn;

struct rpc_channel {
    struct event_base *base;  /* the loop */
    rpc_channel_config cfg;   /* copy; user_agent points at |user_agent| */
    char *target;             /* "host:port" as given: the :authority */
    char *host;               /* host to resolve (no brackets) */
    char *port;               /* decimal port */
    bool numeric;             /* host is an IP literal (or was localhost) */
    char *user_agent;         /* owned */
    struct evdns_base *dns;   /* for names, created lazily */
    ch_state state;           /* see ch_state */
    cconn *conn;              /* current connection or NULL */
    clink conns;              /* every connection alive (current and draining) */
    clink pending;            /* calls waiting for a READY connection */
    struct event *backoff_ev; /* end of the backoff delay */
    struct event *defer_ev;   /* deferred work: start attempts, fail-fast calls */
    int attempts;             /* failed attempts since the last READY */
    uint32_t backoff_ms;      /* current backoff */
    int64_t retry_at_ms;      /* monotonic: earliest start of the next attempt */
    char last_error[256];     /* why the last attempt failed */
    uint64_t rng;             /* xorshift state for jitter */
    int depth;                /* ch_enter() nesting */
    bool free_pending;        /* rpc_channel_free() was called */
};

struct rpc_ccall {
    rpc_channel *ch;            /* owner */
    cconn *conn;                /* while ACTIVE */
    clink link;                 /* in ch->pending or conn->calls */
    call_state state;           /* see call_state */
    const rpc_method_desc *m;   /* method */
    rpc_ccall_callbacks cb;     /* copy */
    void *user_data;            /* for |cb| */
    rpc_mdlist req_md;          /* request metadata copy */
    bool compress;              /* grpc-encoding: gzip on requests */
    bool wait_for_ready;        /* stays pending through failed attempts */
    bool fail_fast;             /* fail with UNAVAILABLE from the deferred event */
    int64_t deadline_ms;        /* monotonic, 0 = none */
    struct event *deadline_ev;  /* fires DEADLINE_EXCEEDED */
    stream_ref *sref;           /* while ACTIVE */
    int32_t stream_id;          /* while ACTIVE */
    sendbuf *sq_head, *sq_tail; /* framed requests not yet given to nghttp2 */
    size_t sq_bytes;            /* bytes in the queue */
    size_t n_sent;              /* messages queued so far */
    bool send_closed;           /* close_send called */
    bool data_deferred;         /* the data provider returned NGHTTP2_ERR_DEFERRED */
    int http_status;            /* :status, 0 until seen */
    bool got_headers;           /* the first header block has been processed */
    bool block_is_trailers;     /* the block being received carries trailing metadata */
    bool content_type_ok;       /* application/grpc[+proto|;...] */
    resp_encoding encoding;     /* response grpc-encoding */
    size_t hdr_bytes;           /* size of the block being received */
    rpc_mdlist resp_md;         /* initial metadata */
    rpc_mdlist trailers;        /* trailing metadata */
    bool have_grpc_status;      /* grpc-status seen */
    int grpc_status;            /* its value (UNKNOWN when unparsable) */
    char *grpc_message;         /* decoded grpc-message or NULL */
    rpc_deframer deframer;      /* response messages */
    size_t n_recv;              /* messages delivered */
    bool last_compressed;       /* flag of the message in on_message */
    int hold;                   /* > 0 while one of this call's callbacks runs */
    int code;                   /* final status, once FINISHED */
    char *message;              /* final message, once FINISHED */
};

/* ------------------------------------------------------------------------------------------ */
/* small helpers                                                                               */

static double rng_uniform(rpc_channel *ch)
{
    uint64_t x = ch->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    ch->rng = x;
    return (double)(x >> 11) / (double)(UINT64_C(1) << 53);
}

static bool streq_n(const uint8_t *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    return alen == blen && memcmp(a, b, alen) == 0;
}

static int http_to_grpc(int http)
{
    switch (http) {
    case 400:
        return RPC_STATUS_INTERNAL;
    case 401:
        return RPC_STATUS_UNAUTHENTICATED;
    case 403:
        return RPC_STATUS_PERMISSION_DENIED;
    case 404:
        return RPC_STATUS_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return RPC_STATUS_UNAVAILABLE;
    default:
        return RPC_STATUS_UNKNOWN;
    }
}

/* RST_STREAM error code -> status, as gRPC's PROTOCOL-HTTP2.md maps them. */
static int rst_to_grpc(uint32_t error_code)
{
    switch (error_code) {
    case NGHTTP2_REFUSED_STREAM:
        return RPC_STATUS_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return RPC_STATUS_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return RPC_STATUS_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return RPC_STATUS_PERMISSION_DENIED;
    default:
        return RPC_STATUS_INTERNAL;
    }
}

static bool unary_response(const rpc_method_desc *m)
{
    return m->kind == RPC_UNARY || m->kind == RPC_CLIENT_STREAMING;
}

/* ------------------------------------------------------------------------------------------ */
/* forward declarations                                                                        */

static void ch_enter(rpc_channel *ch);
static void ch_leave(rpc_channel *ch);
static void channel_connect(rpc_channel *ch);
static void conn_schedule_write(cconn *conn);
static void conn_fail(cconn *conn, const char *why);
static int call_submit(cconn *conn, rpc_ccall *call);

/* ------------------------------------------------------------------------------------------ */
/* calls: ending                                                                               */

static void call_destroy(rpc_ccall *call)
{
    if (call->deadline_ev)
        event_free(call->deadline_ev);
    for (sendbuf *b = call->sq_head, *n; b; b = n) {
        n = b->next;
        free(b);
    }
    rpc_mdlist_clear(&call->req_md);
    rpc_mdlist_clear(&call->resp_md);
    rpc_mdlist_clear(&call->trailers);
    rpc_deframer_free(&call->deframer);
    free(call->grpc_message);
    free(call->message);
    free(call);
}

static void deliver_close(rpc_ccall *call)
{
    call->hold++; /* a cancel from inside on_close is a no-op; nothing else can re-enter */
    rpc_status st = {
        .code = call->code,
        .message = call->message ? call->message : "",
        .trailers = &call->trailers,
    };
    if (call->cb.on_close)
        call->cb.on_close(call, &st, call->user_data);
    call_destroy(call);
}

static void call_hold(rpc_ccall *call)
{
    call->hold++;
}

/* Drops a hold; delivers on_close (and frees the call) when it was the last and the call has
 * ended. The caller must not touch |call| afterwards unless it knows the call is still open. */
static void call_release(rpc_ccall *call)
{
    if (--call->hold == 0 && call->state == CALL_FINISHED)
        deliver_close(call);
}

/* Takes the call off its list and its stream. |rst| >= 0 resets a stream still open with that
 * HTTP/2 error code. */
static void call_detach(rpc_ccall *call, int rst)
{
    if (call->state == CALL_PENDING) {
        clink_del(&call->link);
        return;
    }
    if (call->state != CALL_ACTIVE)
        return;
    cconn *conn = call->conn;
    clink_del(&call->link);
    conn->ncalls--;
    if (call->sref != NULL) {
        call->sref->call = NULL;
        call->sref = NULL;
    }
    call->conn = NULL;
    if (conn->state == CONN_DEAD || conn->ng == NULL)
        return;
    if (rst >= 0) {
        nghttp2_stream *s = nghttp2_session_find_stream(conn->ng, call->stream_id);
        /* A stream whose HEADERS are still queued is reset from on_frame_send. */
        if (s != NULL && nghttp2_stream_get_state(s) != NGHTTP2_STREAM_STATE_CLOSED)
            nghttp2_submit_rst_stream(conn->ng, NGHTTP2_FLAG_NONE, call->stream_id, (uint32_t)rst);
    }
    conn_schedule_write(conn);
}

/* Decides the final status of |call| (first decision wins) and delivers on_close now, or when
 * the callback of this call that is running returns. |message| is copied. */
static void call_finish(rpc_ccall *call, int code, const char *message, int rst)
{
    if (call->state == CALL_FINISHED)
        return;
    call_detach(call, rst);
    call->state = CALL_FINISHED;
    call->code = code;
    call->message = mem_strdup(message ? message : "");
    if (call->deadline_ev)
        event_del(call->deadline_ev);
    if (code != RPC_STATUS_OK)
        log_debug("rpc client: %s ended %s: %s", call->m->path, rpc_status_name(code),
                  call->message);
    if (call->hold == 0)
        deliver_close(call);
}

static void call_fail_all(clink *list, int code, const char *why)
{
    /* Each on_close may change the list, so always take the first. */
    while (!clink_empty(list)) {
        rpc_ccall *c = CONTAINER_OF(list->next, rpc_ccall, link);
        call_finish(c, code, why, NGHTTP2_CANCEL);
    }
}

/* Fails pending calls that may not wait (not wait_for_ready), or only those marked fail_fast. */
static void fail_pending(rpc_channel *ch, bool only_marked)
{
    bool again = true;
    while (again) {
        again = false;
        for (clink *l = ch->pending.next; l != &ch->pending; l = l->next) {
            rpc_ccall *c = CONTAINER_OF(l, rpc_ccall, link);
            if (only_marked ? c->fail_fast : !c->wait_for_ready) {
                call_finish(c, RPC_STATUS_UNAVAILABLE, ch->last_error, -1);
                again = true; /* the list may have changed under us: rescan */
                break;
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* calls: request side                                                                         */

static ssize_t data_read_cb(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    (void)source;
    (void)user_data;
    stream_ref *ref = nghttp2_session_get_stream_user_data(ng, stream_id);
    rpc_ccall *call = ref ? ref->call : NULL;
    if (call == NULL)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* ended: reset the stream */
    size_t n = 0;
    while (n < length && call->sq_head) {
        sendbuf *b = call->sq_head;
        size_t take = b->len - b->off;
        if (take > length - n)
            take = length - n;
        memcpy(buf + n, b->data + b->off, take);
        b->off += take;
        n += take;
        if (b->off == b->len) {
            call->sq_head = b->next;
            if (call->sq_head == NULL)
                call->sq_tail = NULL;
            free(b);
        }
    }
    call->sq_bytes -= n;
    if (call->sq_head == NULL && call->send_closed) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->data_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

/* Wakes the data provider after the queue grew or the call half-closed. */
static void call_kick(rpc_ccall *call)
{
    if (call->state != CALL_ACTIVE || !call->data_deferred)
        return;
    call->data_deferred = false;
    nghttp2_session_resume_data(call->conn->ng, call->stream_id);
    conn_schedule_write(call->conn);
}

static void call_enqueue(rpc_ccall *call, uint8_t *framed, size_t len)
{
    sendbuf *b = mem_alloc(sizeof(*b) + len);
    b->next = NULL;
    b->len = len;
    b->off = 0;
    memcpy(b->data, framed, len);
    if (call->sq_tail)
        call->sq_tail->next = b;
    else
        call->sq_head = b;
    call->sq_tail = b;
    call->sq_bytes += len;
    call->n_sent++;
}

static void nv_push(nghttp2_nv *nv, size_t *n, const char *name, const char *value, size_t vlen)
{
    nv[*n].name = (uint8_t *)(uintptr_t)name;
    nv[*n].namelen = strlen(name);
    nv[*n].value = (uint8_t *)(uintptr_t)value;
    nv[*n].valuelen = vlen;
    nv[*n].flags = NGHTTP2_NV_FLAG_NONE;
    (*n)++;
}

/* Opens the stream of |call| on |conn|. Returns 0, or -1 when the connection cannot take
 * another stream (the call stays where it was). Runs no user callback. */
static int call_submit(cconn *conn, rpc_ccall *call)
{
    rpc_channel *ch = conn->ch;
    size_t cap = 12 + call->req_md.n;
    nghttp2_nv *nv = mem_alloc(cap * sizeof(*nv));
    char **encoded = mem_calloc(call->req_md.n ? call->req_md.n : 1, sizeof(char *));
    char tbuf[32];
    size_t n = 0;

    nv_push(nv, &n, ":method", "POST", 4);
    nv_push(nv, &n, ":scheme", "http", 4);
    nv_push(nv, &n, ":path", call->m->path, strlen(call->m->path));
    nv_push(nv, &n, ":authority", ch->target, strlen(ch->target));
    nv_push(nv, &n, "content-type", "application/grpc", 16);
    nv_push(nv, &n, "te", "trailers", 8);
    nv_push(nv, &n, "user-agent", ch->user_agent, strlen(ch->user_agent));
    nv_push(nv, &n, "grpc-accept-encoding", "identity,gzip", 13);
    if (call->compress)
        nv_push(nv, &n, "grpc-encoding", "gzip", 4);
    if (call->deadline_ms > 0) {
        /* What is left of the deadline after waiting for the connection. */
        rpc_timeout_format(call->deadline_ms - clock_mono_ms(), tbuf, sizeof(tbuf));
        nv_push(nv, &n, "grpc-timeout", tbuf, strlen(tbuf));
    }
    for (size_t i = 0; i < call->req_md.n; i++) {
        const rpc_md *md = &call->req_md.items[i];
        if (rpc_md_key_is_bin(md->key)) {
            encoded[i] = rpc_base64_encode(md->value, md->value_len);
            nv_push(nv, &n, md->key, encoded[i], strlen(encoded[i]));
        } else {
            nv_push(nv, &n, md->key, (const char *)md->value, md->value_len);
        }
    }

    stream_ref *ref = mem_alloc(sizeof(*ref));
    ref->call = call;
    nghttp2_data_provider prd = {.source = {.ptr = ref}, .read_callback = data_read_cb};
    int32_t id = nghttp2_submit_request(conn->ng, NULL, nv, n, &prd, ref);
    for (size_t i = 0; i < call->req_md.n; i++)
        free(encoded[i]);
    free(encoded);
    free(nv);
    if (id < 0) {
        free(ref);
        log_warn("rpc client: cannot open a stream to %s: %s", ch->target, nghttp2_strerror(id));
        return -1;
    }
    ref->stream_id = id;
    clink_add_tail(&conn->refs, &ref->link);
    if (call->state == CALL_PENDING)
        clink_del(&call->link);
    call->state = CALL_ACTIVE;
    call->conn = conn;
    call->sref = ref;
    call->stream_id = id;
    call->data_deferred = false;
    clink_add_tail(&conn->calls, &call->link);
    conn->ncalls++;
    conn_schedule_write(conn);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* calls: response side                                                                        */

static rpc_ccall *stream_call(nghttp2_session *ng, int32_t stream_id)
{
    stream_ref *ref = nghttp2_session_get_stream_user_data(ng, stream_id);
    return ref ? ref->call : NULL;
}

static void md_add_header(rpc_mdlist *l, const uint8_t *name, size_t namelen, const uint8_t *value,
                          size_t valuelen)
{
    char key[256];
    if (namelen == 0 || namelen >= sizeof(key))
        return;
    memcpy(key, name, namelen);
    key[namelen] = '\0';
    if (rpc_md_key_is_bin(key)) {
        uint8_t *raw = NULL;
        size_t rawlen = 0;
        if (rpc_base64_decode((const char *)value, valuelen, &raw, &rawlen) != 0) {
            log_debug("rpc client: dropping %s: bad base64", key);
            return;
        }
        rpc_mdlist_add(l, key, raw, rawlen);
        free(raw);
        return;
    }
    if (rpc_mdlist_add(l, key, value, valuelen) != 0)
        log_debug("rpc client: dropping response header %s", key);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    rpc_ccall *call = stream_call(ng, frame->hd.stream_id);
    if (call == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    call->hdr_bytes = 0;
    /* A first block that ends the stream is Trailers-Only: its metadata is trailing. */
    call->block_is_trailers = call->got_headers || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    rpc_ccall *call = stream_call(ng, frame->hd.stream_id);
    if (call == NULL)
        return 0;
    call->hdr_bytes += namelen + valuelen + 32;
    if (call->hdr_bytes > CLIENT_MAX_HEADER_LIST) {
        call_finish(call, RPC_STATUS_RESOURCE_EXHAUSTED, "response metadata too large",
                    NGHTTP2_CANCEL);
        return 0;
    }
    if (!call->got_headers) {
        if (streq_n(name, namelen, ":status")) {
            int st = 0;
            for (size_t i = 0; i < valuelen && i < 4; i++)
                st = (value[i] >= '0' && value[i] <= '9') ? st * 10 + (value[i] - '0') : -1000;
            call->http_status = st > 0 ? st : -1;
            return 0;
        }
        if (streq_n(name, namelen, "content-type")) {
            call->content_type_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                                    (valuelen == 16 || value[16] == '+' || value[16] == ';');
        } else if (streq_n(name, namelen, "grpc-encoding")) {
            if (streq_n(value, valuelen, "gzip"))
                call->encoding = ENC_GZIP;
            else if (streq_n(value, valuelen, "identity"))
                call->encoding = ENC_IDENTITY;
            else
                call->encoding = ENC_OTHER;
        }
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    if (streq_n(name, namelen, "grpc-status")) {
        int st = 0;
        bool ok = valuelen > 0 && valuelen <= 9;
        for (size_t i = 0; ok && i < valuelen; i++) {
            if (value[i] < '0' || value[i] > '9')
                ok = false;
            else
                st = st * 10 + (value[i] - '0');
        }
        call->have_grpc_status = true;
        call->grpc_status = ok ? st : RPC_STATUS_UNKNOWN;
        return 0;
    }
    if (streq_n(name, namelen, "grpc-message")) {
        free(call->grpc_message);
        call->grpc_message = rpc_percent_decode((const char *)value, valuelen);
        return 0;
    }
    md_add_header(call->block_is_trailers ? &call->trailers : &call->resp_md, name, namelen, value,
                  valuelen);
    return 0;
}

/* The server ended the stream (END_STREAM on trailers, Trailers-Only headers or DATA). */
static void call_on_end(rpc_ccall *call, bool by_trailers)
{
    int code;
    const char *msg;
    char buf[96];

    if (call->have_grpc_status) {
        code = call->grpc_status;
        msg = call->grpc_message ? call->grpc_message : "";
        if (code == RPC_STATUS_OK && rpc_deframer_partial(&call->deframer)) {
            code = RPC_STATUS_INTERNAL;
            msg = "stream ended inside a message";
        } else if (code == RPC_STATUS_OK && unary_response(call->m) && call->n_recv == 0) {
            code = RPC_STATUS_INTERNAL;
            msg = "no response message for a unary-response call";
        }
    } else if (call->http_status != 200) {
        code = http_to_grpc(call->http_status);
        snprintf(buf, sizeof(buf), "HTTP status %d without grpc-status", call->http_status);
        msg = buf;
    } else if (by_trailers) {
        code = RPC_STATUS_UNKNOWN;
        msg = "missing grpc-status";
    } else {
        code = RPC_STATUS_INTERNAL;
        msg = "server closed the stream without sending trailers";
    }
    /* Our side still open (the server answered before we finished sending): stop it. */
    int rst = -1;
    if (call->conn != NULL &&
        nghttp2_session_get_stream_local_close(call->conn->ng, call->stream_id) == 0)
        rst = NGHTTP2_NO_ERROR;
    call_finish(call, code, msg, rst);
}

/* The first header block arrived without END_STREAM: validate it and report the metadata. */
static void call_on_headers(rpc_ccall *call)
{
    char buf[64];
    if (call->http_status != 200) {
        snprintf(buf, sizeof(buf), "HTTP status %d", call->http_status);
        call_finish(call,
                    call->http_status < 0 ? RPC_STATUS_INTERNAL : http_to_grpc(call->http_status),
                    buf, NGHTTP2_CANCEL);
        return;
    }
    if (!call->content_type_ok) {
        call_finish(call, RPC_STATUS_UNKNOWN, "response content-type is not application/grpc",
                    NGHTTP2_CANCEL);
        return;
    }
    if (call->cb.on_headers) {
        call_hold(call);
        call->cb.on_headers(call, &call->resp_md, call->user_data);
        call_release(call);
    }
}

enum { DEFRAME_STOP = -1 };

static int on_response_message(bool compressed, const uint8_t *data, size_t len, void *arg)
{
    rpc_ccall *call = arg;
    ProtobufCMessage *msg = NULL;

    if (call->state != CALL_ACTIVE)
        return DEFRAME_STOP;
    if (unary_response(call->m) && call->n_recv >= 1) {
        call_finish(call, RPC_STATUS_INTERNAL, "more than one response message for a unary call",
                    NGHTTP2_CANCEL);
        return DEFRAME_STOP;
    }
    if (compressed && call->encoding != ENC_GZIP) {
        call_finish(call, RPC_STATUS_INTERNAL,
                    call->encoding == ENC_OTHER
                        ? "compressed message in an unsupported grpc-encoding"
                        : "compressed flag set without grpc-encoding",
                    NGHTTP2_CANCEL);
        return DEFRAME_STOP;
    }
    int rv = rpc_decode_message(call->m->output, compressed, data, len,
                                call->ch->cfg.max_recv_message, &msg);
    if (rv == RPC_ERR_TOO_LARGE) {
        call_finish(call, RPC_STATUS_RESOURCE_EXHAUSTED,
                    "decompressed response larger than max_recv_message", NGHTTP2_CANCEL);
        return DEFRAME_STOP;
    }
    if (rv < 0) {
        call_finish(call, RPC_STATUS_INTERNAL,
                    compressed ? "cannot decompress or parse the response message"
                               : "cannot parse the response message",
                    NGHTTP2_CANCEL);
        return DEFRAME_STOP;
    }
    call->n_recv++;
    call->last_compressed = compressed;
    if (call->cb.on_message)
        call->cb.on_message(call, msg, call->user_data);
    call->last_compressed = false;
    protobuf_c_message_free_unpacked(msg, NULL);
    return call->state == CALL_ACTIVE ? 0 : DEFRAME_STOP;
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)user_data;
    rpc_ccall *call = stream_call(ng, stream_id);
    if (call == NULL)
        return 0;
    call_hold(call); /* on_message may cancel or free the channel: keep the call until here */
    int rv = rpc_deframer_feed(&call->deframer, data, len, on_response_message, call);
    if (rv == RPC_ERR_TOO_LARGE) {
        char buf[96];
        snprintf(buf, sizeof(buf), "response message larger than max_recv_message (%zu bytes)",
                 call->ch->cfg.max_recv_message);
        call_finish(call, RPC_STATUS_RESOURCE_EXHAUSTED, buf, NGHTTP2_CANCEL);
    } else if (rv == RPC_ERR_PROTO) {
        call_finish(call, RPC_STATUS_INTERNAL, "malformed message framing", NGHTTP2_CANCEL);
    }
    call_release(call);
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data);

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    (void)user_data;
    stream_ref *ref = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (ref == NULL)
        return 0;
    rpc_ccall *call = ref->call;
    clink_del(&ref->link);
    free(ref);
    nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
    if (call != NULL) {
        /* Closed before the server's END_STREAM was processed: a reset or a refusal. */
        char buf[128];
        snprintf(buf, sizeof(buf), "stream closed by the server: %s",
                 nghttp2_http2_strerror(error_code));
        call->sref = NULL; /* freed above */
        int code = rst_to_grpc(error_code);
        /* A server cancels a call whose grpc-timeout ran out; it may beat our own timer. */
        if (code == RPC_STATUS_CANCELLED && call->deadline_ms > 0 &&
            clock_mono_ms() >= call->deadline_ms)
            call_finish(call, RPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded", -1);
        else
            call_finish(call, code, buf, -1);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    stream_ref *ref = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    /* The call ended while its HEADERS were queued: reset the stream now that it exists. */
    if (ref != NULL && ref->call == NULL)
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_CANCEL);
    return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error,
                             void *user_data)
{
    cconn *conn = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    stream_ref *ref = NULL;
    for (clink *l = conn->refs.next; l != &conn->refs; l = l->next) {
        stream_ref *r = CONTAINER_OF(l, stream_ref, link);
        if (r->stream_id == frame->hd.stream_id) {
            ref = r;
            break;
        }
    }
    if (ref == NULL)
        return 0;
    bool opened = nghttp2_session_find_stream(ng, frame->hd.stream_id) != NULL;
    if (ref->call != NULL) {
        char buf[128];
        snprintf(buf, sizeof(buf), "could not start the stream: %s", nghttp2_strerror(lib_error));
        call_finish(ref->call, RPC_STATUS_UNAVAILABLE, buf, -1); /* clears ref->call */
    }
    if (!opened) {
        /* Never opened, so no on_stream_close will come to free it. */
        clink_del(&ref->link);
        free(ref);
    }
    return 0;
}

static int on_error(nghttp2_session *ng, int lib_error_code, const char *msg, size_t len,
                    void *user_data)
{
    (void)ng;
    (void)lib_error_code;
    cconn *conn = user_data;
    log_debug("rpc client: %s: nghttp2: %.*s", conn->ch->target, (int)len, msg);
    return 0;
}

/* Sends what nghttp2 has to send, coalesced (see "Buffers" above). Returns 0 (then
 * conn->write_blocked says whether bytes wait for EV_WRITE), an nghttp2 error, or
 * NGHTTP2_ERR_CALLBACK_FAILURE when the socket failed (conn->ch->last_error says why). nghttp2
 * callbacks may run meanwhile and may mark the connection dead. */
static int conn_write(cconn *conn)
{
    conn->write_blocked = false;
    for (;;) {
        while (conn->woff < conn->wlen) {
            ssize_t n =
                send(conn->fd, conn->wbuf + conn->woff, conn->wlen - conn->woff, MSG_NOSIGNAL);
            if (n >= 0) {
                conn->woff += (size_t)n;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn->write_blocked = true;
                return 0;
            }
            snprintf(conn->ch->last_error, sizeof(conn->ch->last_error), "send to %s: %s",
                     conn->ch->target, strerror(errno));
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        conn->woff = conn->wlen = 0;
        if (conn->state == CONN_DEAD)
            return 0;
        while (conn->wlen < CLIENT_WRITE_FLUSH) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(conn->ng, &data);
            if (n < 0)
                return (int)n;
            if (n == 0 || conn->state == CONN_DEAD)
                break;
            if (conn->wlen + (size_t)n > conn->wcap) {
                size_t ncap = conn->wcap ? conn->wcap : 16384;
                while (ncap < conn->wlen + (size_t)n)
                    ncap *= 2;
                conn->wbuf = mem_realloc(conn->wbuf, ncap);
                conn->wcap = ncap;
            }
            memcpy(conn->wbuf + conn->wlen, data, (size_t)n);
            conn->wlen += (size_t)n;
        }
        if (conn->wlen == 0)
            return 0;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* connections                                                                                 */

static void conn_schedule_write(cconn *conn)
{
    if (conn->state >= CONN_HANDSHAKE && conn->state != CONN_DEAD && conn->wev)
        event_active(conn->wev, EV_WRITE, 0);
}

/* Sends what nghttp2 has. May fail the connection (and so run user callbacks). */
static void conn_flush(cconn *conn)
{
    if (conn->state == CONN_DEAD || conn->ng == NULL)
        return;
    int rv = conn_write(conn);
    if (conn->state == CONN_DEAD)
        return;
    if (rv != 0) {
        char why[256];
        if (rv == NGHTTP2_ERR_CALLBACK_FAILURE)
            snprintf(why, sizeof(why), "%s", conn->ch->last_error);
        else
            snprintf(why, sizeof(why), "HTTP/2 error: %s", nghttp2_strerror(rv));
        conn_fail(conn, why);
        return;
    }
    if (conn->write_blocked) {
        event_add(conn->wev, NULL);
        return;
    }
    if (!nghttp2_session_want_read(conn->ng) && !nghttp2_session_want_write(conn->ng)) {
        conn_fail(conn, "connection closed (GOAWAY)");
        return;
    }
    if (conn->state == CONN_DRAINING && conn->ncalls == 0)
        conn_fail(conn, "connection drained");
}

/* Marks |conn| dead, updates the channel and fails the calls on it. The memory stays until
 * the outermost ch_leave(). */
static void conn_fail(cconn *conn, const char *why)
{
    rpc_channel *ch = conn->ch;
    if (conn->state == CONN_DEAD)
        return;
    conn_state was = conn->state;
    conn->state = CONN_DEAD;
    if (conn->rev)
        event_del(conn->rev);
    if (conn->wev)
        event_del(conn->wev);
    if (conn->timer)
        event_del(conn->timer);
    if (conn->dnsreq) {
        struct evdns_getaddrinfo_request *r = conn->dnsreq;
        conn->dnsreq = NULL;
        evdns_getaddrinfo_cancel(r);
    }
    if (conn->fd >= 0)
        shutdown(conn->fd, SHUT_RDWR);

    char msg[sizeof(ch->last_error)];
    snprintf(msg, sizeof(msg), "%s", why);
    bool current = ch->conn == conn;
    bool attempt_failed = current && was < CONN_READY;
    if (current) {
        ch->conn = NULL;
        if (attempt_failed) {
            snprintf(ch->last_error, sizeof(ch->last_error), "%s", msg);
            ch->attempts++;
            ch->state = CH_BACKOFF;
            clock_event_add_ms(ch->backoff_ev, ch->retry_at_ms - clock_mono_ms());
            log_debug("rpc client: %s: attempt failed (%s), retry in %lld ms", ch->target, msg,
                      (long long)(ch->retry_at_ms - clock_mono_ms()));
        } else {
            ch->state = CH_IDLE;
        }
    }
    if (was >= CONN_READY)
        log_debug("rpc client: %s: connection lost: %s", ch->target, msg);
    call_fail_all(&conn->calls, RPC_STATUS_UNAVAILABLE, msg);
    if (attempt_failed)
        fail_pending(ch, false);
    else if (ch->state == CH_IDLE && ch->conn == NULL && !clink_empty(&ch->pending) &&
             !ch->free_pending)
        channel_connect(ch);
}

static void conn_destroy(cconn *conn)
{
    if (conn->dnsreq) {
        struct evdns_getaddrinfo_request *r = conn->dnsreq;
        conn->dnsreq = NULL;
        evdns_getaddrinfo_cancel(r);
    }
    if (conn->ng)
        nghttp2_session_del(conn->ng);
    while (!clink_empty(&conn->refs)) {
        stream_ref *r = CONTAINER_OF(conn->refs.next, stream_ref, link);
        clink_del(&r->link);
        free(r);
    }
    if (conn->rev)
        event_free(conn->rev);
    if (conn->wev)
        event_free(conn->wev);
    if (conn->timer)
        event_free(conn->timer);
    if (conn->fd >= 0)
        close(conn->fd);
    if (conn->addrs)
        evutil_freeaddrinfo(conn->addrs);
    free(conn->wbuf);
    clink_del(&conn->link);
    free(conn);
}

static void conn_ready(cconn *conn)
{
    rpc_channel *ch = conn->ch;
    conn->state = CONN_READY;
    event_del(conn->timer);
    ch->attempts = 0;
    if (ch->conn == conn)
        ch->state = CH_READY;
    log_debug("rpc client: %s: connected", ch->target);
    if (ch->cfg.keepalive_ms > 0)
        clock_event_add_ms(conn->timer, ch->cfg.keepalive_ms);
    while (!clink_empty(&ch->pending)) {
        rpc_ccall *c = CONTAINER_OF(ch->pending.next, rpc_ccall, link);
        c->fail_fast = false;
        if (call_submit(conn, c) != 0)
            break;
    }
}

/* The server said GOAWAY: streams above |last_id| were not processed; the connection takes no
 * new calls and closes when its calls are done. */
static void conn_goaway(cconn *conn, int32_t last_id, uint32_t error_code)
{
    rpc_channel *ch = conn->ch;
    log_debug("rpc client: %s: GOAWAY last_stream_id=%d error=%s", ch->target, (int)last_id,
              nghttp2_http2_strerror(error_code));
    if (conn->state == CONN_HANDSHAKE) {
        /* Refused before it was ever ready: a failed attempt, so the backoff applies. */
        char why[160];
        snprintf(why, sizeof(why), "%s refused the connection (GOAWAY %s)", ch->target,
                 nghttp2_http2_strerror(error_code));
        conn_fail(conn, why);
        return;
    }
    if (conn->state == CONN_READY || conn->state == CONN_HANDSHAKE)
        conn->state = CONN_DRAINING;
    if (ch->conn == conn) {
        ch->conn = NULL;
        ch->state = CH_IDLE;
        ch->attempts = 0;
    }
    bool again = true;
    while (again) {
        again = false;
        for (clink *l = conn->calls.next; l != &conn->calls; l = l->next) {
            rpc_ccall *c = CONTAINER_OF(l, rpc_ccall, link);
            if (c->stream_id > last_id) {
                call_finish(c, RPC_STATUS_UNAVAILABLE,
                            "connection going away (GOAWAY) before the call was processed",
                            NGHTTP2_CANCEL);
                again = true;
                break;
            }
        }
    }
    if (ch->conn == NULL && ch->state == CH_IDLE && !clink_empty(&ch->pending) && !ch->free_pending)
        channel_connect(ch);
    conn_schedule_write(conn); /* closes it from conn_flush when nothing is left */
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    cconn *conn = user_data;
    rpc_ccall *call;

    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && conn->state == CONN_HANDSHAKE)
            conn_ready(conn);
        break;
    case NGHTTP2_GOAWAY:
        conn_goaway(conn, frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && conn->ping_outstanding) {
            conn->ping_outstanding = false;
            clock_event_add_ms(conn->timer,
                               conn->ch->cfg.keepalive_ms); /* was waiting for the ACK */
        }
        break;
    case NGHTTP2_HEADERS:
        call = stream_call(ng, frame->hd.stream_id);
        if (call == NULL)
            break;
        if (!call->got_headers) {
            call->got_headers = true;
            if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
                call_on_end(call, true); /* Trailers-Only */
            else
                call_on_headers(call);
        } else if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            call_on_end(call, true);
        }
        break;
    case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
            call = stream_call(ng, frame->hd.stream_id);
            if (call != NULL)
                call_on_end(call, false);
        }
        break;
    default:
        break;
    }
    return 0;
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    cconn *conn = arg;
    rpc_channel *ch = conn->ch;
    uint8_t buf[CLIENT_READ_CHUNK];

    ch_enter(ch);
    for (int i = 0; i < CLIENT_READS_PER_EVENT && conn->state != CONN_DEAD; i++) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            conn->last_read_ms = clock_mono_ms();
            ssize_t rv = nghttp2_session_mem_recv(conn->ng, buf, (size_t)n);
            if (conn->state == CONN_DEAD || ch->free_pending)
                break;
            if (rv < 0) {
                char why[128];
                snprintf(why, sizeof(why), "HTTP/2 error from %s: %s", ch->target,
                         nghttp2_strerror((int)rv));
                /* Tell the server why before closing, when the session can still say it. */
                conn_write(conn);
                conn_fail(conn, why);
                break;
            }
            if ((size_t)n < sizeof(buf))
                break;
            continue;
        }
        if (n == 0) {
            char why[128];
            snprintf(why, sizeof(why), "connection to %s closed by the server", ch->target);
            conn_fail(conn, why);
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            char why[128];
            snprintf(why, sizeof(why), "recv from %s: %s", ch->target, strerror(errno));
            conn_fail(conn, why);
        }
        break;
    }
    conn_flush(conn);
    ch_leave(ch);
}

static void conn_start_session(cconn *conn)
{
    rpc_channel *ch = conn->ch;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_max_reserved_remote_streams(opt, 0);
    nghttp2_session_client_new2(&conn->ng, cbs, conn, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CLIENT_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CLIENT_MAX_HEADER_LIST},
    };
    nghttp2_submit_settings(conn->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(conn->ng, NGHTTP2_FLAG_NONE, 0, CLIENT_CONN_WINDOW);
    conn->state = CONN_HANDSHAKE;
    conn->last_read_ms = clock_mono_ms();
    event_add(conn->rev, NULL);
    conn_flush(conn);
    (void)ch;
}

static void conn_try_next(cconn *conn);

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    cconn *conn = arg;
    rpc_channel *ch = conn->ch;
    ch_enter(ch);
    if (conn->state == CONN_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err != 0) {
            snprintf(ch->last_error, sizeof(ch->last_error), "connect to %s: %s", ch->target,
                     strerror(err));
            conn_try_next(conn);
        } else {
            conn_start_session(conn);
        }
    } else {
        conn_flush(conn);
    }
    ch_leave(ch);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cconn *conn = arg;
    rpc_channel *ch = conn->ch;
    char why[160];
    ch_enter(ch);
    if (conn->state < CONN_READY) {
        snprintf(why, sizeof(why), "connect to %s: timed out", ch->target);
        conn_fail(conn, why);
    } else if (conn->state != CONN_DEAD && ch->cfg.keepalive_ms > 0) {
        int64_t now = clock_mono_ms();
        if (conn->ping_outstanding && now - conn->ping_sent_ms >= KEEPALIVE_TIMEOUT_MS) {
            snprintf(why, sizeof(why), "keepalive PING to %s not answered", ch->target);
            conn_fail(conn, why);
        } else {
            if (!conn->ping_outstanding && now - conn->last_read_ms >= ch->cfg.keepalive_ms) {
                nghttp2_submit_ping(conn->ng, NGHTTP2_FLAG_NONE, NULL);
                conn->ping_outstanding = true;
                conn->ping_sent_ms = now;
                conn_flush(conn);
            }
            if (conn->state != CONN_DEAD)
                clock_event_add_ms(conn->timer,
                                   conn->ping_outstanding
                                       ? KEEPALIVE_TIMEOUT_MS - (now - conn->ping_sent_ms)
                                       : ch->cfg.keepalive_ms - (now - conn->last_read_ms));
        }
    }
    ch_leave(ch);
}

static void conn_set_fd(cconn *conn, int fd)
{
    rpc_channel *ch = conn->ch;
    if (conn->rev)
        event_free(conn->rev);
    if (conn->wev)
        event_free(conn->wev);
    if (conn->fd >= 0)
        close(conn->fd);
    conn->fd = fd;
    conn->rev = event_new(ch->base, fd, EV_READ | EV_PERSIST, conn_read_cb, conn);
    conn->wev = event_new(ch->base, fd, EV_WRITE, conn_write_cb, conn);
}

/* Connects to the next resolved address; fails the attempt when none is left. */
static void conn_try_next(cconn *conn)
{
    rpc_channel *ch = conn->ch;
    while (conn->next_addr) {
        struct evutil_addrinfo *ai = conn->next_addr;
        conn->next_addr = ai->ai_next;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
        if (fd < 0) {
            snprintf(ch->last_error, sizeof(ch->last_error), "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_set_fd(conn, fd);
        conn->state = CONN_CONNECTING;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            conn_start_session(conn);
            return;
        }
        if (errno == EINPROGRESS) {
            event_add(conn->wev, NULL);
            return;
        }
        snprintf(ch->last_error, sizeof(ch->last_error), "connect to %s: %s", ch->target,
                 strerror(errno));
    }
    char why[sizeof(ch->last_error)];
    snprintf(why, sizeof(why), "%s", ch->last_error);
    conn_fail(conn, why);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    cconn *conn = arg;
    if (result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        return; /* the connection is being torn down */
    }
    rpc_channel *ch = conn->ch;
    ch_enter(ch);
    conn->dnsreq = NULL;
    if (result != 0 || res == NULL) {
        char why[192];
        snprintf(why, sizeof(why), "resolve %s: %s", ch->host, evutil_gai_strerror(result));
        conn_fail(conn, why);
    } else {
        conn->addrs = res;
        conn->next_addr = res;
        conn_try_next(conn);
    }
    ch_leave(ch);
}

/* Resolves and connects; runs from the deferred event so that rpc_ccall_start() never sees a
 * failure synchronously. */
static void conn_begin(cconn *conn)
{
    rpc_channel *ch = conn->ch;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    if (ch->numeric) {
        hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV;
        struct evutil_addrinfo *res = NULL;
        int rv = evutil_getaddrinfo(ch->host, ch->port, &hints, &res);
        if (rv != 0) {
            char why[192];
            snprintf(why, sizeof(why), "resolve %s: %s", ch->host, evutil_gai_strerror(rv));
            conn_fail(conn, why);
            return;
        }
        conn->addrs = res;
        conn->next_addr = res;
        conn_try_next(conn);
        return;
    }
    if (ch->dns == NULL) {
        ch->dns = evdns_base_new(ch->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                               EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (ch->dns == NULL) {
            conn_fail(conn, "cannot initialise the DNS resolver");
            return;
        }
    }
    conn->state = CONN_RESOLVING;
    hints.ai_flags = EVUTIL_AI_NUMERICSERV;
    /* The callback may run before this returns (hosts file, cache); then the result is NULL. */
    struct evdns_getaddrinfo_request *r =
        evdns_getaddrinfo(ch->dns, ch->host, ch->port, &hints, dns_cb, conn);
    if (r != NULL && conn->state == CONN_RESOLVING)
        conn->dnsreq = r;
}

static cconn *conn_new(rpc_channel *ch)
{
    cconn *conn = mem_calloc(1, sizeof(*conn));
    conn->ch = ch;
    conn->fd = -1;
    conn->state = CONN_INIT;
    clink_init(&conn->calls);
    clink_init(&conn->refs);
    conn->timer = evtimer_new(ch->base, conn_timer_cb, conn);
    clink_add_tail(&ch->conns, &conn->link);
    return conn;
}

/* ------------------------------------------------------------------------------------------ */
/* channel                                                                                     */

static void channel_destroy(rpc_channel *ch)
{
    while (!clink_empty(&ch->conns)) {
        cconn *conn = CONTAINER_OF(ch->conns.next, cconn, link);
        conn_destroy(conn);
    }
    if (ch->dns)
        evdns_base_free(ch->dns, 0);
    event_free(ch->backoff_ev);
    event_free(ch->defer_ev);
    free(ch->target);
    free(ch->host);
    free(ch->port);
    free(ch->user_agent);
    free(ch);
}

static void ch_enter(rpc_channel *ch)
{
    ch->depth++;
}

/* Leaves a bracket; at the outermost one frees dead connections and a channel whose free was
 * requested. |ch| may be gone afterwards. */
static void ch_leave(rpc_channel *ch)
{
    if (--ch->depth > 0)
        return;
    for (clink *l = ch->conns.next, *n; l != &ch->conns; l = n) {
        n = l->next;
        cconn *conn = CONTAINER_OF(l, cconn, link);
        if (conn->state == CONN_DEAD)
            conn_destroy(conn);
    }
    if (ch->free_pending)
        channel_destroy(ch);
}

/* Starts a connection attempt (the work happens in the deferred event). */
static void channel_connect(rpc_channel *ch)
{
    int64_t now = clock_mono_ms();
    if (ch->attempts == 0) {
        ch->backoff_ms = ch->cfg.backoff_initial_ms;
        ch->retry_at_ms = now + ch->backoff_ms;
    } else {
        double b = (double)ch->backoff_ms * BACKOFF_MULTIPLIER;
        if (b > ch->cfg.backoff_max_ms)
            b = ch->cfg.backoff_max_ms;
        ch->backoff_ms = (uint32_t)b;
        double jitter = (rng_uniform(ch) * 2 - 1) * BACKOFF_JITTER * b;
        ch->retry_at_ms = now + (int64_t)llround(b + jitter);
    }
    cconn *conn = conn_new(ch);
    ch->conn = conn;
    ch->state = CH_CONNECTING;
    /* The attempt may take until the backoff deadline, but at least connect_timeout_ms. */
    int64_t limit = ch->retry_at_ms - now;
    if (limit < (int64_t)ch->cfg.connect_timeout_ms)
        limit = ch->cfg.connect_timeout_ms;
    clock_event_add_ms(conn->timer, limit);
    event_active(ch->defer_ev, EV_TIMEOUT, 0);
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_channel *ch = arg;
    ch_enter(ch);
    if (!ch->free_pending && ch->conn && ch->conn->state == CONN_INIT)
        conn_begin(ch->conn);
    fail_pending(ch, true);
    ch_leave(ch);
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_channel *ch = arg;
    ch_enter(ch);
    if (ch->state == CH_BACKOFF) {
        ch->state = CH_IDLE;
        /* Without waiting calls the channel stays idle until the next call. */
        if (!clink_empty(&ch->pending))
            channel_connect(ch);
    }
    ch_leave(ch);
}

void rpc_channel_config_init(rpc_channel_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_recv_message = 4 << 20;
    cfg->connect_timeout_ms = 20000;
    cfg->backoff_initial_ms = 1000;
    cfg->backoff_max_ms = 120000;
    cfg->keepalive_ms = 0;
    cfg->user_agent = NULL;
}

/* Splits "host:port" / "[v6]:port". Returns 0 or RPC_ERR_INVALID. */
static int parse_target(const char *target, char **host, char **port)
{
    const char *colon;
    const char *h;
    size_t hlen;
    if (target[0] == '[') {
        const char *close = strchr(target, ']');
        if (close == NULL || close[1] != ':')
            return RPC_ERR_INVALID;
        h = target + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(target, ':');
        if (colon == NULL || memchr(target, ':', (size_t)(colon - target)) != NULL)
            return RPC_ERR_INVALID;
        h = target;
        hlen = (size_t)(colon - target);
    }
    const char *p = colon + 1;
    size_t plen = strlen(p);
    if (hlen == 0 || plen == 0 || plen > 5)
        return RPC_ERR_INVALID;
    long v = 0;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9')
            return RPC_ERR_INVALID;
        v = v * 10 + (p[i] - '0');
    }
    if (v < 1 || v > 65535)
        return RPC_ERR_INVALID;
    *host = mem_strndup(h, hlen);
    *port = mem_strdup(p);
    return 0;
}

static bool host_is_numeric(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return evutil_inet_pton(AF_INET, host, &a4) == 1 || evutil_inet_pton(AF_INET6, host, &a6) == 1;
}

int rpc_channel_new(rpc_channel **out, struct event_base *base, const char *target,
                    const rpc_channel_config *cfg)
{
    char *host = NULL, *port = NULL;
    if (out == NULL || base == NULL || target == NULL)
        return RPC_ERR_INVALID;
    if (parse_target(target, &host, &port) != 0)
        return RPC_ERR_INVALID;
    rpc_channel *ch = mem_calloc(1, sizeof(*ch));
    ch->base = base;
    if (cfg)
        ch->cfg = *cfg;
    else
        rpc_channel_config_init(&ch->cfg);
    rpc_channel_config def;
    rpc_channel_config_init(&def);
    if (ch->cfg.max_recv_message == 0)
        ch->cfg.max_recv_message = def.max_recv_message;
    if (ch->cfg.connect_timeout_ms == 0)
        ch->cfg.connect_timeout_ms = def.connect_timeout_ms;
    if (ch->cfg.backoff_initial_ms == 0)
        ch->cfg.backoff_initial_ms = def.backoff_initial_ms;
    if (ch->cfg.backoff_max_ms == 0)
        ch->cfg.backoff_max_ms = def.backoff_max_ms;
    if (ch->cfg.backoff_max_ms < ch->cfg.backoff_initial_ms)
        ch->cfg.backoff_max_ms = ch->cfg.backoff_initial_ms;
    ch->user_agent =
        mem_strdup(ch->cfg.user_agent ? ch->cfg.user_agent : "chat-rpc-c/" CHAT_VERSION);
    ch->cfg.user_agent = ch->user_agent;
    ch->target = mem_strdup(target);
    if (strcmp(host, "localhost") == 0) {
        /* Documented: "localhost" means 127.0.0.1, without asking a resolver. */
        free(host);
        host = mem_strdup("127.0.0.1");
    }
    ch->host = host;
    ch->port = port;
    ch->numeric = host_is_numeric(host);
    ch->state = CH_IDLE;
    clink_init(&ch->conns);
    clink_init(&ch->pending);
    ch->backoff_ev = evtimer_new(base, backoff_cb, ch);
    ch->defer_ev = event_new(base, -1, 0, defer_cb, ch);
    ch->rng = (uint64_t)clock_mono_ms() * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)(uintptr_t)ch;
    if (ch->rng == 0)
        ch->rng = 1;
    snprintf(ch->last_error, sizeof(ch->last_error), "not connected to %s", target);
    *out = ch;
    return 0;
}

void rpc_channel_free(rpc_channel *ch)
{
    if (ch == NULL || ch->free_pending)
        return;
    ch->free_pending = true;
    ch_enter(ch);
    event_del(ch->backoff_ev);
    event_del(ch->defer_ev);
    call_fail_all(&ch->pending, RPC_STATUS_CANCELLED, "channel closed");
    for (clink *l = ch->conns.next; l != &ch->conns; l = l->next) {
        cconn *conn = CONTAINER_OF(l, cconn, link);
        call_fail_all(&conn->calls, RPC_STATUS_CANCELLED, "channel closed");
    }
    ch_leave(ch);
}

bool rpc_channel_connected(const rpc_channel *ch)
{
    return ch != NULL && ch->state == CH_READY;
}

/* ------------------------------------------------------------------------------------------ */
/* calls: public API                                                                           */

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_ccall *call = arg;
    rpc_channel *ch = call->ch;
    ch_enter(ch);
    call_finish(call, RPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded", NGHTTP2_CANCEL);
    ch_leave(ch);
}

int rpc_ccall_start(rpc_ccall **out, rpc_channel *ch, const rpc_method_desc *m,
                    const rpc_call_opts *opts, const rpc_ccall_callbacks *cb, void *user_data)
{
    static const rpc_call_opts no_opts;
    if (out == NULL || ch == NULL || m == NULL || m->path == NULL || m->output == NULL ||
        ch->free_pending)
        return RPC_ERR_INVALID;
    if (opts == NULL)
        opts = &no_opts;
    bool gzip = false;
    if (opts->compression != NULL && strcmp(opts->compression, "identity") != 0) {
        if (strcmp(opts->compression, "gzip") != 0)
            return RPC_ERR_INVALID;
        gzip = true;
    }
    if (opts->timeout_ms < 0)
        return RPC_ERR_INVALID;
    if (opts->metadata) {
        for (size_t i = 0; i < opts->metadata->n; i++) {
            const char *k = opts->metadata->items[i].key;
            /* Reserved and connection-specific names are the runtime's to send. */
            if (!rpc_md_key_valid(k, true) || strcmp(k, "content-type") == 0 ||
                strcmp(k, "te") == 0 || strcmp(k, "connection") == 0 || strcmp(k, "host") == 0 ||
                strcmp(k, "user-agent") == 0 || strcmp(k, "transfer-encoding") == 0 ||
                strcmp(k, "upgrade") == 0 || strcmp(k, "keep-alive") == 0 ||
                strcmp(k, "proxy-connection") == 0)
                return RPC_ERR_INVALID;
        }
    }

    rpc_ccall *call = mem_calloc(1, sizeof(*call));
    call->ch = ch;
    call->m = m;
    if (cb)
        call->cb = *cb;
    call->user_data = user_data;
    call->compress = gzip;
    call->wait_for_ready = opts->wait_for_ready;
    clink_init(&call->link);
    rpc_deframer_init(&call->deframer, ch->cfg.max_recv_message);
    if (opts->metadata) {
        for (size_t i = 0; i < opts->metadata->n; i++) {
            const rpc_md *md = &opts->metadata->items[i];
            rpc_mdlist_add(&call->req_md, md->key, md->value, md->value_len);
        }
    }
    if (opts->timeout_ms > 0) {
        call->deadline_ms = clock_mono_ms() + opts->timeout_ms;
        call->deadline_ev = evtimer_new(ch->base, deadline_cb, call);
        clock_event_add_ms(call->deadline_ev, opts->timeout_ms);
    }
    call->state = CALL_PENDING;

    switch (ch->state) {
    case CH_READY:
        if (call_submit(ch->conn, call) == 0)
            break;
        /* The connection has no stream ids left: drain it and use a new one. */
        ch->conn->state = CONN_DRAINING;
        conn_schedule_write(ch->conn);
        ch->conn = NULL;
        ch->state = CH_IDLE;
        clink_add_tail(&ch->pending, &call->link);
        channel_connect(ch);
        break;
    case CH_IDLE:
        clink_add_tail(&ch->pending, &call->link);
        channel_connect(ch);
        break;
    case CH_CONNECTING:
        clink_add_tail(&ch->pending, &call->link);
        break;
    case CH_BACKOFF:
        clink_add_tail(&ch->pending, &call->link);
        if (!call->wait_for_ready) {
            call->fail_fast = true;
            event_active(ch->defer_ev, EV_TIMEOUT, 0);
        }
        break;
    }
    *out = call;
    return 0;
}

static int call_send_framed(rpc_ccall *call, const ProtobufCMessage *msg, const uint8_t *raw,
                            size_t rawlen, bool compress)
{
    uint8_t *framed = NULL;
    size_t flen = 0;
    int rv;
    if (call == NULL)
        return RPC_ERR_INVALID;
    if (call->state == CALL_FINISHED || call->send_closed)
        return RPC_ERR_CLOSED;
    if (msg)
        rv = rpc_frame_message(msg, compress, CLIENT_MAX_SEND_MESSAGE, &framed, &flen);
    else
        rv = rpc_frame_bytes(raw, rawlen, compress, CLIENT_MAX_SEND_MESSAGE, &framed, &flen);
    if (rv < 0)
        return rv;
    call_enqueue(call, framed, flen);
    free(framed);
    call_kick(call);
    return 0;
}

int rpc_ccall_send(rpc_ccall *call, const ProtobufCMessage *msg)
{
    if (call == NULL || msg == NULL)
        return RPC_ERR_INVALID;
    if (call->state != CALL_FINISHED && !call->send_closed &&
        (call->m->kind == RPC_UNARY || call->m->kind == RPC_SERVER_STREAMING) && call->n_sent > 0)
        return RPC_ERR_INVALID; /* one request only for these kinds */
    return call_send_framed(call, msg, NULL, 0, call->compress);
}

int rpc_ccall_send_ex(rpc_ccall *call, const ProtobufCMessage *msg, bool compress)
{
    if (call == NULL || msg == NULL || (compress && !call->compress))
        return RPC_ERR_INVALID;
    if (call->state != CALL_FINISHED && !call->send_closed &&
        (call->m->kind == RPC_UNARY || call->m->kind == RPC_SERVER_STREAMING) && call->n_sent > 0)
        return RPC_ERR_INVALID;
    return call_send_framed(call, msg, NULL, 0, compress);
}

int rpc_ccall_send_raw(rpc_ccall *call, const uint8_t *data, size_t len)
{
    if (call == NULL || (data == NULL && len > 0))
        return RPC_ERR_INVALID;
    return call_send_framed(call, NULL, data ? data : (const uint8_t *)"", len, call->compress);
}

int rpc_ccall_close_send(rpc_ccall *call)
{
    if (call == NULL)
        return RPC_ERR_INVALID;
    if (call->state == CALL_FINISHED)
        return RPC_ERR_CLOSED;
    if (call->send_closed)
        return 0;
    call->send_closed = true;
    call_kick(call);
    return 0;
}

void rpc_ccall_cancel(rpc_ccall *call)
{
    if (call == NULL || call->state == CALL_FINISHED)
        return;
    rpc_channel *ch = call->ch;
    ch_enter(ch);
    call_finish(call, RPC_STATUS_CANCELLED, "cancelled by the client", NGHTTP2_CANCEL);
    ch_leave(ch);
}

size_t rpc_ccall_pending_bytes(const rpc_ccall *call)
{
    return call ? call->sq_bytes : 0;
}

const char *rpc_ccall_response_header(const rpc_ccall *call, const char *key)
{
    if (call == NULL || key == NULL)
        return NULL;
    const rpc_md *md = rpc_mdlist_get(&call->resp_md, key);
    if (md == NULL)
        md = rpc_mdlist_get(&call->trailers, key);
    return md ? (const char *)md->value : NULL;
}

bool rpc_ccall_message_compressed(const rpc_ccall *call)
{
    return call != NULL && call->last_compressed;
}

/* ------------------------------------------------------------------------------------------ */

static void run_until_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

int rpc_run_until(struct event_base *base, const bool *done, int64_t timeout_ms)
{
    bool timed_out = false;
    struct event *t = NULL;
    if (timeout_ms > 0) {
        t = evtimer_new(base, run_until_timeout_cb, &timed_out);
        clock_event_add_ms(t, timeout_ms);
    }
    while (!*done && !timed_out) {
        /* 1: nothing left that could ever set *done. */
        if (event_base_loop(base, EVLOOP_ONCE) != 0)
            break;
    }
    if (t)
        event_free(t);
    return *done ? 0 : -ETIMEDOUT;
}

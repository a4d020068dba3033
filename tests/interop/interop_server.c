/*
 * interop_server: grpc.testing.TestService on our runtime, so that grpc-go's
 * official interop client can check us (tests/interop/run_go_client_vs_c_server.sh).
 *
 *   interop_server --port N [--workers N]
 *
 * Behaviour follows gRPC's interop test descriptions: payload sizes, echoed
 * metadata (x-grpc-test-echo-initial, x-grpc-test-echo-trailing-bin),
 * response_status, per-message compression and expect_compressed checks,
 * and response intervals served by timers (never by sleeping).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "grpc/testing/test.rpc-c.h"
#include "log.h"
#include "mem.h"
#include "service.h"

#define MAX_PAYLOAD (4 << 20)

static void echo_metadata(rpc_call *call)
{
    const rpc_md *m = rpc_mdlist_get(rpc_call_metadata(call), "x-grpc-test-echo-initial");
    if (m)
        rpc_call_add_initial_metadata(call, m->key, m->value, m->value_len);
    m = rpc_mdlist_get(rpc_call_metadata(call), "x-grpc-test-echo-trailing-bin");
    if (m)
        rpc_call_add_trailing_metadata(call, m->key, m->value, m->value_len);
}

/* Fills |p| with |size| zero bytes (COMPRESSABLE). Caller frees p->body.data. */
static int make_payload(Grpc__Testing__Payload *p, int32_t size)
{
    if (size < 0 || size > MAX_PAYLOAD)
        return -1;
    p->type = GRPC__TESTING__PAYLOAD_TYPE__COMPRESSABLE;
    p->body.len = (size_t)size;
    p->body.data = mem_calloc(1, (size_t)size ? (size_t)size : 1);
    return 0;
}

static bool finish_with_requested_status(rpc_call *call, const Grpc__Testing__EchoStatus *st)
{
    if (st == NULL || st->code == 0)
        return false;
    rpc_call_finish(call, st->code, st->message);
    return true;
}

static void empty_call(rpc_call *call, const Grpc__Testing__Empty *req, void *user_data)
{
    (void)req;
    (void)user_data;
    Grpc__Testing__Empty resp = GRPC__TESTING__EMPTY__INIT;
    echo_metadata(call);
    rpc_call_reply(call, &resp.base);
}

static void unary_call(rpc_call *call, const Grpc__Testing__SimpleRequest *req, void *user_data)
{
    (void)user_data;
    echo_metadata(call);
    if (req->expect_compressed && req->expect_compressed->value &&
        !rpc_call_request_compressed(call)) {
        rpc_call_finish(call, RPC_STATUS_INVALID_ARGUMENT, "expected a compressed request");
        return;
    }
    if (finish_with_requested_status(call, req->response_status))
        return;
    Grpc__Testing__SimpleResponse resp = GRPC__TESTING__SIMPLE_RESPONSE__INIT;
    Grpc__Testing__Payload payload = GRPC__TESTING__PAYLOAD__INIT;
    if (make_payload(&payload, req->response_size) < 0) {
        rpc_call_finishf(call, RPC_STATUS_INVALID_ARGUMENT, "response_size %d out of range",
                         req->response_size);
        return;
    }
    resp.payload = &payload;
    unsigned flags = RPC_SEND_NO_COMPRESS;
    if (req->response_compressed && req->response_compressed->value) {
        rpc_call_set_compression(call, "gzip");
        flags = 0;
    }
    if (rpc_call_send_flags(call, &resp.base, flags) == 0)
        rpc_call_finish(call, RPC_STATUS_OK, NULL);
    else
        rpc_call_finish(call, RPC_STATUS_INTERNAL, "cannot send response");
    free(payload.body.data);
}

/* --- streaming responses with intervals and back-pressure ---------------------------------- */

typedef struct pending {
    int32_t size;
    int32_t interval_us;
    bool compressed;
} pending;

typedef struct out_stream {
    rpc_call *call;                    /* referenced while the stream lives */
    pending *q;                        /* responses waiting to be sent, bounded by MAX_PENDING */
    size_t head, n, cap;               /* ring */
    struct event *timer;               /* interval between responses */
    bool timer_armed;                  /* waiting for |timer| */
    bool half_closed;                  /* finish OK once |q| drains */
    bool blocked;                      /* waiting for on_writable */
    Grpc__Testing__EchoStatus *status; /* status to finish with after the queue (owned copy) */
} out_stream;

#define MAX_PENDING 1024

static void out_stream_free(void *p)
{
    out_stream *s = p;
    if (s->timer)
        event_free(s->timer);
    free(s->q);
    if (s->status) {
        free(s->status->message);
        free(s->status);
    }
    free(s);
}

static void out_pump(out_stream *s);

static void on_interval(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    out_stream *s = arg;
    s->timer_armed = false;
    out_pump(s);
    rpc_call_unref(s->call);
}

static void on_writable(rpc_call *call, void *call_data)
{
    (void)call;
    out_stream *s = call_data;
    s->blocked = false;
    out_pump(s);
}

static void on_cancel(rpc_call *call, rpc_cancel_reason reason, void *call_data)
{
    (void)call;
    (void)reason;
    out_stream *s = call_data;
    if (s->timer_armed) {
        event_del(s->timer);
        s->timer_armed = false;
        rpc_call_unref(s->call);
    }
}

static void out_pump(out_stream *s)
{
    rpc_call *call = s->call;
    while (!rpc_call_is_done(call) && !s->timer_armed && !s->blocked && s->n > 0) {
        pending *p = &s->q[s->head];
        if (p->interval_us > 0) {
            int32_t us = p->interval_us;
            p->interval_us = 0;
            struct timeval tv = {us / 1000000, us % 1000000};
            rpc_call_ref(call);
            s->timer_armed = true;
            event_add(s->timer, &tv);
            return;
        }
        Grpc__Testing__StreamingOutputCallResponse resp =
            GRPC__TESTING__STREAMING_OUTPUT_CALL_RESPONSE__INIT;
        Grpc__Testing__Payload payload = GRPC__TESTING__PAYLOAD__INIT;
        make_payload(&payload, p->size);
        resp.payload = &payload;
        int rv = rpc_call_send_flags(call, &resp.base, p->compressed ? 0 : RPC_SEND_NO_COMPRESS);
        free(payload.body.data);
        if (rv == RPC_ERR_WOULDBLOCK) {
            s->blocked = true;
            return;
        }
        if (rv < 0) {
            rpc_call_finish(call, RPC_STATUS_INTERNAL, rpc_strerror(rv));
            return;
        }
        s->head = (s->head + 1) % s->cap;
        s->n--;
    }
    if (!rpc_call_is_done(call) && s->n == 0 && !s->timer_armed) {
        if (s->status)
            rpc_call_finish(call, s->status->code, s->status->message);
        else if (s->half_closed)
            rpc_call_finish(call, RPC_STATUS_OK, NULL);
    }
}

static out_stream *out_stream_get(rpc_call *call)
{
    out_stream *s = rpc_call_data(call);
    if (s)
        return s;
    s = mem_calloc(1, sizeof(*s));
    s->call = call;
    s->cap = 16;
    s->q = mem_calloc(s->cap, sizeof(*s->q));
    s->timer = evtimer_new(rpc_call_base(call), on_interval, s);
    /* grpc-encoding goes out with the response headers, before the first response, but a later
     * request of a bidi call may still ask for a compressed response: announce gzip up front
     * (ignored when the client does not accept it) and choose per message with
     * RPC_SEND_NO_COMPRESS. */
    rpc_call_set_compression(call, "gzip");
    rpc_call_set_data(call, s, out_stream_free);
    const rpc_call_callbacks cb = {.on_cancel = on_cancel, .on_writable = on_writable};
    rpc_call_set_callbacks(call, &cb, s);
    return s;
}

/* Queues the responses one request asks for. Returns false (and finishes the call) when the
 * request is invalid. */
static bool out_enqueue(out_stream *s, const Grpc__Testing__StreamingOutputCallRequest *req)
{
    for (size_t i = 0; i < req->n_response_parameters; i++) {
        const Grpc__Testing__ResponseParameters *rp = req->response_parameters[i];
        if (rp->size < 0 || rp->size > MAX_PAYLOAD || rp->interval_us < 0) {
            rpc_call_finish(s->call, RPC_STATUS_INVALID_ARGUMENT, "bad response parameters");
            return false;
        }
        if (s->n == MAX_PENDING) {
            rpc_call_finish(s->call, RPC_STATUS_RESOURCE_EXHAUSTED,
                            "more than 1024 responses pending");
            return false;
        }
        if (s->n == s->cap) {
            pending *nq = mem_calloc(s->cap * 2, sizeof(*nq));
            for (size_t j = 0; j < s->n; j++)
                nq[j] = s->q[(s->head + j) % s->cap];
            free(s->q);
            s->q = nq;
            s->head = 0;
            s->cap *= 2;
        }
        bool compressed = rp->compressed && rp->compressed->value;
        s->q[(s->head + s->n) % s->cap] =
            (pending){.size = rp->size, .interval_us = rp->interval_us, .compressed = compressed};
        s->n++;
    }
    if (req->response_status && req->response_status->code != 0 && s->status == NULL) {
        s->status = mem_calloc(1, sizeof(*s->status));
        s->status->code = req->response_status->code;
        s->status->message =
            mem_strdup(req->response_status->message ? req->response_status->message : "");
    }
    return true;
}

static void streaming_output_call(rpc_call *call,
                                  const Grpc__Testing__StreamingOutputCallRequest *req,
                                  void *user_data)
{
    (void)user_data;
    echo_metadata(call);
    out_stream *s = out_stream_get(call);
    s->half_closed = true;
    if (out_enqueue(s, req))
        out_pump(s);
}

static void full_duplex_start(rpc_call *call, void *user_data)
{
    (void)user_data;
    echo_metadata(call);
    out_stream_get(call);
}

static void full_duplex_message(rpc_call *call,
                                const Grpc__Testing__StreamingOutputCallRequest *req,
                                void *user_data)
{
    (void)user_data;
    out_stream *s = out_stream_get(call);
    if (out_enqueue(s, req))
        out_pump(s);
}

static void full_duplex_half_close(rpc_call *call, void *user_data)
{
    (void)user_data;
    out_stream *s = out_stream_get(call);
    s->half_closed = true;
    out_pump(s);
}

/* --- client streaming ---------------------------------------------------------------------- */

typedef struct in_sum {
    int64_t total;
} in_sum;

static void streaming_input_start(rpc_call *call, void *user_data)
{
    (void)user_data;
    echo_metadata(call);
    rpc_call_set_data(call, mem_calloc(1, sizeof(in_sum)), free);
}

static void streaming_input_message(rpc_call *call,
                                    const Grpc__Testing__StreamingInputCallRequest *req,
                                    void *user_data)
{
    (void)user_data;
    in_sum *sum = rpc_call_data(call);
    if (req->expect_compressed && req->expect_compressed->value &&
        !rpc_call_request_compressed(call)) {
        rpc_call_finish(call, RPC_STATUS_INVALID_ARGUMENT, "expected a compressed message");
        return;
    }
    if (req->payload)
        sum->total += (int64_t)req->payload->body.len;
}

static void streaming_input_half_close(rpc_call *call, void *user_data)
{
    (void)user_data;
    in_sum *sum = rpc_call_data(call);
    Grpc__Testing__StreamingInputCallResponse resp =
        GRPC__TESTING__STREAMING_INPUT_CALL_RESPONSE__INIT;
    resp.aggregated_payload_size = (int32_t)sum->total;
    rpc_call_reply(call, &resp.base);
}

static const Grpc__Testing__TestService__RpcServer test_service = {
    .empty_call = empty_call,
    .unary_call = unary_call,
    .cacheable_unary_call = unary_call,
    .streaming_output_call = streaming_output_call,
    .streaming_input_call =
        {
            .on_start = streaming_input_start,
            .on_message = streaming_input_message,
            .on_half_close = streaming_input_half_close,
        },
    .full_duplex_call =
        {
            .on_start = full_duplex_start,
            .on_message = full_duplex_message,
            .on_half_close = full_duplex_half_close,
        },
};

static int setup(rpc_server *srv, int argc, char **argv, void *user_data)
{
    (void)argc;
    (void)argv;
    (void)user_data;
    return grpc__testing__test_service__rpc_register(srv, &test_service);
}

int main(int argc, char **argv)
{
    const service_def def = {
        .name = "interop_server",
        .default_port = 10000,
        .setup = setup,
    };
    return service_main(&def, argc, argv);
}

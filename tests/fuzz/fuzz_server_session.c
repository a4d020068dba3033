/*
 * fuzz_server_session: raw connection bytes into a real server session. An rpc_server with
 * grpc.testing.TestService (plus the built-in health and reflection services) is driven through
 * lib/rpc_fuzz.c: each input is one connection on a socketpair, read by the production
 * rpc_conn.c code (nghttp2 mem_recv/mem_send, calls, deframing, handlers, responses), then
 * closed.
 *
 * Input: byte 0 is control: bit 7 prepends the HTTP/2 client preface (so mutations need not
 * keep it intact), bits 0-6 pick the write size (0: the whole input at once; n: n bytes, or
 * 64 * (n - 64) bytes for n > 64). The rest is what the client sends.
 *
 * The handlers answer at once, later (a zero timer, exercising references across a connection
 * close) and with errors, so every path of a call's life is reachable. A small
 * max_recv_message (64 KiB) makes the limit reachable too.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "grpc/testing/test.rpc-c.h"
#include "log.h"
#include "rpc_server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Test-only hooks of lib/rpc_fuzz.c (see there). */
typedef struct rpc__fuzz rpc__fuzz;
int rpc__fuzz_new(rpc__fuzz **out, rpc_server *srv);
int rpc__fuzz_feed(rpc__fuzz *f, const uint8_t *data, size_t len, size_t chunk);
struct event_base *rpc__fuzz_base(rpc__fuzz *f);
void rpc__fuzz_free(rpc__fuzz *f);

#define MAX_PAYLOAD 2048 /* responses stay small: the fuzzer wants paths, not bytes */
#define MAX_RESPONSES 8

static rpc__fuzz *fz;

static void send_payload(rpc_call *call, int32_t size, bool compressed)
{
    static uint8_t zeros[MAX_PAYLOAD];
    Grpc__Testing__StreamingOutputCallResponse resp =
        GRPC__TESTING__STREAMING_OUTPUT_CALL_RESPONSE__INIT;
    Grpc__Testing__Payload p = GRPC__TESTING__PAYLOAD__INIT;
    p.body.data = zeros;
    p.body.len = size < 0 ? 0 : size > MAX_PAYLOAD ? MAX_PAYLOAD : (size_t)size;
    resp.payload = &p;
    rpc_call_send_flags(call, &resp.base, compressed ? 0 : RPC_SEND_NO_COMPRESS);
}

static void echo_metadata(rpc_call *call)
{
    const rpc_md *m = rpc_mdlist_get(rpc_call_metadata(call), "x-grpc-test-echo-initial");
    if (m)
        rpc_call_add_initial_metadata(call, m->key, m->value, m->value_len);
    m = rpc_mdlist_get(rpc_call_metadata(call), "x-grpc-test-echo-trailing-bin");
    if (m)
        rpc_call_add_trailing_metadata(call, m->key, m->value, m->value_len);
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
    if (req->response_status && req->response_status->code) {
        rpc_call_finish(call, req->response_status->code, req->response_status->message);
        return;
    }
    if (req->response_compressed && req->response_compressed->value)
        rpc_call_set_compression(call, "gzip");
    static uint8_t zeros[MAX_PAYLOAD];
    Grpc__Testing__SimpleResponse resp = GRPC__TESTING__SIMPLE_RESPONSE__INIT;
    Grpc__Testing__Payload p = GRPC__TESTING__PAYLOAD__INIT;
    int32_t size = req->response_size;
    p.body.data = zeros;
    p.body.len = size < 0 ? 0 : size > MAX_PAYLOAD ? MAX_PAYLOAD : (size_t)size;
    resp.payload = &p;
    rpc_call_reply(call, &resp.base);
}

/* CacheableUnaryCall answers from a zero timer: the call may be gone (connection closed) by
 * then, which is what a handler's reference and rpc_call_is_done() are for. */
static void deferred_reply(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rpc_call *call = arg;
    if (!rpc_call_is_done(call)) {
        Grpc__Testing__SimpleResponse resp = GRPC__TESTING__SIMPLE_RESPONSE__INIT;
        rpc_call_reply(call, &resp.base);
    }
    rpc_call_unref(call);
}

static void cacheable_unary_call(rpc_call *call, const Grpc__Testing__SimpleRequest *req,
                                 void *user_data)
{
    (void)req;
    (void)user_data;
    rpc_call_ref(call);
    struct timeval zero = {0, 0};
    if (event_base_once(rpc_call_base(call), -1, EV_TIMEOUT, deferred_reply, call, &zero) < 0)
        rpc_call_unref(call);
}

static void respond(rpc_call *call, const Grpc__Testing__StreamingOutputCallRequest *req)
{
    for (size_t i = 0; i < req->n_response_parameters && i < MAX_RESPONSES; i++) {
        const Grpc__Testing__ResponseParameters *rp = req->response_parameters[i];
        send_payload(call, rp->size, rp->compressed && rp->compressed->value);
    }
    if (req->response_status && req->response_status->code)
        rpc_call_finish(call, req->response_status->code, req->response_status->message);
}

static void streaming_output_call(rpc_call *call,
                                  const Grpc__Testing__StreamingOutputCallRequest *req,
                                  void *user_data)
{
    (void)user_data;
    echo_metadata(call);
    respond(call, req);
    if (!rpc_call_is_done(call))
        rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

typedef struct upload {
    int32_t total;
} upload;

static void streaming_input_start(rpc_call *call, void *user_data)
{
    (void)user_data;
    rpc_call_set_data(call, calloc(1, sizeof(upload)), free);
}

static void streaming_input_message(rpc_call *call,
                                    const Grpc__Testing__StreamingInputCallRequest *msg,
                                    void *user_data)
{
    (void)user_data;
    upload *u = rpc_call_data(call);
    if (u && msg->payload)
        u->total += (int32_t)msg->payload->body.len;
}

static void streaming_input_half_close(rpc_call *call, void *user_data)
{
    (void)user_data;
    upload *u = rpc_call_data(call);
    Grpc__Testing__StreamingInputCallResponse resp =
        GRPC__TESTING__STREAMING_INPUT_CALL_RESPONSE__INIT;
    resp.aggregated_payload_size = u ? u->total : 0;
    rpc_call_reply(call, &resp.base);
}

static void full_duplex_start(rpc_call *call, void *user_data)
{
    (void)user_data;
    echo_metadata(call);
}

static void full_duplex_message(rpc_call *call,
                                const Grpc__Testing__StreamingOutputCallRequest *msg,
                                void *user_data)
{
    (void)user_data;
    respond(call, msg);
}

static void finish_ok(rpc_call *call, void *user_data)
{
    (void)user_data;
    rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

static void half_duplex_message(rpc_call *call,
                                const Grpc__Testing__StreamingOutputCallRequest *msg,
                                void *user_data)
{
    (void)call;
    (void)msg;
    (void)user_data;
}

static const Grpc__Testing__TestService__RpcServer test_service = {
    .empty_call = empty_call,
    .unary_call = unary_call,
    .cacheable_unary_call = cacheable_unary_call,
    .streaming_output_call = streaming_output_call,
    .streaming_input_call = {.on_start = streaming_input_start,
                             .on_message = streaming_input_message,
                             .on_half_close = streaming_input_half_close},
    .full_duplex_call = {.on_start = full_duplex_start,
                         .on_message = full_duplex_message,
                         .on_half_close = finish_ok},
    .half_duplex_call = {.on_message = half_duplex_message, .on_half_close = finish_ok},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR);
    rpc_server_config cfg;
    rpc_server_config_init(&cfg);
    cfg.name = "fuzz";
    cfg.workers = 1;
    cfg.max_recv_message = 65536;
    cfg.max_concurrent_streams = 16;
    cfg.install_signal_handlers = false;
    rpc_server *srv;
    if (rpc_server_new(&srv, &cfg) != 0 ||
        grpc__testing__test_service__rpc_register(srv, &test_service) != 0 ||
        rpc__fuzz_new(&fz, srv) != 0)
        abort();
    /* The server lives as long as the process: libFuzzer never tears down. */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    size_t chunk = ctl & 0x7f;
    if (chunk > 64)
        chunk = 64 * (chunk - 64);
    if (ctl & 0x80) {
        uint8_t *buf = malloc(sizeof(preface) - 1 + size);
        memcpy(buf, preface, sizeof(preface) - 1);
        memcpy(buf + sizeof(preface) - 1, data, size);
        rpc__fuzz_feed(fz, buf, sizeof(preface) - 1 + size, chunk);
        free(buf);
    } else {
        rpc__fuzz_feed(fz, data, size, chunk);
    }
    return 0;
}

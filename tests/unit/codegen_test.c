/* Unit tests of the code protoc-gen-rpc-c generated into gen/: method and service descriptors,
 * the file descriptors reflection serves (names, imports, symbols, the embedded bytes), the
 * typed register function and a typed client call against the real runtime. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "google/protobuf/descriptor.rpc-c.h"
#include "grpc/health/v1/health.rpc-c.h"
#include "grpc/reflection/v1/reflection.rpc-c.h"
#include "grpc/reflection/v1alpha/reflection.rpc-c.h"
#include "grpc/testing/test.rpc-c.h"

static bool has_symbol(const rpc_file_desc *f, const char *name)
{
    for (size_t i = 0; i < f->n_symbols; i++) {
        if (strcmp(f->symbols[i], name) == 0)
            return true;
    }
    return false;
}

static bool has_dep(const rpc_file_desc *f, const char *name)
{
    for (size_t i = 0; i < f->n_deps; i++) {
        if (strcmp(f->deps[i]->name, name) == 0)
            return true;
    }
    return false;
}

static void test_test_service_methods(void **state)
{
    const rpc_service_desc *svc = &grpc__testing__test_service__rpc_desc;
    static const struct {
        const char *name;
        rpc_method_kind kind;
    } want[] = {
        {"EmptyCall", RPC_UNARY},
        {"UnaryCall", RPC_UNARY},
        {"CacheableUnaryCall", RPC_UNARY},
        {"StreamingOutputCall", RPC_SERVER_STREAMING},
        {"StreamingInputCall", RPC_CLIENT_STREAMING},
        {"FullDuplexCall", RPC_BIDI_STREAMING},
        {"HalfDuplexCall", RPC_BIDI_STREAMING},
        {"UnimplementedCall", RPC_UNARY},
    };
    (void)state;

    assert_string_equal(svc->name, "grpc.testing.TestService");
    assert_int_equal(svc->n_methods, sizeof want / sizeof want[0]);
    assert_ptr_equal(svc->methods, grpc__testing__test_service__rpc_methods);
    for (size_t i = 0; i < svc->n_methods; i++) {
        char path[128];
        snprintf(path, sizeof path, "/grpc.testing.TestService/%s", want[i].name);
        assert_string_equal(svc->methods[i].name, want[i].name);
        assert_string_equal(svc->methods[i].path, path);
        assert_int_equal(svc->methods[i].kind, want[i].kind);
    }

    const rpc_method_desc *unary = &svc->methods[GRPC__TESTING__TEST_SERVICE__RPC_UNARY_CALL];
    assert_string_equal(unary->path, "/grpc.testing.TestService/UnaryCall");
    assert_ptr_equal(unary->input, &grpc__testing__simple_request__descriptor);
    assert_ptr_equal(unary->output, &grpc__testing__simple_response__descriptor);
    assert_string_equal(unary->input->name, "grpc.testing.SimpleRequest");

    const rpc_method_desc *empty = &svc->methods[GRPC__TESTING__TEST_SERVICE__RPC_EMPTY_CALL];
    assert_ptr_equal(empty->input, &grpc__testing__empty__descriptor); /* from empty.proto */

    const rpc_method_desc *up =
        &svc->methods[GRPC__TESTING__TEST_SERVICE__RPC_STREAMING_INPUT_CALL];
    assert_ptr_equal(up->input, &grpc__testing__streaming_input_call_request__descriptor);
    assert_ptr_equal(up->output, &grpc__testing__streaming_input_call_response__descriptor);
}

static void test_other_services(void **state)
{
    (void)state;
    const rpc_service_desc *health = &grpc__health__v1__health__rpc_desc;
    assert_string_equal(health->name, "grpc.health.v1.Health");
    assert_int_equal(health->n_methods, 2);
    assert_string_equal(health->methods[GRPC__HEALTH__V1__HEALTH__RPC_CHECK].path,
                        "/grpc.health.v1.Health/Check");
    assert_int_equal(health->methods[GRPC__HEALTH__V1__HEALTH__RPC_CHECK].kind, RPC_UNARY);
    assert_string_equal(health->methods[GRPC__HEALTH__V1__HEALTH__RPC_WATCH].path,
                        "/grpc.health.v1.Health/Watch");
    assert_int_equal(health->methods[GRPC__HEALTH__V1__HEALTH__RPC_WATCH].kind,
                     RPC_SERVER_STREAMING);

    const rpc_service_desc *v1 = &grpc__reflection__v1__server_reflection__rpc_desc;
    assert_string_equal(v1->name, "grpc.reflection.v1.ServerReflection");
    assert_int_equal(v1->n_methods, 1);
    assert_string_equal(v1->methods[0].path,
                        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    assert_int_equal(v1->methods[0].kind, RPC_BIDI_STREAMING);
    assert_ptr_equal(v1->methods[0].input,
                     &grpc__reflection__v1__server_reflection_request__descriptor);

    /* "v1alpha" keeps protoc-c's spelling: V1alpha in types, v1alpha in functions. */
    const rpc_service_desc *v1a = &grpc__reflection__v1alpha__server_reflection__rpc_desc;
    assert_string_equal(v1a->methods[0].path,
                        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    assert_int_equal(v1a->methods[0].kind, RPC_BIDI_STREAMING);
    assert_ptr_equal(v1a->methods[0].output,
                     &grpc__reflection__v1alpha__server_reflection_response__descriptor);
}

static void test_file_desc_symbols_and_deps(void **state)
{
    const rpc_file_desc *f = &grpc_testing_test_proto__file_desc;
    (void)state;

    assert_string_equal(f->name, "grpc/testing/test.proto");
    assert_true(has_symbol(f, "grpc.testing.TestService"));
    assert_true(has_symbol(f, "grpc.testing.TestService.UnaryCall"));
    assert_true(has_symbol(f, "grpc.testing.TestService.FullDuplexCall"));
    assert_true(has_symbol(f, "grpc.testing.ReconnectService"));
    assert_false(has_symbol(f, "grpc.testing.SimpleRequest")); /* defined in messages.proto */
    assert_int_equal(f->n_extensions, 0);

    assert_int_equal(f->n_deps, 2);
    assert_true(has_dep(f, "grpc/testing/empty.proto"));
    assert_true(has_dep(f, "grpc/testing/messages.proto"));
    assert_ptr_equal(f->deps[0], &grpc_testing_empty_proto__file_desc);

    /* SimpleRequest is found through the import, as reflection walks it. */
    const rpc_file_desc *m = &grpc_testing_messages_proto__file_desc;
    assert_true(has_dep(f, m->name));
    assert_true(has_symbol(m, "grpc.testing.SimpleRequest"));
    assert_true(has_symbol(m, "grpc.testing.PayloadType"));
    /* Nested messages are listed with their full names. */
    assert_true(has_symbol(m, "grpc.testing.LoadBalancerStatsResponse.RpcsByPeer"));
    assert_int_equal(m->n_deps, 0);

    const rpc_file_desc *d = &google_protobuf_descriptor_proto__file_desc;
    assert_true(has_symbol(d, "google.protobuf.FileDescriptorProto"));
    assert_true(has_symbol(d, "google.protobuf.FieldDescriptorProto.Type"));
    assert_int_equal(d->n_deps, 0);
}

static void test_file_desc_bytes(void **state)
{
    const rpc_file_desc *f = &grpc_testing_test_proto__file_desc;
    Google__Protobuf__FileDescriptorProto *fd;
    (void)state;

    assert_true(f->len > 0);
    fd = google__protobuf__file_descriptor_proto__unpack(NULL, f->len, f->data);
    assert_non_null(fd);
    assert_string_equal(fd->name, "grpc/testing/test.proto");
    assert_string_equal(fd->package, "grpc.testing");
    assert_int_equal(fd->n_dependency, 2);
    assert_string_equal(fd->dependency[0], "grpc/testing/empty.proto");
    assert_true(fd->n_service >= 1);
    assert_string_equal(fd->service[0]->name, "TestService");
    assert_int_equal(fd->service[0]->n_method, grpc__testing__test_service__rpc_desc.n_methods);
    assert_string_equal(fd->service[0]->method[1]->input_type, ".grpc.testing.SimpleRequest");
    /* Comments survive, so grpcurl describe shows them. */
    assert_non_null(fd->source_code_info);
    assert_true(fd->source_code_info->n_location > 0);
    google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);

    fd = google__protobuf__file_descriptor_proto__unpack(
        NULL, grpc_health_v1_health_proto__file_desc.len,
        grpc_health_v1_health_proto__file_desc.data);
    assert_non_null(fd);
    assert_string_equal(fd->name, "grpc/health/v1/health.proto");
    google__protobuf__file_descriptor_proto__free_unpacked(fd, NULL);
}

static void h_unary(rpc_call *call, const Grpc__Testing__SimpleRequest *req, void *user_data)
{
    (void)req;
    (void)user_data;
    rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

static void h_empty(rpc_call *call, const Grpc__Testing__Empty *req, void *user_data)
{
    (void)req;
    (void)user_data;
    rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

static void h_upload(rpc_call *call, const Grpc__Testing__StreamingInputCallRequest *msg,
                     void *user_data)
{
    (void)call;
    (void)msg;
    (void)user_data;
}

static void test_register(void **state)
{
    static const Grpc__Testing__TestService__RpcServer a = {
        .unary_call = h_unary,
        .streaming_input_call = {.on_message = h_upload},
    };
    static const Grpc__Testing__TestService__RpcServer b = {.empty_call = h_empty};
    static const Grpc__Testing__TestService__RpcServer c = {.unary_call = h_unary};
    static const Grpc__Testing__TestService__RpcServer d = {
        .streaming_input_call = {.on_message = h_upload},
    };
    rpc_server_config cfg;
    rpc_server *srv;
    (void)state;

    rpc_server_config_init(&cfg);
    cfg.enable_health = false;
    cfg.enable_reflection = false;
    cfg.install_signal_handlers = false;
    cfg.workers = 1;
    assert_int_equal(rpc_server_new(&srv, &cfg), 0);

    assert_int_equal(grpc__testing__test_service__rpc_register(srv, &a), 0);
    /* EmptyCall was NULL in |a|, so it was not registered and is still free. */
    assert_int_equal(grpc__testing__test_service__rpc_register(srv, &b), 0);
    /* UnaryCall and StreamingInputCall were registered by |a|. */
    assert_int_equal(grpc__testing__test_service__rpc_register(srv, &c), RPC_ERR_INVALID);
    assert_int_equal(grpc__testing__test_service__rpc_register(srv, &d), RPC_ERR_INVALID);
    assert_int_equal(grpc__testing__test_service__rpc_register(srv, NULL), RPC_ERR_INVALID);
    assert_int_equal(grpc__testing__test_service__rpc_register(NULL, &a), RPC_ERR_INVALID);
    rpc_server_free(srv);
}

typedef struct client_result {
    bool done;
    int code;
    int n_messages;
} client_result;

static void unary_on_message(rpc_ccall *call, const Grpc__Testing__SimpleResponse *msg,
                             void *user_data)
{
    client_result *r = user_data;
    (void)call;
    (void)msg;
    r->n_messages++;
}

static void unary_on_close(rpc_ccall *call, const rpc_status *status, void *user_data)
{
    client_result *r = user_data;
    (void)call;
    r->done = true;
    r->code = status->code;
}

static void test_client_call_unavailable(void **state)
{
    static const Grpc__Testing__TestService__UnaryCall__RpcClientCallbacks cbs = {
        .on_message = unary_on_message,
        .on_close = unary_on_close,
    };
    Grpc__Testing__SimpleRequest req = GRPC__TESTING__SIMPLE_REQUEST__INIT;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t sa_len = sizeof sa;
    client_result r = {0};
    char target[32];
    rpc_channel *ch;
    rpc_ccall *call;
    (void)state;

    /* A bound socket that does not listen: connecting to it is refused. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sa_len), 0);
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));

    struct event_base *base = event_base_new();
    assert_non_null(base);
    assert_int_equal(rpc_channel_new(&ch, base, target, NULL), 0);
    assert_int_equal(grpc__testing__test_service__rpc_unary_call(NULL, ch, NULL, NULL, &cbs, &r),
                     RPC_ERR_INVALID);
    assert_int_equal(grpc__testing__test_service__rpc_unary_call(&call, ch, &req, NULL, &cbs, &r),
                     0);
    assert_int_equal(rpc_run_until(base, &r.done, 10000), 0);
    assert_true(r.done);
    assert_int_equal(r.code, RPC_STATUS_UNAVAILABLE);
    assert_int_equal(r.n_messages, 0);
    rpc_channel_free(ch);
    event_base_free(base);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_test_service_methods),
        cmocka_unit_test(test_other_services),
        cmocka_unit_test(test_file_desc_symbols_and_deps),
        cmocka_unit_test(test_file_desc_bytes),
        cmocka_unit_test(test_register),
        cmocka_unit_test(test_client_call_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

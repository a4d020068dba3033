/*
 * rpc_reflection.c: grpc.reflection.v1 and v1alpha ServerReflectionInfo.
 *
 * The two versions are the same messages under two package names, so one
 * handler serves both: the v1alpha method is registered with the v1 message
 * descriptors, which read and write the identical wire format.
 */
#include "rpc_server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/reflection/v1/reflection.rpc-c.h"
#include "grpc/reflection/v1alpha/reflection.rpc-c.h"
#include "mem.h"

typedef Grpc__Reflection__V1__ServerReflectionRequest refl_req;
typedef Grpc__Reflection__V1__ServerReflectionResponse refl_resp;

/* Files to send for one answer, deduplicated, a file before its imports. */
typedef struct file_set {
    const rpc_file_desc *items[256];
    size_t n;
} file_set;

static void file_set_add(file_set *s, const rpc_file_desc *f)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i] == f)
            return;
    if (s->n == sizeof(s->items) / sizeof(s->items[0]))
        return;
    s->items[s->n++] = f;
    for (size_t i = 0; i < f->n_deps; i++)
        file_set_add(s, f->deps[i]);
}

static const rpc_file_desc *find_file_by_name(const rpc_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->n_files; i++)
        if (strcmp(srv->files[i]->name, name) == 0)
            return srv->files[i];
    return NULL;
}

static const rpc_file_desc *find_file_by_symbol(const rpc_server *srv, const char *sym)
{
    /* Clients may send a leading dot (".pkg.Msg"). */
    if (sym[0] == '.')
        sym++;
    for (size_t i = 0; i < srv->n_files; i++) {
        const rpc_file_desc *f = srv->files[i];
        for (size_t j = 0; j < f->n_symbols; j++)
            if (strcmp(f->symbols[j], sym) == 0)
                return f;
    }
    return NULL;
}

static const rpc_file_desc *find_file_by_extension(const rpc_server *srv, const char *type,
                                                   int32_t number)
{
    char key[512];
    if (type[0] == '.')
        type++;
    snprintf(key, sizeof(key), "%s:%d", type, number);
    for (size_t i = 0; i < srv->n_files; i++) {
        const rpc_file_desc *f = srv->files[i];
        for (size_t j = 0; j < f->n_extensions; j++)
            if (strcmp(f->extensions[j], key) == 0)
                return f;
    }
    return NULL;
}

static void send_error(rpc_call *call, refl_resp *resp, int code, const char *msg)
{
    Grpc__Reflection__V1__ErrorResponse err = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    err.error_code = code;
    err.error_message = (char *)msg;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
    resp->error_response = &err;
    rpc_call_send(call, &resp->base);
}

static void send_files(rpc_call *call, refl_resp *resp, const rpc_file_desc *f)
{
    file_set set;
    set.n = 0;
    file_set_add(&set, f);
    ProtobufCBinaryData blobs[256];
    for (size_t i = 0; i < set.n; i++) {
        blobs[i].data = (uint8_t *)set.items[i]->data;
        blobs[i].len = set.items[i]->len;
    }
    Grpc__Reflection__V1__FileDescriptorResponse fdr =
        GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    fdr.n_file_descriptor_proto = set.n;
    fdr.file_descriptor_proto = blobs;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    resp->file_descriptor_response = &fdr;
    rpc_call_send(call, &resp->base);
}

static void send_services(rpc_call *call, refl_resp *resp, const rpc_server *srv)
{
    size_t n = srv->n_services;
    Grpc__Reflection__V1__ServiceResponse *items = mem_calloc(n ? n : 1, sizeof(*items));
    Grpc__Reflection__V1__ServiceResponse **ptrs = mem_calloc(n ? n : 1, sizeof(*ptrs));
    for (size_t i = 0; i < n; i++) {
        Grpc__Reflection__V1__ServiceResponse init = GRPC__REFLECTION__V1__SERVICE_RESPONSE__INIT;
        items[i] = init;
        items[i].name = (char *)srv->services[i]->name;
        ptrs[i] = &items[i];
    }
    Grpc__Reflection__V1__ListServiceResponse list =
        GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    list.n_service = n;
    list.service = ptrs;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
    resp->list_services_response = &list;
    rpc_call_send(call, &resp->base);
    free(ptrs);
    free(items);
}

static void send_extension_numbers(rpc_call *call, refl_resp *resp, const rpc_server *srv,
                                   const char *type)
{
    if (type[0] == '.')
        type++;
    if (find_file_by_symbol(srv, type) == NULL) {
        send_error(call, resp, RPC_STATUS_NOT_FOUND, "type not found");
        return;
    }
    size_t tl = strlen(type);
    int32_t nums[256];
    size_t n = 0;
    for (size_t i = 0; i < srv->n_files; i++) {
        const rpc_file_desc *f = srv->files[i];
        for (size_t j = 0; j < f->n_extensions && n < 256; j++) {
            const char *e = f->extensions[j];
            if (strncmp(e, type, tl) == 0 && e[tl] == ':')
                nums[n++] = (int32_t)atoi(e + tl + 1);
        }
    }
    Grpc__Reflection__V1__ExtensionNumberResponse enr =
        GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    enr.base_type_name = (char *)type;
    enr.n_extension_number = n;
    enr.extension_number = nums;
    resp->message_response_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
    resp->all_extension_numbers_response = &enr;
    rpc_call_send(call, &resp->base);
}

static void on_reflection_message(rpc_call *call, const refl_req *req, void *user_data)
{
    (void)user_data;
    const rpc_server *srv = rpc_call_server(call);
    refl_resp resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host;
    resp.original_request = (refl_req *)req;
    const rpc_file_desc *f = NULL;
    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        f = find_file_by_name(srv, req->file_by_filename);
        if (f)
            send_files(call, &resp, f);
        else
            send_error(call, &resp, RPC_STATUS_NOT_FOUND, "file not found");
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        f = find_file_by_symbol(srv, req->file_containing_symbol);
        if (f)
            send_files(call, &resp, f);
        else
            send_error(call, &resp, RPC_STATUS_NOT_FOUND, "symbol not found");
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        if (req->file_containing_extension)
            f = find_file_by_extension(srv, req->file_containing_extension->containing_type,
                                       req->file_containing_extension->extension_number);
        if (f)
            send_files(call, &resp, f);
        else
            send_error(call, &resp, RPC_STATUS_NOT_FOUND, "extension not found");
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        send_extension_numbers(call, &resp, srv, req->all_extension_numbers_of_type);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        send_services(call, &resp, srv);
        break;
    default:
        send_error(call, &resp, RPC_STATUS_INVALID_ARGUMENT, "no message_request set");
        break;
    }
}

static void on_reflection_half_close(rpc_call *call, void *user_data)
{
    (void)user_data;
    rpc_call_finish(call, RPC_STATUS_OK, NULL);
}

static const Grpc__Reflection__V1__ServerReflection__RpcServer reflection_impl = {
    .server_reflection_info =
        {
            .on_message = on_reflection_message,
            .on_half_close = on_reflection_half_close,
        },
};

/* v1alpha: the v1 message types on the v1alpha path. */
static const rpc_method_desc v1alpha_method = {
    .name = "ServerReflectionInfo",
    .path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    .kind = RPC_BIDI_STREAMING,
    .input = &grpc__reflection__v1__server_reflection_request__descriptor,
    .output = &grpc__reflection__v1__server_reflection_response__descriptor,
};

static void v1alpha_on_message(rpc_call *call, const ProtobufCMessage *msg, void *user_data)
{
    on_reflection_message(call, (const refl_req *)msg, user_data);
}

static const rpc_handler v1alpha_handler = {
    .on_message = v1alpha_on_message,
    .on_half_close = on_reflection_half_close,
};

int rpc__reflection_register(rpc_server *srv)
{
    int rv = grpc__reflection__v1__server_reflection__rpc_register(srv, &reflection_impl);
    if (rv < 0)
        return rv;
    rv = rpc_server_add_method(srv, &v1alpha_method, &v1alpha_handler, NULL);
    if (rv < 0)
        return rv;
    return rpc_server_add_service(srv, &grpc__reflection__v1alpha__server_reflection__rpc_desc,
                                  &grpc_reflection_v1alpha_reflection_proto__file_desc);
}

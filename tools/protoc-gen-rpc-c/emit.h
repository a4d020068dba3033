/*
 * emit.h: turns one .proto file of a request into its x.rpc-c.h and x.rpc-c.c.
 *
 * emit.c builds the model below (every name computed once, protoc-c style) and
 * the skeleton of both files; the parts come from emit_desc.c (descriptors for
 * the runtime and reflection), emit_server.c (typed handler tables) and
 * emit_client.c (typed client calls).
 */
#ifndef PGRC_EMIT_H
#define PGRC_EMIT_H

#include <stddef.h>

#include "buf.h"
#include "request.h"

typedef struct emit_method {
    const Google__Protobuf__MethodDescriptorProto *proto;
    size_t index;         /* position in the service, .proto order */
    const char *kind;     /* "RPC_UNARY", "RPC_SERVER_STREAMING", ... */
    int client_streaming; /* requests are a stream (client-streaming, bidi) */
    int server_streaming; /* responses are a stream (server-streaming, bidi) */
    const char *name;     /* "UnaryCall" */
    char *lower;          /* "unary_call" */
    char *member;         /* |lower| made safe as a struct member */
    char *upper;          /* "UNARY_CALL" */
    char *camel;          /* "UnaryCall" */
    char *in_full;        /* "grpc.testing.SimpleRequest" */
    char *in_c;           /* "Grpc__Testing__SimpleRequest" */
    char *in_lower;       /* "grpc__testing__simple_request" */
    char *out_full;       /* ... and the same for the response type */
    char *out_c;
    char *out_lower;
    const char *comment; /* leading comment in the .proto, or NULL */
} emit_method;

typedef struct emit_service {
    const Google__Protobuf__ServiceDescriptorProto *proto;
    const char *name;     /* "TestService" */
    char *full;           /* "grpc.testing.TestService" */
    char *lower;          /* "grpc__testing__test_service": public function prefix */
    char *upper;          /* "GRPC__TESTING__TEST_SERVICE" */
    char *c;              /* "Grpc__Testing__TestService": public type prefix */
    char *local;          /* "test_service": prefix of this file's statics */
    const char *comment;  /* leading comment in the .proto, or NULL */
    emit_method *methods; /* .proto order */
    size_t n_methods;
} emit_service;

typedef struct emit_file {
    const request *req;
    const req_file *file;
    char *ident;            /* "grpc_testing_test_proto" */
    char *base;             /* "grpc/testing/test" */
    emit_service *services; /* .proto order */
    size_t n_services;
    size_t n_methods; /* over all services */
} emit_file;

/* Generates the two outputs for |file|: *header and *source are new strings the caller frees.
 * Returns 0, or -1 with *err (static text) when the request is inconsistent. */
int emit_file_generate(const request *req, const req_file *file, char **header, char **source,
                       const char **err);

/* Writes |text| as a C block comment, each line prefixed by |indent|. Nothing for NULL/"". */
void emit_comment(buf *b, const char *indent, const char *text);

/* Writes |s| as a C string literal. */
void emit_cstring(buf *b, const char *s);

/* Parts, called in this order for each file (see emit.c). */
void emit_desc_header(const emit_file *ef, buf *h);
void emit_desc_source(const emit_file *ef, buf *c);
void emit_desc_service_header(const emit_file *ef, const emit_service *svc, buf *h);
void emit_desc_service_source(const emit_file *ef, const emit_service *svc, buf *c);
void emit_server_header(const emit_file *ef, const emit_service *svc, buf *h);
void emit_server_source(const emit_file *ef, const emit_service *svc, buf *c);
void emit_client_common_source(const emit_file *ef, buf *c);
void emit_client_header(const emit_file *ef, const emit_service *svc, buf *h);
void emit_client_source(const emit_file *ef, const emit_service *svc, buf *c);

#endif /* PGRC_EMIT_H */

/*
 * rpc.h: types shared by the gRPC server (rpc_server.h), the client
 * (rpc_client.h) and the generated stubs in gen/.
 *
 * The runtime speaks gRPC over HTTP/2 cleartext (h2c, prior knowledge) on
 * nghttp2 and libevent. Messages are protobuf-c messages; the generated
 * stubs (gen/<file>.rpc-c.{c,h}, from tools/protoc-gen-rpc-c) wrap the untyped
 * calls declared here into typed ones.
 */
#ifndef RPC_H
#define RPC_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html). */
typedef enum rpc_status_code {
    RPC_STATUS_OK = 0,
    RPC_STATUS_CANCELLED = 1,
    RPC_STATUS_UNKNOWN = 2,
    RPC_STATUS_INVALID_ARGUMENT = 3,
    RPC_STATUS_DEADLINE_EXCEEDED = 4,
    RPC_STATUS_NOT_FOUND = 5,
    RPC_STATUS_ALREADY_EXISTS = 6,
    RPC_STATUS_PERMISSION_DENIED = 7,
    RPC_STATUS_RESOURCE_EXHAUSTED = 8,
    RPC_STATUS_FAILED_PRECONDITION = 9,
    RPC_STATUS_ABORTED = 10,
    RPC_STATUS_OUT_OF_RANGE = 11,
    RPC_STATUS_UNIMPLEMENTED = 12,
    RPC_STATUS_INTERNAL = 13,
    RPC_STATUS_UNAVAILABLE = 14,
    RPC_STATUS_DATA_LOSS = 15,
    RPC_STATUS_UNAUTHENTICATED = 16,
} rpc_status_code;

/* Returns the canonical name ("INVALID_ARGUMENT") of |code|, or "UNKNOWN". */
const char *rpc_status_name(int code);

/* Runtime error codes: 0 success, negative failure. System errors are -errno. */
enum {
    RPC_ERR_INVALID = -1000,    /* bad argument or state */
    RPC_ERR_WOULDBLOCK = -1001, /* send buffer full: wait for the writable callback */
    RPC_ERR_CLOSED = -1002,     /* the call or connection is already closed */
    RPC_ERR_TOO_LARGE = -1003,  /* message over the configured limit */
    RPC_ERR_PROTO = -1004,      /* malformed gRPC framing or protobuf */
    RPC_ERR_NOMEM = -1005,      /* allocation failed (only where not aborting) */
    RPC_ERR_HTTP2 = -1006,      /* nghttp2 reported an error */
    RPC_ERR_UNSUPPORTED = -1007 /* unsupported encoding or feature */
};

/* Returns a static string describing |err| (an RPC_ERR_* or -errno). */
const char *rpc_strerror(int err);

/* The four call kinds. */
typedef enum rpc_method_kind {
    RPC_UNARY = 0,
    RPC_SERVER_STREAMING = 1,
    RPC_CLIENT_STREAMING = 2,
    RPC_BIDI_STREAMING = 3,
} rpc_method_kind;

/* Static description of one method; emitted by the stub generator. */
typedef struct rpc_method_desc {
    const char *name;                         /* "UnaryCall" */
    const char *path;                         /* "/grpc.testing.TestService/UnaryCall" */
    rpc_method_kind kind;                     /* call kind */
    const ProtobufCMessageDescriptor *input;  /* request type */
    const ProtobufCMessageDescriptor *output; /* response type */
} rpc_method_desc;

/* Static description of one service; emitted by the stub generator. */
typedef struct rpc_service_desc {
    const char *name;               /* fully qualified: "grpc.testing.TestService" */
    size_t n_methods;               /* number of entries in |methods| */
    const rpc_method_desc *methods; /* methods in .proto order */
} rpc_service_desc;

/*
 * A serialized FileDescriptorProto and what reflection needs to find it;
 * emitted by the stub generator for every generated .proto file.
 */
typedef struct rpc_file_desc {
    const char *name;                        /* "grpc/testing/test.proto" */
    const uint8_t *data;                     /* serialized FileDescriptorProto */
    size_t len;                              /* bytes in |data| */
    size_t n_deps;                           /* entries in |deps| */
    const struct rpc_file_desc *const *deps; /* direct imports */
    size_t n_symbols;                        /* entries in |symbols| */
    const char *const *symbols;    /* fully qualified messages, enums, services, methods, fields
                                      of extensions ("pkg.Msg", "pkg.Svc", "pkg.Svc.Method") */
    size_t n_extensions;           /* entries in |extensions| */
    const char *const *extensions; /* "extendee.Type:field_number" of every extension */
} rpc_file_desc;

/* One metadata entry. Keys are lower-case; "-bin" keys carry raw bytes. */
typedef struct rpc_md {
    const char *key;      /* NUL-terminated, lower-case */
    const uint8_t *value; /* raw value (already base64-decoded for -bin keys) */
    size_t value_len;     /* bytes in |value| */
} rpc_md;

/*
 * A growable list of metadata entries that owns copies of its keys and
 * values. Zero-initialise (rpc_mdlist l = {0};) and free with
 * rpc_mdlist_clear().
 */
typedef struct rpc_mdlist {
    rpc_md *items; /* owned array */
    size_t n;      /* entries in use */
    size_t cap;    /* allocated entries */
} rpc_mdlist;

/* Appends a copy of (key, value). Keys are lower-cased. Returns 0 or RPC_ERR_INVALID for a key
 * that is not a legal gRPC metadata name, or a non "-bin" value with illegal bytes. */
int rpc_mdlist_add(rpc_mdlist *l, const char *key, const void *value, size_t value_len);
/* Same for a NUL-terminated string value. */
int rpc_mdlist_add_str(rpc_mdlist *l, const char *key, const char *value);
/* Returns the first entry whose key equals |key|, or NULL. */
const rpc_md *rpc_mdlist_get(const rpc_mdlist *l, const char *key);
/* Frees every entry; |l| is empty and reusable afterwards. */
void rpc_mdlist_clear(rpc_mdlist *l);

/* A final call status: code, message and trailing metadata. */
typedef struct rpc_status {
    int code;                   /* rpc_status_code */
    const char *message;        /* decoded grpc-message, never NULL ("" when absent) */
    const rpc_mdlist *trailers; /* trailing metadata (never NULL) */
} rpc_status;

#ifdef __cplusplus
}
#endif

#endif /* RPC_H */

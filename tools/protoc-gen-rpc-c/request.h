/*
 * request.h: the CodeGeneratorRequest protoc sends, decoded and indexed.
 *
 * Besides protobuf-c's decoded structs, a request keeps each file's
 * FileDescriptorProto bytes exactly as received (source_code_info included, so
 * reflection clients see the .proto comments) and an index from every message
 * and enum full name to the file that defines it: a method's request type may
 * live in another file, whose package (or c_package) decides the C name.
 */
#ifndef PGRC_REQUEST_H
#define PGRC_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "google/protobuf/compiler/plugin.pb-c.h"

typedef struct req_file {
    const Google__Protobuf__FileDescriptorProto *proto; /* decoded, owned by the request */
    const char *name;                                   /* "grpc/testing/test.proto" */
    const char *package;                                /* "grpc.testing", "" for none */
    char *c_package;    /* protobuf-c's (pb_c_file).c_package, NULL when unset; owned */
    int no_generate;    /* (pb_c_file).no_generate: protoc-c writes no .pb-c.{c,h} */
    const uint8_t *raw; /* the serialized FileDescriptorProto as received */
    size_t raw_len;     /* bytes at |raw| */
} req_file;

typedef struct req_type {
    char *full;           /* "grpc.testing.SimpleRequest" (no leading dot); owned */
    const req_file *file; /* the defining file */
} req_type;

typedef struct request {
    Google__Protobuf__Compiler__CodeGeneratorRequest *msg; /* decoded request; owned */
    uint8_t *data;                                         /* the request bytes; owned */
    size_t len;                                            /* bytes at |data| */
    req_file *files;                                       /* one per proto_file, same order */
    size_t n_files;                                        /* entries in |files| */
    req_type *types;                                       /* sorted by |full| */
    size_t n_types;                                        /* entries in |types| */
} request;

/* Decodes |len| bytes at |data| (takes ownership of |data|, which must come from malloc, even
 * on failure). Returns 0, or -1 with a description of the problem in *err (static). */
int request_load(request *r, uint8_t *data, size_t len, const char **err);

void request_free(request *r);

/* The file named |name| ("grpc/testing/empty.proto"), or NULL. */
const req_file *request_file(const request *r, const char *name);

/* The message or enum named |type_name|, with or without the leading dot, or NULL. */
const req_type *request_type(const request *r, const char *type_name);

#endif /* PGRC_REQUEST_H */

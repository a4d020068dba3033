#include "request.h"

#include <stdlib.h>
#include <string.h>

#include "wire.h"
#include "xalloc.h"

/* Field numbers of the wire formats read by hand. */
enum {
    REQUEST_PROTO_FILE = 15,   /* CodeGeneratorRequest.proto_file */
    FILE_OPTIONS_PB_C = 1019,  /* extend FileOptions { ProtobufCFileOptions pb_c_file } */
    PB_C_OPTS_NO_GENERATE = 1, /* ProtobufCFileOptions.no_generate */
    PB_C_OPTS_C_PACKAGE = 6,   /* ProtobufCFileOptions.c_package */
};

/* protobuf-c's own file options, which descriptor.proto does not declare: protobuf-c keeps them
 * among the unknown fields of FileOptions. */
static void read_pb_c_options(req_file *rf, const Google__Protobuf__FileOptions *opts)
{
    char *found = NULL;

    if (opts == NULL)
        return;
    for (unsigned i = 0; i < opts->base.n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &opts->base.unknown_fields[i];
        if (u->tag != FILE_OPTIONS_PB_C || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            continue;
        /* protobuf-c keeps a length-delimited unknown field's length prefix in |data|. */
        const uint8_t *p = u->data, *end = u->data + u->len;
        uint64_t len;
        wire_field f;

        if (wire_varint(&p, end, &len) != 0 || len != (uint64_t)(end - p))
            continue;
        while (wire_next(&p, end, &f) == 1) {
            if (f.number == PB_C_OPTS_C_PACKAGE && f.type == WIRE_LEN) {
                free(found);
                found = mem_alloc(f.len + 1);
                memcpy(found, f.data, f.len);
                found[f.len] = '\0';
            } else if (f.number == PB_C_OPTS_NO_GENERATE && f.type == WIRE_VARINT) {
                rf->no_generate = f.varint != 0;
            }
        }
    }
    rf->c_package = found;
}

static void add_type(request *r, size_t *cap, const char *prefix, const char *name,
                     const req_file *file)
{
    if (r->n_types == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        r->types = mem_realloc(r->types, *cap * sizeof *r->types);
    }
    r->types[r->n_types].full =
        xconcat(prefix, prefix[0] != '\0' ? "." : "", name ? name : "", (char *)NULL);
    r->types[r->n_types].file = file;
    r->n_types++;
}

static void index_message(request *r, size_t *cap, const char *prefix,
                          const Google__Protobuf__DescriptorProto *m, const req_file *file)
{
    add_type(r, cap, prefix, m->name, file);
    char *full = mem_strdup(r->types[r->n_types - 1].full);
    for (size_t i = 0; i < m->n_enum_type; i++)
        add_type(r, cap, full, m->enum_type[i]->name, file);
    for (size_t i = 0; i < m->n_nested_type; i++)
        index_message(r, cap, full, m->nested_type[i], file);
    free(full);
}

static int cmp_type(const void *a, const void *b)
{
    return strcmp(((const req_type *)a)->full, ((const req_type *)b)->full);
}

int request_load(request *r, uint8_t *data, size_t len, const char **err)
{
    size_t n_raw = 0, cap = 0;
    const uint8_t *p, *end;
    wire_field f;
    int rv;

    memset(r, 0, sizeof *r);
    r->data = data;
    r->len = len;
    r->msg = google__protobuf__compiler__code_generator_request__unpack(NULL, len, data);
    if (r->msg == NULL) {
        *err = "cannot decode the CodeGeneratorRequest";
        return -1;
    }

    r->n_files = r->msg->n_proto_file;
    r->files = mem_calloc(r->n_files, sizeof *r->files);
    for (size_t i = 0; i < r->n_files; i++) {
        req_file *rf = &r->files[i];
        rf->proto = r->msg->proto_file[i];
        rf->name = rf->proto->name ? rf->proto->name : "";
        rf->package = rf->proto->package ? rf->proto->package : "";
        read_pb_c_options(rf, rf->proto->options);
    }

    /* protobuf-c decoded proto_file in wire order; pair each with its own bytes. */
    p = data;
    end = data + len;
    while ((rv = wire_next(&p, end, &f)) == 1) {
        if (f.number != REQUEST_PROTO_FILE || f.type != WIRE_LEN)
            continue;
        if (n_raw == r->n_files)
            break;
        r->files[n_raw].raw = f.data;
        r->files[n_raw].raw_len = f.len;
        n_raw++;
    }
    if (rv < 0 || n_raw != r->n_files) {
        *err = "cannot split proto_file out of the CodeGeneratorRequest";
        return -1;
    }

    for (size_t i = 0; i < r->n_files; i++) {
        const Google__Protobuf__FileDescriptorProto *fd = r->files[i].proto;
        for (size_t j = 0; j < fd->n_enum_type; j++)
            add_type(r, &cap, r->files[i].package, fd->enum_type[j]->name, &r->files[i]);
        for (size_t j = 0; j < fd->n_message_type; j++)
            index_message(r, &cap, r->files[i].package, fd->message_type[j], &r->files[i]);
    }
    if (r->n_types > 0)
        qsort(r->types, r->n_types, sizeof *r->types, cmp_type);
    return 0;
}

void request_free(request *r)
{
    for (size_t i = 0; i < r->n_types; i++)
        free(r->types[i].full);
    free(r->types);
    for (size_t i = 0; i < r->n_files; i++)
        free(r->files[i].c_package);
    free(r->files);
    if (r->msg != NULL)
        google__protobuf__compiler__code_generator_request__free_unpacked(r->msg, NULL);
    free(r->data);
    memset(r, 0, sizeof *r);
}

const req_file *request_file(const request *r, const char *name)
{
    for (size_t i = 0; i < r->n_files; i++) {
        if (strcmp(r->files[i].name, name) == 0)
            return &r->files[i];
    }
    return NULL;
}

const req_type *request_type(const request *r, const char *type_name)
{
    req_type key;

    if (type_name == NULL || r->n_types == 0)
        return NULL;
    key.full = (char *)(type_name[0] == '.' ? type_name + 1 : type_name);
    key.file = NULL;
    return bsearch(&key, r->types, r->n_types, sizeof *r->types, cmp_type);
}

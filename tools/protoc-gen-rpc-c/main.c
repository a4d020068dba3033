/*
 * protoc-gen-rpc-c: the project's protoc plugin. For every file to generate,
 * a/b/x.proto, it writes a/b/x.rpc-c.h and a/b/x.rpc-c.c: the descriptors the
 * runtime and reflection need, typed server handler tables and typed client
 * calls on top of protoc-c's a/b/x.pb-c.h (see emit.h).
 *
 *   protoc --plugin=protoc-gen-rpc-c=PATH --rpc-c_out=DIR --c_out=DIR x.proto
 *
 * main.c is the protocol: CodeGeneratorRequest on stdin, CodeGeneratorResponse
 * on stdout. Problems with the input go back in the response's error field
 * (protoc prints it); the exit status is non-zero only when I/O fails.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "request.h"
#include "xalloc.h"

enum { FEATURE_PROTO3_OPTIONAL = 1 };

/* The request bytes; the caller frees *out. */
static int read_all(FILE *in, uint8_t **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    uint8_t *data = mem_alloc(cap);

    for (;;) {
        if (n == cap) {
            cap *= 2;
            data = mem_realloc(data, cap);
        }
        size_t got = fread(data + n, 1, cap - n, in);
        n += got;
        if (got == 0) {
            if (ferror(in)) {
                free(data);
                return -1;
            }
            break;
        }
    }
    *out = data;
    *len = n;
    return 0;
}

static Google__Protobuf__Compiler__CodeGeneratorResponse__File *new_file(char *name, char *content)
{
    Google__Protobuf__Compiler__CodeGeneratorResponse__File *f = mem_alloc(sizeof *f);
    google__protobuf__compiler__code_generator_response__file__init(f);
    f->name = name;
    f->content = content;
    return f;
}

/* Fills |resp| with the outputs for every file to generate, or sets its error. */
static void generate(const request *req, Google__Protobuf__Compiler__CodeGeneratorResponse *resp)
{
    const Google__Protobuf__Compiler__CodeGeneratorRequest *msg = req->msg;

    if (msg->parameter != NULL && msg->parameter[0] != '\0') {
        resp->error = xconcat("protoc-gen-rpc-c takes no parameter, got \"", msg->parameter, "\"",
                              (char *)NULL);
        return;
    }
    resp->file = mem_calloc(2 * msg->n_file_to_generate, sizeof *resp->file);
    for (size_t i = 0; i < msg->n_file_to_generate; i++) {
        const char *name = msg->file_to_generate[i];
        const req_file *f = request_file(req, name);
        const char *err = NULL;
        char *h, *c, *base;

        if (f == NULL) {
            resp->error = xconcat(name, ": not among the request's proto_file", (char *)NULL);
            return;
        }
        if (emit_file_generate(req, f, &h, &c, &err) != 0) {
            resp->error = xconcat(name, ": ", err, (char *)NULL);
            return;
        }
        base = mem_strdup(name);
        if (strlen(base) > 6 && strcmp(base + strlen(base) - 6, ".proto") == 0)
            base[strlen(base) - 6] = '\0';
        resp->file[resp->n_file++] = new_file(xconcat(base, ".rpc-c.h", (char *)NULL), h);
        resp->file[resp->n_file++] = new_file(xconcat(base, ".rpc-c.c", (char *)NULL), c);
        free(base);
    }
}

static void free_response(Google__Protobuf__Compiler__CodeGeneratorResponse *resp)
{
    for (size_t i = 0; i < resp->n_file; i++) {
        free(resp->file[i]->name);
        free(resp->file[i]->content);
        free(resp->file[i]);
    }
    free(resp->file);
    free(resp->error);
}

int main(int argc, char **argv)
{
    Google__Protobuf__Compiler__CodeGeneratorResponse resp;
    request req;
    uint8_t *data, *out;
    size_t len, out_len;
    const char *err = NULL;
    int status = 0;

    (void)argv;
    if (argc > 1) {
        fputs("protoc-gen-rpc-c: a protoc plugin; run it through protoc:\n"
              "  protoc --plugin=protoc-gen-rpc-c=PATH --rpc-c_out=DIR FILE.proto\n",
              stderr);
        return 2;
    }
    if (read_all(stdin, &data, &len) != 0) {
        fprintf(stderr, "protoc-gen-rpc-c: reading stdin: %s\n", strerror(errno));
        return 1;
    }

    google__protobuf__compiler__code_generator_response__init(&resp);
    resp.has_supported_features = 1;
    resp.supported_features = FEATURE_PROTO3_OPTIONAL;
    if (request_load(&req, data, len, &err) != 0)
        resp.error = mem_strdup(err);
    else
        generate(&req, &resp);

    out_len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
    out = mem_alloc(out_len);
    google__protobuf__compiler__code_generator_response__pack(&resp, out);
    if (fwrite(out, 1, out_len, stdout) != out_len || fflush(stdout) != 0) {
        fprintf(stderr, "protoc-gen-rpc-c: writing stdout: %s\n", strerror(errno));
        status = 1;
    }
    free(out);
    free_response(&resp);
    request_free(&req);
    return status;
}

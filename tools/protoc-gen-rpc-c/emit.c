#include "emit.h"

#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "xalloc.h"

/* FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2: source_code_info paths. */
enum { PATH_FILE_SERVICE = 6, PATH_SERVICE_METHOD = 2 };

static const char *leading_comment(const req_file *f, int service, int method)
{
    const Google__Protobuf__SourceCodeInfo *sci = f->proto->source_code_info;
    size_t want = method < 0 ? 2 : 4;

    if (sci == NULL)
        return NULL;
    for (size_t i = 0; i < sci->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *loc = sci->location[i];
        if (loc->n_path != want || loc->path[0] != PATH_FILE_SERVICE || loc->path[1] != service)
            continue;
        if (method >= 0 && (loc->path[2] != PATH_SERVICE_METHOD || loc->path[3] != method))
            continue;
        return loc->leading_comments;
    }
    return NULL;
}

/* C names of the message |type_name| (".grpc.testing.SimpleRequest"), from its own file. */
static int type_names(const request *req, const char *type_name, char **full, char **c,
                      char **lower)
{
    const req_type *t = request_type(req, type_name);
    if (t == NULL)
        return -1;
    *full = mem_strdup(t->full);
    *c = names_full_to_c(t->full, t->file->package, t->file->c_package);
    *lower = names_full_to_lower(t->full, t->file->package, t->file->c_package);
    return 0;
}

static int build_method(const emit_file *ef, emit_method *m,
                        const Google__Protobuf__MethodDescriptorProto *mp, size_t si, size_t mi)
{
    m->proto = mp;
    m->index = mi;
    m->name = mp->name ? mp->name : "";
    m->client_streaming = mp->has_client_streaming && mp->client_streaming;
    m->server_streaming = mp->has_server_streaming && mp->server_streaming;
    if (m->client_streaming && m->server_streaming)
        m->kind = "RPC_BIDI_STREAMING";
    else if (m->client_streaming)
        m->kind = "RPC_CLIENT_STREAMING";
    else if (m->server_streaming)
        m->kind = "RPC_SERVER_STREAMING";
    else
        m->kind = "RPC_UNARY";
    m->lower = names_camel_to_lower(m->name);
    m->member = names_member(m->lower);
    m->upper = names_camel_to_upper(m->name);
    m->camel = names_to_camel(m->name);
    m->comment = leading_comment(ef->file, (int)si, (int)mi);
    if (type_names(ef->req, mp->input_type, &m->in_full, &m->in_c, &m->in_lower) != 0 ||
        type_names(ef->req, mp->output_type, &m->out_full, &m->out_c, &m->out_lower) != 0)
        return -1;
    return 0;
}

static int build(emit_file *ef, const request *req, const req_file *file)
{
    const Google__Protobuf__FileDescriptorProto *fd = file->proto;

    memset(ef, 0, sizeof *ef);
    ef->req = req;
    ef->file = file;
    ef->ident = names_file_ident(file->name);
    ef->base = names_strip_proto(file->name);
    /* Without protoc-c's output there are no message types to build stubs on; the file is
     * still described for reflection. */
    if (file->no_generate)
        return 0;
    ef->n_services = fd->n_service;
    ef->services = mem_calloc(fd->n_service, sizeof *ef->services);
    for (size_t si = 0; si < fd->n_service; si++) {
        const Google__Protobuf__ServiceDescriptorProto *sp = fd->service[si];
        emit_service *s = &ef->services[si];
        s->proto = sp;
        s->name = sp->name ? sp->name : "";
        s->full = xconcat(file->package, file->package[0] ? "." : "", s->name, (char *)NULL);
        s->lower = names_full_to_lower(s->full, file->package, file->c_package);
        s->upper = names_full_to_upper(s->full, file->package, file->c_package);
        s->c = names_full_to_c(s->full, file->package, file->c_package);
        s->local = names_camel_to_lower(s->name);
        s->comment = leading_comment(file, (int)si, -1);
        s->n_methods = sp->n_method;
        s->methods = mem_calloc(sp->n_method, sizeof *s->methods);
        for (size_t mi = 0; mi < sp->n_method; mi++) {
            if (build_method(ef, &s->methods[mi], sp->method[mi], si, mi) != 0)
                return -1;
        }
        ef->n_methods += sp->n_method;
    }
    return 0;
}

static void release(emit_file *ef)
{
    for (size_t si = 0; si < ef->n_services; si++) {
        emit_service *s = &ef->services[si];
        for (size_t mi = 0; mi < s->n_methods; mi++) {
            emit_method *m = &s->methods[mi];
            free(m->lower);
            free(m->member);
            free(m->upper);
            free(m->camel);
            free(m->in_full);
            free(m->in_c);
            free(m->in_lower);
            free(m->out_full);
            free(m->out_c);
            free(m->out_lower);
        }
        free(s->methods);
        free(s->full);
        free(s->lower);
        free(s->upper);
        free(s->c);
        free(s->local);
    }
    free(ef->services);
    free(ef->ident);
    free(ef->base);
}

static void banner(buf *b, const emit_file *ef)
{
    buf_puts(b, "/* Generated by protoc-gen-rpc-c. DO NOT EDIT. */\n");
    buf_printf(b, "/* source: %s */\n\n", ef->file->name);
}

static char *guard_name(const emit_file *ef)
{
    char *g = xconcat(ef->ident, "__RPC_C_H", (char *)NULL);
    for (char *p = g; *p != '\0'; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    return g;
}

static void header(const emit_file *ef, buf *h)
{
    const Google__Protobuf__FileDescriptorProto *fd = ef->file->proto;
    char *guard = guard_name(ef);

    banner(h, ef);
    buf_printf(h, "#ifndef %s\n#define %s\n\n", guard, guard);
    if (!ef->file->no_generate)
        buf_printf(h, "#include \"%s.pb-c.h\"\n", ef->base);
    buf_puts(h, "#include \"rpc.h\"\n#include \"rpc_server.h\"\n#include \"rpc_client.h\"\n");
    if (fd->n_dependency > 0)
        buf_putc(h, '\n');
    for (size_t i = 0; i < fd->n_dependency; i++) {
        char *dep = names_strip_proto(fd->dependency[i]);
        buf_printf(h, "#include \"%s.rpc-c.h\"\n", dep);
        free(dep);
    }
    buf_puts(h, "\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n");

    emit_desc_header(ef, h);
    for (size_t i = 0; i < ef->n_services; i++) {
        const emit_service *s = &ef->services[i];
        buf_printf(h, "\n/* ---- %s ", s->full);
        for (size_t n = strlen(s->full); n < 88; n++)
            buf_putc(h, '-');
        buf_puts(h, " */\n");
        emit_comment(h, "", s->comment);
        emit_desc_service_header(ef, s, h);
        emit_server_header(ef, s, h);
        emit_client_header(ef, s, h);
    }

    buf_puts(h, "\n#ifdef __cplusplus\n}\n#endif\n\n");
    buf_printf(h, "#endif /* %s */\n", guard);
    free(guard);
}

static void source(const emit_file *ef, buf *c)
{
    banner(c, ef);
    buf_printf(c, "#include \"%s.rpc-c.h\"\n", ef->base);
    if (ef->n_methods > 0)
        buf_puts(c, "\n#include <stdbool.h>\n#include <stdlib.h>\n");

    emit_desc_source(ef, c);
    if (ef->n_methods > 0)
        emit_client_common_source(ef, c);
    for (size_t i = 0; i < ef->n_services; i++) {
        const emit_service *s = &ef->services[i];
        buf_printf(c, "\n/* ---- %s ", s->full);
        for (size_t n = strlen(s->full); n < 88; n++)
            buf_putc(c, '-');
        buf_puts(c, " */\n");
        emit_desc_service_source(ef, s, c);
        emit_server_source(ef, s, c);
        emit_client_source(ef, s, c);
    }
}

int emit_file_generate(const request *req, const req_file *file, char **hdr, char **src,
                       const char **err)
{
    emit_file ef;
    buf h = {0}, c = {0};

    if (build(&ef, req, file) != 0) {
        release(&ef);
        *err = "a method's request or response type is not among the request's files";
        return -1;
    }
    header(&ef, &h);
    source(&ef, &c);
    release(&ef);
    *hdr = buf_take(&h);
    *src = buf_take(&c);
    return 0;
}

void emit_comment(buf *b, const char *indent, const char *text)
{
    const char *p = text;

    if (text == NULL || text[0] == '\0')
        return;
    buf_printf(b, "%s/*\n", indent);
    while (*p != '\0') {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        buf_printf(b, "%s *", indent);
        for (size_t i = 0; i < len; i++) {
            /* Keep the comment a comment: split any "*" "/" and "/" "*" pairs. */
            buf_putc(b, p[i]);
            if ((p[i] == '*' && i + 1 < len && p[i + 1] == '/') ||
                (p[i] == '/' && i + 1 < len && p[i + 1] == '*'))
                buf_putc(b, ' ');
        }
        buf_putc(b, '\n');
        p += len;
        if (*p == '\n')
            p++;
    }
    buf_printf(b, "%s */\n", indent);
}

void emit_cstring(buf *b, const char *s)
{
    buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f || *p == '?')
            buf_printf(b, "\\%03o", *p);
        else
            buf_putc(b, (char)*p);
    }
    buf_putc(b, '"');
}

/*
 * emit_desc.c: the static descriptions the runtime serves: rpc_file_desc (the
 * serialized FileDescriptorProto, imports, symbols and extensions, for
 * reflection) and per service the rpc_method_desc array and rpc_service_desc.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"
#include "names.h"
#include "xalloc.h"

typedef struct strlist {
    char **items;
    size_t n, cap;
} strlist;

static void strlist_add(strlist *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 32;
        l->items = mem_realloc(l->items, l->cap * sizeof *l->items);
    }
    l->items[l->n++] = s;
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
}

static char *qualify(const char *scope, const char *name)
{
    return xconcat(scope, scope[0] ? "." : "", name ? name : "", (char *)NULL);
}

static void add_extensions(strlist *symbols, strlist *exts, const char *scope,
                           Google__Protobuf__FieldDescriptorProto *const *fields, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const Google__Protobuf__FieldDescriptorProto *f = fields[i];
        const char *extendee = f->extendee ? f->extendee : "";
        char number[16];

        if (extendee[0] == '.')
            extendee++;
        snprintf(number, sizeof number, "%d", (int)f->number);
        strlist_add(symbols, qualify(scope, f->name));
        strlist_add(exts, xconcat(extendee, ":", number, (char *)NULL));
    }
}

static void add_message(strlist *symbols, strlist *exts, const char *scope,
                        const Google__Protobuf__DescriptorProto *m)
{
    char *full = qualify(scope, m->name);

    strlist_add(symbols, mem_strdup(full));
    for (size_t i = 0; i < m->n_nested_type; i++)
        add_message(symbols, exts, full, m->nested_type[i]);
    for (size_t i = 0; i < m->n_enum_type; i++)
        strlist_add(symbols, qualify(full, m->enum_type[i]->name));
    add_extensions(symbols, exts, full, m->extension, m->n_extension);
    free(full);
}

/* Everything reflection's file_containing_symbol may be asked for in this file. */
static void collect(const emit_file *ef, strlist *symbols, strlist *exts)
{
    const Google__Protobuf__FileDescriptorProto *fd = ef->file->proto;
    const char *pkg = ef->file->package;

    for (size_t i = 0; i < fd->n_message_type; i++)
        add_message(symbols, exts, pkg, fd->message_type[i]);
    for (size_t i = 0; i < fd->n_enum_type; i++)
        strlist_add(symbols, qualify(pkg, fd->enum_type[i]->name));
    for (size_t i = 0; i < fd->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = fd->service[i];
        char *full = qualify(pkg, s->name);
        strlist_add(symbols, mem_strdup(full));
        for (size_t j = 0; j < s->n_method; j++)
            strlist_add(symbols, qualify(full, s->method[j]->name));
        free(full);
    }
    add_extensions(symbols, exts, pkg, fd->extension, fd->n_extension);
}

void emit_desc_header(const emit_file *ef, buf *h)
{
    buf_printf(h,
               "\n/* %s serialized as protoc saw it, with its imports and symbols: what "
               "reflection\n * serves (rpc_server_add_file). */\n",
               ef->file->name);
    buf_printf(h, "extern const rpc_file_desc %s__file_desc;\n", ef->ident);
}

static void string_array(buf *c, const char *name, const strlist *l)
{
    if (l->n == 0)
        return;
    buf_printf(c, "\nstatic const char *const %s[%zu] = {\n", name, l->n);
    for (size_t i = 0; i < l->n; i++) {
        buf_puts(c, "    ");
        emit_cstring(c, l->items[i]);
        buf_puts(c, ",\n");
    }
    buf_puts(c, "};\n");
}

void emit_desc_source(const emit_file *ef, buf *c)
{
    const req_file *f = ef->file;
    const Google__Protobuf__FileDescriptorProto *fd = f->proto;
    strlist symbols = {0}, exts = {0};

    buf_printf(
        c, "\n/* The FileDescriptorProto exactly as protoc sent it (source info included). */\n");
    buf_printf(c, "static const uint8_t file_data[%zu] = {", f->raw_len);
    for (size_t i = 0; i < f->raw_len; i++)
        buf_printf(c, "%s0x%02x,", i % 16 == 0 ? "\n    " : " ", f->raw[i]);
    buf_puts(c, "\n};\n");

    if (fd->n_dependency > 0) {
        buf_printf(c, "\nstatic const rpc_file_desc *const file_deps[%zu] = {\n", fd->n_dependency);
        for (size_t i = 0; i < fd->n_dependency; i++) {
            char *ident = names_file_ident(fd->dependency[i]);
            buf_printf(c, "    &%s__file_desc,\n", ident);
            free(ident);
        }
        buf_puts(c, "};\n");
    }

    collect(ef, &symbols, &exts);
    string_array(c, "file_symbols", &symbols);
    string_array(c, "file_extensions", &exts);

    buf_printf(c, "\nconst rpc_file_desc %s__file_desc = {\n", ef->ident);
    buf_puts(c, "    .name = ");
    emit_cstring(c, f->name);
    buf_puts(c, ",\n    .data = file_data,\n    .len = sizeof file_data,\n");
    buf_printf(c, "    .n_deps = %zu,\n    .deps = %s,\n", fd->n_dependency,
               fd->n_dependency > 0 ? "file_deps" : "NULL");
    buf_printf(c, "    .n_symbols = %zu,\n    .symbols = %s,\n", symbols.n,
               symbols.n > 0 ? "file_symbols" : "NULL");
    buf_printf(c, "    .n_extensions = %zu,\n    .extensions = %s,\n", exts.n,
               exts.n > 0 ? "file_extensions" : "NULL");
    buf_puts(c, "};\n");
    strlist_free(&symbols);
    strlist_free(&exts);
}

void emit_desc_service_header(const emit_file *ef, const emit_service *s, buf *h)
{
    (void)ef;
    buf_puts(h, "\n");
    if (s->n_methods > 0) {
        buf_printf(h, "/* Indices into %s__rpc_methods. */\nenum {\n", s->lower);
        for (size_t i = 0; i < s->n_methods; i++)
            buf_printf(h, "    %s__RPC_%s = %zu,\n", s->upper, s->methods[i].upper, i);
        buf_puts(h, "};\n");
        buf_printf(h, "extern const rpc_method_desc %s__rpc_methods[%zu];\n", s->lower,
                   s->n_methods);
    }
    buf_printf(h, "extern const rpc_service_desc %s__rpc_desc;\n", s->lower);
}

void emit_desc_service_source(const emit_file *ef, const emit_service *s, buf *c)
{
    (void)ef;
    if (s->n_methods > 0) {
        buf_printf(c, "\nconst rpc_method_desc %s__rpc_methods[%zu] = {\n", s->lower, s->n_methods);
        for (size_t i = 0; i < s->n_methods; i++) {
            const emit_method *m = &s->methods[i];
            buf_puts(c, "    {\n        .name = ");
            emit_cstring(c, m->name);
            buf_printf(c, ",\n        .path = \"/%s/%s\",\n", s->full, m->name);
            buf_printf(c, "        .kind = %s,\n", m->kind);
            buf_printf(c, "        .input = &%s__descriptor,\n", m->in_lower);
            buf_printf(c, "        .output = &%s__descriptor,\n", m->out_lower);
            buf_puts(c, "    },\n");
        }
        buf_puts(c, "};\n");
    }
    buf_printf(c, "\nconst rpc_service_desc %s__rpc_desc = {\n", s->lower);
    buf_printf(c, "    .name = \"%s\",\n", s->full);
    buf_printf(c, "    .n_methods = %zu,\n", s->n_methods);
    if (s->n_methods > 0)
        buf_printf(c, "    .methods = %s__rpc_methods,\n", s->lower);
    else
        buf_puts(c, "    .methods = NULL,\n");
    buf_puts(c, "};\n");
}

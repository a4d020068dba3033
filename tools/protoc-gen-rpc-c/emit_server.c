/*
 * emit_server.c: the typed server side of a service.
 *
 * The handler table holds typed function pointers; the runtime calls untyped
 * rpc_handler functions. Calling through a pointer cast to another function
 * type is undefined behaviour, so each method gets small static trampolines
 * of the rpc_handler signature that convert the message pointer (a protobuf-c
 * message starts with its ProtobufCMessage) and call the table. The table
 * itself is the runtime's user_data, so the rpc_handler tables are static.
 */
#include "emit.h"

#define IMPL_DECL "    const %s__RpcServer *impl = user_data;\n"

static void server_table(const emit_service *s, buf *h)
{
    buf_printf(h,
               "\n/*\n * Handlers of %s. Unary and server-streaming methods get the "
               "decoded request,\n * valid until the call is done; client-streaming and bidi "
               "methods get on_start,\n * on_message (|msg| valid during the callback only) and "
               "on_half_close, any of which\n * may be NULL. Every handler gets |user_data|. "
               "Answer with the rpc_call_* functions or\n * the typed helpers below.\n */\n",
               s->full);
    buf_printf(h, "typedef struct %s__RpcServer {\n", s->c);
    for (size_t i = 0; i < s->n_methods; i++) {
        const emit_method *m = &s->methods[i];
        emit_comment(h, "    ", m->comment);
        if (!m->client_streaming) {
            buf_printf(h,
                       "    void (*%s)(rpc_call *call, const %s *req, void *user_data); /* %s */\n",
                       m->member, m->in_c, m->kind);
        } else {
            buf_printf(h, "    struct {\n");
            buf_printf(h, "        void (*on_start)(rpc_call *call, void *user_data);\n");
            buf_printf(h,
                       "        void (*on_message)(rpc_call *call, const %s *msg, void "
                       "*user_data);\n",
                       m->in_c);
            buf_printf(h, "        void (*on_half_close)(rpc_call *call, void *user_data);\n");
            buf_printf(h, "    } %s; /* %s */\n", m->member, m->kind);
        }
    }
    buf_puts(h, "    void *user_data; /* passed to every handler */\n");
    buf_printf(h, "} %s__RpcServer;\n", s->c);
}

void emit_server_header(const emit_file *ef, const emit_service *s, buf *h)
{
    (void)ef;
    server_table(s, h);
    buf_printf(h,
               "\n/* Registers the non-NULL handlers of |impl| (a method whose handlers are all "
               "NULL is\n * not registered and answers UNIMPLEMENTED) and marks %s served.\n"
               " * |impl| is not copied: it must outlive |srv|. Call before rpc_server_start(). "
               "Returns 0\n * or the error of rpc_server_add_method / rpc_server_add_service "
               "(methods registered\n * before a failure stay registered). */\n",
               s->full);
    buf_printf(h, "int %s__rpc_register(rpc_server *srv, const %s__RpcServer *impl);\n", s->lower,
               s->c);

    if (s->n_methods == 0)
        return;
    buf_printf(h,
               "\n/* Typed responses: %s__rpc_<method>_send() is rpc_call_send(),\n"
               " * %s__rpc_<method>_reply() (unary and client-streaming) is rpc_call_reply(). "
               "*/\n",
               s->lower, s->lower);
    for (size_t i = 0; i < s->n_methods; i++) {
        const emit_method *m = &s->methods[i];
        buf_printf(h, "static inline int %s__rpc_%s_send(rpc_call *call, const %s *msg)\n{\n",
                   s->lower, m->lower, m->out_c);
        buf_puts(h, "    return rpc_call_send(call, &msg->base);\n}\n");
        if (!m->server_streaming) {
            buf_printf(h, "static inline int %s__rpc_%s_reply(rpc_call *call, const %s *msg)\n{\n",
                       s->lower, m->lower, m->out_c);
            buf_puts(h, "    return rpc_call_reply(call, &msg->base);\n}\n");
        }
    }
}

static void trampolines(const emit_service *s, const emit_method *m, buf *c)
{
    if (!m->client_streaming) {
        buf_printf(c,
                   "\nstatic void %s__%s__srv_on_request(rpc_call *call, const ProtobufCMessage "
                   "*req,\n        void *user_data)\n{\n",
                   s->local, m->lower);
        buf_printf(c, IMPL_DECL, s->c);
        buf_printf(c, "    impl->%s(call, (const %s *)req, impl->user_data);\n}\n", m->member,
                   m->in_c);
        buf_printf(c, "\nstatic const rpc_handler %s__%s__srv_handler = {\n", s->local, m->lower);
        buf_printf(c, "    .on_request = %s__%s__srv_on_request,\n};\n", s->local, m->lower);
        return;
    }

    buf_printf(c, "\nstatic void %s__%s__srv_on_start(rpc_call *call, void *user_data)\n{\n",
               s->local, m->lower);
    buf_printf(c, IMPL_DECL, s->c);
    buf_printf(c, "    if (impl->%s.on_start != NULL)\n", m->member);
    buf_printf(c, "        impl->%s.on_start(call, impl->user_data);\n}\n", m->member);

    buf_printf(c,
               "\nstatic void %s__%s__srv_on_message(rpc_call *call, const ProtobufCMessage *msg,\n"
               "        void *user_data)\n{\n",
               s->local, m->lower);
    buf_printf(c, IMPL_DECL, s->c);
    buf_printf(c, "    if (impl->%s.on_message != NULL)\n", m->member);
    buf_printf(c, "        impl->%s.on_message(call, (const %s *)msg, impl->user_data);\n}\n",
               m->member, m->in_c);

    buf_printf(c, "\nstatic void %s__%s__srv_on_half_close(rpc_call *call, void *user_data)\n{\n",
               s->local, m->lower);
    buf_printf(c, IMPL_DECL, s->c);
    buf_printf(c, "    if (impl->%s.on_half_close != NULL)\n", m->member);
    buf_printf(c, "        impl->%s.on_half_close(call, impl->user_data);\n}\n", m->member);

    buf_printf(c, "\nstatic const rpc_handler %s__%s__srv_handler = {\n", s->local, m->lower);
    buf_printf(c, "    .on_start = %s__%s__srv_on_start,\n", s->local, m->lower);
    buf_printf(c, "    .on_message = %s__%s__srv_on_message,\n", s->local, m->lower);
    buf_printf(c, "    .on_half_close = %s__%s__srv_on_half_close,\n};\n", s->local, m->lower);
}

void emit_server_source(const emit_file *ef, const emit_service *s, buf *c)
{
    for (size_t i = 0; i < s->n_methods; i++)
        trampolines(s, &s->methods[i], c);

    buf_printf(c, "\nint %s__rpc_register(rpc_server *srv, const %s__RpcServer *impl)\n{\n",
               s->lower, s->c);
    if (s->n_methods > 0) {
        buf_puts(c, "    /* The runtime hands |impl| back as user_data; nothing writes through "
                    "it. */\n");
        buf_puts(c, "    void *ud = (void *)impl;\n    int rv;\n\n");
    }
    buf_puts(c, "    if (srv == NULL || impl == NULL)\n        return RPC_ERR_INVALID;\n");
    for (size_t i = 0; i < s->n_methods; i++) {
        const emit_method *m = &s->methods[i];
        if (!m->client_streaming)
            buf_printf(c, "    if (impl->%s != NULL) {\n", m->member);
        else
            buf_printf(c,
                       "    if (impl->%s.on_start != NULL || impl->%s.on_message != NULL ||\n"
                       "        impl->%s.on_half_close != NULL) {\n",
                       m->member, m->member, m->member);
        buf_printf(c,
                   "        rv = rpc_server_add_method(srv, &%s__rpc_methods[%s__RPC_%s],\n"
                   "                                   &%s__%s__srv_handler, ud);\n",
                   s->lower, s->upper, m->upper, s->local, m->lower);
        buf_puts(c, "        if (rv != 0)\n            return rv;\n    }\n");
    }
    buf_printf(c, "    return rpc_server_add_service(srv, &%s__rpc_desc, &%s__file_desc);\n}\n",
               s->lower, ef->ident);
}

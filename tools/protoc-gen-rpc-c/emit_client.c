/*
 * emit_client.c: typed client calls.
 *
 * rpc_ccall_start() takes untyped callbacks and one user_data. A typed call
 * allocates a small adapter holding the caller's typed callbacks and
 * user_data, passes it as the runtime's user_data, and static trampolines of
 * the untyped signatures convert the message and forward (never a cast
 * between function pointer types). The adapter is freed after on_close.
 *
 * The shared part (stub_*) is emitted once per .c file as statics; it also
 * makes sure the caller hears about a failure exactly one way: a negative
 * return with no callbacks, or 0 and exactly one on_close, even when the
 * runtime closes the call from inside rpc_ccall_start() or the first send.
 */
#include "emit.h"

void emit_client_common_source(const emit_file *ef, buf *c)
{
    (void)ef;
    buf_puts(c,
             "\n"
             "/* A typed client call in flight: the caller's callbacks and data, and the state "
             "that\n"
             " * reports a failure either as a return value or through on_close, never both. "
             "*/\n"
             "typedef struct stub_ccall {\n"
             "    void (*on_headers)(rpc_ccall *call, const rpc_mdlist *md, void *user_data);\n"
             "    void (*on_close)(rpc_ccall *call, const rpc_status *status, void *user_data);\n"
             "    void *user_data; /* the caller's */\n"
             "    bool starting;   /* inside stub_ccall_run: on_close must not free */\n"
             "    bool closed;     /* on_close ran while starting */\n"
             "    bool muted;      /* the stub returned an error: no more callbacks */\n"
             "} stub_ccall;\n"
             "\n"
             "static const rpc_call_opts stub_no_opts = {0};\n"
             "\n"
             "static void stub_on_headers(rpc_ccall *call, const rpc_mdlist *md, void "
             "*user_data)\n"
             "{\n"
             "    stub_ccall *x = user_data;\n"
             "    if (!x->muted && x->on_headers != NULL)\n"
             "        x->on_headers(call, md, x->user_data);\n"
             "}\n"
             "\n"
             "static void stub_on_close(rpc_ccall *call, const rpc_status *status, void "
             "*user_data)\n"
             "{\n"
             "    stub_ccall *x = user_data;\n"
             "    if (!x->muted && x->on_close != NULL)\n"
             "        x->on_close(call, status, x->user_data);\n"
             "    if (x->starting)\n"
             "        x->closed = true;\n"
             "    else\n"
             "        free(x);\n"
             "}\n"
             "\n"
             "/* Starts |m| with |x| (the first member of a heap adapter; owned from here on) as\n"
             " * user_data and, when |req| is not NULL, sends it and half-closes. Returns 0 (then\n"
             " * on_close runs, or already ran, exactly once) or an error (no callback runs). */\n"
             "static int stub_ccall_run(rpc_ccall **out, rpc_channel *ch, const rpc_method_desc "
             "*m,\n"
             "                          const rpc_call_opts *opts, const rpc_ccall_callbacks "
             "*cbs,\n"
             "                          stub_ccall *x, const ProtobufCMessage *req)\n"
             "{\n"
             "    rpc_ccall *call = NULL;\n"
             "    int rv;\n"
             "\n"
             "    if (out != NULL)\n"
             "        *out = NULL;\n"
             "    x->starting = true;\n"
             "    rv = rpc_ccall_start(&call, ch, m, opts != NULL ? opts : &stub_no_opts, cbs, "
             "x);\n"
             "    if (rv != 0) {\n"
             "        free(x);\n"
             "        return rv;\n"
             "    }\n"
             "    if (req != NULL && !x->closed) {\n"
             "        rv = rpc_ccall_send(call, req);\n"
             "        if (rv == 0 && !x->closed)\n"
             "            rv = rpc_ccall_close_send(call);\n"
             "        if (x->closed) {\n"
             "            rv = 0; /* the call ended meanwhile and on_close told the caller */\n"
             "        } else if (rv != 0) {\n"
             "            x->muted = true;\n"
             "            rpc_ccall_cancel(call);\n"
             "        }\n"
             "    }\n"
             "    x->starting = false;\n"
             "    if (x->closed) {\n"
             "        free(x);\n"
             "        return rv;\n"
             "    }\n"
             "    if (rv == 0 && out != NULL)\n"
             "        *out = call;\n"
             "    return rv;\n"
             "}\n");
}

static void callbacks_type(const emit_service *s, const emit_method *m, buf *h)
{
    buf_printf(h, "\n/* %s (%s). */\n", m->name, m->kind);
    buf_printf(h, "typedef struct %s__%s__RpcClientCallbacks {\n", s->c, m->camel);
    buf_puts(h, "    void (*on_headers)(rpc_ccall *call, const rpc_mdlist *md, void "
                "*user_data);\n");
    buf_printf(h, "    void (*on_message)(rpc_ccall *call, const %s *msg, void *user_data);\n",
               m->out_c);
    buf_puts(h, "    void (*on_close)(rpc_ccall *call, const rpc_status *status, void "
                "*user_data);\n");
    buf_printf(h, "} %s__%s__RpcClientCallbacks;\n", s->c, m->camel);
}

void emit_client_header(const emit_file *ef, const emit_service *s, buf *h)
{
    (void)ef;
    if (s->n_methods == 0)
        return;
    buf_printf(h,
               "\n/*\n * Client calls of %s, on the loop of |ch|.\n"
               " *\n"
               " * %s__rpc_<method>() starts a call. Unary and server-streaming calls take "
               "the\n"
               " * request, send it (serialized before return; the caller keeps it) and "
               "half-close;\n"
               " * client-streaming and bidi calls return the call, to which the caller sends "
               "with\n"
               " * %s__rpc_<method>_send_request() and then rpc_ccall_close_send().\n"
               " * |opts| and |cb| (copied; any callback may be NULL) may be NULL. Returns 0, "
               "and then\n"
               " * on_close runs exactly once, or an RPC_ERR_* and no callback runs. *out gets "
               "the call,\n"
               " * valid until on_close returns (for rpc_ccall_cancel() and the sends), or NULL "
               "when the\n"
               " * call already ended inside the function; it may be NULL for unary and\n"
               " * server-streaming calls. on_message gets each response, valid during the "
               "callback only.\n"
               " */\n",
               s->full, s->lower, s->lower);
    for (size_t i = 0; i < s->n_methods; i++) {
        const emit_method *m = &s->methods[i];
        callbacks_type(s, m, h);
        if (!m->client_streaming) {
            buf_printf(h,
                       "int %s__rpc_%s(rpc_ccall **out, rpc_channel *ch, const %s *req,\n"
                       "        const rpc_call_opts *opts, const %s__%s__RpcClientCallbacks "
                       "*cb,\n        void *user_data);\n",
                       s->lower, m->lower, m->in_c, s->c, m->camel);
        } else {
            buf_printf(h,
                       "int %s__rpc_%s(rpc_ccall **out, rpc_channel *ch, const rpc_call_opts "
                       "*opts,\n        const %s__%s__RpcClientCallbacks *cb, void "
                       "*user_data);\n",
                       s->lower, m->lower, s->c, m->camel);
            buf_printf(h,
                       "static inline int %s__rpc_%s_send_request(rpc_ccall *call, const %s "
                       "*msg)\n{\n",
                       s->lower, m->lower, m->in_c);
            buf_puts(h, "    return call != NULL ? rpc_ccall_send(call, &msg->base) : "
                        "RPC_ERR_CLOSED;\n}\n");
        }
    }
}

void emit_client_source(const emit_file *ef, const emit_service *s, buf *c)
{
    (void)ef;
    for (size_t i = 0; i < s->n_methods; i++) {
        const emit_method *m = &s->methods[i];
        const char *local = s->local, *lm = m->lower;

        buf_printf(c, "\ntypedef struct %s__%s__cli_call {\n", local, lm);
        buf_puts(c, "    stub_ccall base;\n");
        buf_printf(c, "    void (*on_message)(rpc_ccall *call, const %s *msg, void *user_data);\n",
                   m->out_c);
        buf_printf(c, "} %s__%s__cli_call;\n", local, lm);

        buf_printf(c,
                   "\nstatic void %s__%s__cli_on_message(rpc_ccall *call, const ProtobufCMessage "
                   "*msg,\n        void *user_data)\n{\n",
                   local, lm);
        buf_printf(c, "    %s__%s__cli_call *x = user_data;\n", local, lm);
        buf_puts(c, "    if (!x->base.muted && x->on_message != NULL)\n");
        buf_printf(c, "        x->on_message(call, (const %s *)msg, x->base.user_data);\n}\n",
                   m->out_c);

        buf_printf(c, "\nstatic const rpc_ccall_callbacks %s__%s__cli_callbacks = {\n", local, lm);
        buf_puts(c, "    .on_headers = stub_on_headers,\n");
        buf_printf(c, "    .on_message = %s__%s__cli_on_message,\n", local, lm);
        buf_puts(c, "    .on_close = stub_on_close,\n};\n");

        if (!m->client_streaming)
            buf_printf(c,
                       "\nint %s__rpc_%s(rpc_ccall **out, rpc_channel *ch, const %s *req,\n"
                       "        const rpc_call_opts *opts, const %s__%s__RpcClientCallbacks "
                       "*cb,\n        void *user_data)\n{\n",
                       s->lower, lm, m->in_c, s->c, m->camel);
        else
            buf_printf(c,
                       "\nint %s__rpc_%s(rpc_ccall **out, rpc_channel *ch, const rpc_call_opts "
                       "*opts,\n        const %s__%s__RpcClientCallbacks *cb, void "
                       "*user_data)\n{\n",
                       s->lower, lm, s->c, m->camel);
        buf_printf(c, "    %s__%s__cli_call *x;\n\n", local, lm);
        if (!m->client_streaming)
            buf_puts(c, "    if (req == NULL)\n        return RPC_ERR_INVALID;\n");
        else
            buf_puts(c, "    if (out == NULL)\n        return RPC_ERR_INVALID;\n");
        buf_puts(c, "    x = calloc(1, sizeof *x);\n    if (x == NULL)\n"
                    "        return RPC_ERR_NOMEM;\n");
        buf_puts(c, "    if (cb != NULL) {\n        x->base.on_headers = cb->on_headers;\n"
                    "        x->base.on_close = cb->on_close;\n"
                    "        x->on_message = cb->on_message;\n    }\n");
        buf_puts(c, "    x->base.user_data = user_data;\n");
        buf_printf(c,
                   "    return stub_ccall_run(out, ch, &%s__rpc_methods[%s__RPC_%s], opts,\n"
                   "                          &%s__%s__cli_callbacks, &x->base, %s);\n}\n",
                   s->lower, s->upper, m->upper, local, lm,
                   m->client_streaming ? "NULL" : "&req->base");
    }
}

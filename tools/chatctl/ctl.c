/*
 * ctl.c: the context every chatctl subcommand runs in (see ctl.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "auth.h"
#include "log.h"
#include "ctl.h"
#include "mem.h"

void ctl_init(ctl *c, const char *prog)
{
    memset(c, 0, sizeof *c);
    c->prog = prog;
    c->timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
    const char *e = getenv("CHATS_ADDR");
    c->chats_addr = e != NULL && *e != '\0' ? e : CTL_DEFAULT_CHATS_ADDR;
    e = getenv("MESSAGING_ADDR");
    c->messaging_addr = e != NULL && *e != '\0' ? e : CTL_DEFAULT_MESSAGING_ADDR;
}

void ctl_cleanup(ctl *c)
{
    /* Channels first: freeing one cancels its calls, whose callbacks may still run. */
    if (c->chats != NULL)
        rpc_channel_free(c->chats);
    if (c->messaging != NULL)
        rpc_channel_free(c->messaging);
    c->chats = c->messaging = NULL;
    if (c->base != NULL)
        event_base_free(c->base);
    c->base = NULL;
    rpc_mdlist_clear(&c->auth_md);
    if (c->token != NULL) {
        /* A minted token is a credential for the dev stack: do not leave it in freed memory. */
        explicit_bzero(c->token, strlen(c->token));
        free(c->token);
    }
    c->token = NULL;
}

void ctl_errorf(const ctl *c, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", c->prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* If argv[*i] is "--name" or "--name=value", returns the value (consuming the next argument
 * for the first form) and advances *i; NULL when it is another option. |*missing| is set when
 * the option matched but has no value. */
static const char *take_value(int argc, char **argv, int *i, const char *name, bool *missing)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=') {
        (*i)++;
        return a + n + 1;
    }
    if (a[n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = true;
        return NULL;
    }
    *i += 2;
    return argv[*i - 1];
}

int ctl_parse_common(ctl *c, int argc, char **argv, int *i)
{
    static const char *const names[] = {"--as", "--token", "--chats", "--messaging", "--timeout"};
    const char *a = argv[*i];
    if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
        c->verbose = true;
        (*i)++;
        return 1;
    }
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        bool missing = false;
        const char *v = take_value(argc, argv, i, names[k], &missing);
        if (missing) {
            ctl_errorf(c, "%s needs a value", names[k]);
            return -1;
        }
        if (v == NULL)
            continue;
        switch (k) {
        case 0:
            c->as_user = v;
            break;
        case 1:
            c->token_flag = v;
            break;
        case 2:
            c->chats_addr = v;
            break;
        case 3:
            c->messaging_addr = v;
            break;
        default:
            if (args_parse_duration_ms(v, &c->timeout_ms) != 0) {
                ctl_errorf(c, "--timeout: '%s' is not a duration (e.g. 500ms, 10s, 2m)", v);
                return -1;
            }
            break;
        }
        return 1;
    }
    return 0;
}

int ctl_auth(ctl *c)
{
    if (c->token != NULL)
        return 0;
    if (c->token_flag != NULL) {
        c->token = mem_strdup(c->token_flag);
    } else if (c->as_user != NULL) {
        const char *secret = getenv("JWT_SECRET");
        if (secret == NULL || *secret == '\0') {
            ctl_errorf(c,
                       "--as %s needs $JWT_SECRET to mint a token (eval \"$(tools/stack.sh "
                       "env)\"), or pass --token",
                       c->as_user);
            return -1;
        }
        int rv =
            auth_token_mint(secret, strlen(secret), c->as_user, CTL_DEFAULT_TOKEN_TTL_S, &c->token);
        if (rv != 0) {
            ctl_errorf(c,
                       "cannot mint a token for '%s': %s (user ids are 1..%d printable "
                       "ASCII bytes; JWT_SECRET needs at least %d bytes)",
                       c->as_user, auth_strerror(rv), AUTH_USER_ID_MAX, AUTH_SECRET_MIN);
            return -1;
        }
    } else {
        ctl_errorf(c, "who are you? pass --as <user> (with $JWT_SECRET set) or --token <jwt>");
        return -1;
    }
    size_t n = strlen(c->token) + sizeof "Bearer ";
    char *value = mem_alloc(n);
    snprintf(value, n, "Bearer %s", c->token);
    int rv = rpc_mdlist_add_str(&c->auth_md, "authorization", value);
    explicit_bzero(value, n);
    free(value);
    if (rv != 0) {
        ctl_errorf(c, "the token has characters not allowed in gRPC metadata");
        return -1;
    }
    return 0;
}

struct event_base *ctl_base(ctl *c)
{
    if (c->base == NULL) {
        if (c->verbose)
            log_set_level(LOG_DEBUG);
        c->base = event_base_new();
        if (c->base == NULL)
            ctl_errorf(c, "cannot create the event loop");
    }
    return c->base;
}

static rpc_channel *channel(ctl *c, rpc_channel **slot, const char *addr, const char *what)
{
    if (*slot != NULL)
        return *slot;
    struct event_base *base = ctl_base(c);
    if (base == NULL)
        return NULL;
    rpc_channel_config cfg;
    rpc_channel_config_init(&cfg);
    cfg.user_agent = "chatctl/0.1";
    /* A tool talks to a stack that is up or not: report a refused connection at once instead
     * of queueing behind the reconnect backoff. */
    cfg.connect_timeout_ms = 5000;
    int rv = rpc_channel_new(slot, base, addr, &cfg);
    if (rv != 0) {
        ctl_errorf(c, "bad %s address '%s' (want host:port): %s", what, addr, rpc_strerror(rv));
        *slot = NULL;
    }
    return *slot;
}

rpc_channel *ctl_chats(ctl *c)
{
    if (ctl_auth(c) != 0)
        return NULL;
    return channel(c, &c->chats, c->chats_addr, "svc-chats (--chats, $CHATS_ADDR)");
}

rpc_channel *ctl_messaging(ctl *c)
{
    if (ctl_auth(c) != 0)
        return NULL;
    return channel(c, &c->messaging, c->messaging_addr,
                   "svc-messaging (--messaging, $MESSAGING_ADDR)");
}

rpc_call_opts ctl_call_opts(const ctl *c)
{
    rpc_call_opts o = {0};
    o.timeout_ms = c->timeout_ms;
    o.metadata = &c->auth_md;
    return o;
}

void ctl_reply_keep(ctl_reply *r, const ProtobufCMessage *msg)
{
    /* A unary call has one response; should a server send more, the last one counts. */
    if (r->resp != NULL)
        protobuf_c_message_free_unpacked(r->resp, NULL);
    r->resp = NULL;
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = mem_alloc(n > 0 ? n : 1);
    protobuf_c_message_pack(msg, buf);
    r->resp = protobuf_c_message_unpack(msg->descriptor, NULL, n, buf);
    free(buf);
}

void ctl_reply_on_close(rpc_ccall *call, const rpc_status *st, void *user_data)
{
    (void)call;
    ctl_reply *r = user_data;
    r->call = NULL;
    r->code = st->code;
    free(r->message);
    r->message = mem_strdup(st->message != NULL ? st->message : "");
    r->done = true;
}

int ctl_reply_wait(ctl *c, ctl_reply *r, int start_rv, const char *what)
{
    if (start_rv != 0) {
        ctl_errorf(c, "%s: cannot start the call: %s", what, rpc_strerror(start_rv));
        return -1;
    }
    /* The call carries its own deadline (grpc-timeout, enforced locally too), so on_close always
     * comes; the loop's own bound is only a backstop. */
    int64_t backstop = c->timeout_ms > 0 ? c->timeout_ms + 5000 : 0;
    if (rpc_run_until(c->base, &r->done, backstop) != 0) {
        if (r->call != NULL)
            rpc_ccall_cancel(r->call);
        rpc_run_until(c->base, &r->done, 1000);
        r->code = RPC_STATUS_DEADLINE_EXCEEDED;
        ctl_errorf(c, "%s: DEADLINE_EXCEEDED: no answer within %lld ms", what, (long long)backstop);
        return -1;
    }
    if (r->code != RPC_STATUS_OK) {
        if (r->message != NULL && *r->message != '\0')
            ctl_errorf(c, "%s: %s: %s", what, rpc_status_name(r->code), r->message);
        else
            ctl_errorf(c, "%s: %s", what, rpc_status_name(r->code));
        return -1;
    }
    if (r->resp == NULL) {
        ctl_errorf(c, "%s: the server ended the call OK without a response", what);
        return -1;
    }
    return 0;
}

void ctl_reply_clear(ctl_reply *r)
{
    if (r->resp != NULL)
        protobuf_c_message_free_unpacked(r->resp, NULL);
    free(r->message);
    memset(r, 0, sizeof *r);
}

void ctl_new_client_id(char out[CTL_CLIENT_ID_LEN + 1])
{
    uint8_t b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno != EINTR)
            abort(); /* no kernel randomness: nothing sensible to fall back to */
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < sizeof b; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 0x0f];
    }
    out[o] = '\0';
}

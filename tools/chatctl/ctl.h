/*
 * ctl.h: what the chatctl subcommands share.
 *
 * chatctl is a blocking command-line client: every subcommand builds a request, starts the
 * typed call of gen/chat/v1/<file>.rpc-c.h on one libevent loop and runs that loop until the call
 * closes (rpc_run_until). One process, one thread, one loop.
 *
 *   ctl.c     the context: options shared by every subcommand, addresses, the bearer token,
 *             channels, the unary-call helper, error reporting
 *   args.c    parsing of numbers, durations and option lists
 *   print.c   how messages, chats and deliveries look on the terminal
 *   main.c    subcommand dispatch and --help
 *
 * Exit codes: CTL_EXIT_OK, CTL_EXIT_FAIL (a call failed, or a local error), CTL_EXIT_USAGE,
 * CTL_EXIT_MISMATCH (verify found a difference).
 */
#ifndef CHATCTL_CTL_H
#define CHATCTL_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <event2/event.h>

#include "rpc_client.h"
#include "chat/v1/chats.pb-c.h"

enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_FAIL = 1,
    CTL_EXIT_USAGE = 2,
    CTL_EXIT_MISMATCH = 3,
};

#define CTL_DEFAULT_TIMEOUT_MS 10000  /* per unary call, --timeout */
#define CTL_DEFAULT_TOKEN_TTL_S 86400 /* token minted for --as (a tail outlives an hour) */
#define CTL_DEFAULT_DEVICE "chatctl"  /* --device for tail and pull */
#define CTL_DEFAULT_CHATS_ADDR "127.0.0.1:50051"
#define CTL_DEFAULT_MESSAGING_ADDR "127.0.0.1:50052"
#define CTL_CLIENT_ID_LEN 36 /* a UUID in text form, without the NUL */

/* The options every subcommand accepts, and the loop and channels built from them. */
typedef struct ctl {
    const char *prog;           /* argv[0]'s base name, for messages */
    const char *as_user;        /* --as: mint a token for this user; NULL if not given */
    const char *token_flag;     /* --token: use this bearer token as is; NULL if not given */
    const char *chats_addr;     /* --chats, else $CHATS_ADDR, else the stack's default */
    const char *messaging_addr; /* --messaging, else $MESSAGING_ADDR, else the default */
    int64_t timeout_ms;         /* --timeout for each unary call */
    bool verbose;               /* -v: runtime debug logs on stderr */
    char *token;                /* resolved bearer token (owned), after ctl_auth() */
    rpc_mdlist auth_md;         /* "authorization: Bearer <token>", after ctl_auth() */
    struct event_base *base;    /* the loop (owned), made on first use */
    rpc_channel *chats;         /* channel to svc-chats (owned), made on first use */
    rpc_channel *messaging;     /* channel to svc-messaging (owned), made on first use */
} ctl;

/* Fills |c| with defaults and the environment (CHATS_ADDR, MESSAGING_ADDR). */
void ctl_init(ctl *c, const char *prog);

/* Frees channels, loop, token and metadata. */
void ctl_cleanup(ctl *c);

/* If argv[*i] is one of the shared options (--as, --token, --chats, --messaging, --timeout,
 * -v), consumes it and its value, advancing *i past them, and returns 1. Returns 0 when it is
 * not a shared option, or -1 (after printing why) for a shared option with a missing or bad
 * value. */
int ctl_parse_common(ctl *c, int argc, char **argv, int *i);

/* Resolves the bearer token: --token as given, else one minted for --as with $JWT_SECRET.
 * Prints the reason and returns -1 when neither works. Idempotent. */
int ctl_auth(ctl *c);

/* The loop, and the channels to svc-chats and svc-messaging; made on first use (a channel
 * connects lazily on its first call). ctl_chats() and ctl_messaging() resolve the token first
 * (ctl_auth). They return NULL after printing why (no identity, a bad address). */
struct event_base *ctl_base(ctl *c);
rpc_channel *ctl_chats(ctl *c);
rpc_channel *ctl_messaging(ctl *c);

/* Call options for a unary call: --timeout, and the authorization metadata (ctl_auth() must
 * have succeeded). */
rpc_call_opts ctl_call_opts(const ctl *c);

/* The outcome of one unary call, filled by ctl_reply_on_message/ctl_reply_on_close. */
typedef struct ctl_reply {
    rpc_ccall *call;        /* the call until on_close (pass &reply.call as the typed call's out) */
    bool done;              /* on_close ran */
    int code;               /* rpc_status_code of the call */
    char *message;          /* grpc-message (owned), "" when none */
    ProtobufCMessage *resp; /* owned copy of the response, NULL if none arrived */
} ctl_reply;

/* Defines |fn|, a typed on_message callback that keeps the response (of type |type|) in the
 * ctl_reply passed as user_data. */
#define CTL_KEEP_FN(fn, type)                                                                      \
    static void fn(rpc_ccall *call, const type *msg, void *user_data)                              \
    {                                                                                              \
        (void)call;                                                                                \
        ctl_reply_keep(user_data, &msg->base);                                                     \
    }

/* Keeps an owned copy of |msg| (the runtime's is valid only during the callback). Call it from
 * the typed on_message with the reply as user_data. */
void ctl_reply_keep(ctl_reply *r, const ProtobufCMessage *msg);

/* An on_close callback for any call whose user_data is a ctl_reply. */
void ctl_reply_on_close(rpc_ccall *call, const rpc_status *st, void *user_data);

/* Waits for the unary call that |start_rv| (the typed call's return value) started; if the
 * loop's backstop passes first, cancels the call so no callback outlives |r|. |what| names
 * the method for messages ("GetHistory"). Returns 0 when the call ended OK with a response;
 * otherwise prints "<prog>: <what>: <STATUS_NAME>: <message>" to stderr and returns -1. */
int ctl_reply_wait(ctl *c, ctl_reply *r, int start_rv, const char *what);

/* Frees what |r| holds and zeroes it for reuse. */
void ctl_reply_clear(ctl_reply *r);

/* Prints "<prog>: <fmt...>" and a newline to stderr. */
void ctl_errorf(const ctl *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Writes a fresh random (version 4) UUID as text into |out| (CTL_CLIENT_ID_LEN + 1 bytes). */
void ctl_new_client_id(char out[CTL_CLIENT_ID_LEN + 1]);

/* ---- args.c ---------------------------------------------------------------------------------- */

/* Parses a decimal uint64 (the whole string). "max" and "end" mean 2^64-1. Returns 0 or -1. */
int args_parse_u64(const char *s, uint64_t *out);

/* Parses a duration: a number with an optional unit ms, s, m, h or d (no unit: seconds) into
 * milliseconds. Returns 0 or -1 for a malformed, zero-or-negative or overflowing value. */
int args_parse_duration_ms(const char *s, int64_t *out);

/* Parses a decimal uint32 in [min, max]. Returns 0 or -1. */
int args_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out);

/* One option of a subcommand, for args_parse(). */
typedef struct args_opt {
    const char *name;   /* "--title" */
    const char **value; /* receives the value ("--title T" or "--title=T"); NULL for a flag */
    bool *flag;         /* set to true when present (flags, or also for valued options) */
} args_opt;

/* Parses the arguments of subcommand |cmd| (argv[0] is its name): the options in |opts|
 * (terminated by an entry with name NULL), the shared options (ctl_parse_common), and
 * positionals, which may come in any order ("--" ends the options). The positionals are moved
 * to argv[0..n-1] in their order. Returns n, or -1 after printing an error for an unknown
 * option or a missing value. */
int args_parse(ctl *c, const char *cmd, int argc, char **argv, const args_opt *opts);

/* True for a device id of 1..64 bytes of [A-Za-z0-9._-]. */
bool args_valid_device(const char *s);

/* ---- print.c --------------------------------------------------------------------------------- */

/* Writes |s| (NULL prints nothing) with C0 controls, DEL and backslash escaped; UTF-8 passes
 * through unchanged. */
void print_text(FILE *f, const char *s);

/* "2026-01-02 15:04:05.123" in local time for Unix ms |ms| into |buf| (at least 32 bytes). */
const char *print_time_ms(int64_t ms, char *buf, size_t len);

/* One line for a stored message: "<id>  <time>  <sender>: <body>" plus "(edited, v2)" or
 * "(deleted, v3)" markers, and the chat id when |with_chat|. */
void print_chat_message(FILE *f, const Chat__V1__Message *m, bool with_chat);

/* One line for a chat: id, kind, title, creator, member count, newest message id if known. */
void print_chat(FILE *f, const Chat__V1__Chat *chat, uint64_t newest_message_id);

/* The chat kind as "direct", "group" or "unspecified". */
const char *print_chat_kind(Chat__V1__ChatKind kind);

/* ---- subcommands (one file each) ------------------------------------------------------------- */
/* Each gets its arguments after the subcommand name (argv[0] is the name) and returns an exit
 * code. */
int cmd_token(ctl *c, int argc, char **argv);
int cmd_create_chat(ctl *c, int argc, char **argv);
int cmd_add_members(ctl *c, int argc, char **argv);
int cmd_remove_members(ctl *c, int argc, char **argv);
int cmd_get_chat(ctl *c, int argc, char **argv);
int cmd_chats(ctl *c, int argc, char **argv);
int cmd_send(ctl *c, int argc, char **argv);
int cmd_edit(ctl *c, int argc, char **argv);
int cmd_delete(ctl *c, int argc, char **argv);
int cmd_tail(ctl *c, int argc, char **argv);
int cmd_history(ctl *c, int argc, char **argv);
int cmd_pull(ctl *c, int argc, char **argv);
int cmd_verify(ctl *c, int argc, char **argv);

/* Prints the usage of the whole tool (main.c). */
void ctl_usage(FILE *f, const char *prog);

#endif /* CHATCTL_CTL_H */

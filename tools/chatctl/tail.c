/*
 * tail.c: `tail [--device D] [--send CHAT_ID] [--presence] [--for DURATION]`, a live device
 * session on MessagingService.Connect.
 *
 * The session follows docs/API.md: Hello first; print the WelcomeFrame's limits; print every
 * DeliveryFrame with its session_seq; ack cumulatively (one AckFrame per burst of frames, sent
 * from a deferred event once the frames read together are printed); a jump in session_seq, or
 * a PongFrame.last_session_seq above what arrived, is reported as a gap (the server dropped
 * frames because the device's queue was full: `chatctl pull` recovers them); a frame with a
 * session_seq already seen is a resend and is only re-acked. A PingFrame goes out every
 * ping_interval_ms so the server does not end an idle stream.
 *
 * With --send CHAT_ID each line read from stdin is sent on the same stream as a SendFrame with
 * a fresh client_message_id, and its SendResultFrame is printed. At most max_inflight_sends
 * (from the WelcomeFrame) are outstanding: stdin is not read while that many wait.
 *
 * --no-ack never acknowledges: the server resends each frame after ack_timeout_ms and ends the
 * stream with RESOURCE_EXHAUSTED after max_resends, which is how to watch those paths.
 *
 * Ctrl-C / SIGTERM (or the end of --for) half-closes the stream and waits briefly for the
 * server to end it; a second signal cancels at once. Exit 0 after a requested stop, 1 when the
 * server ended the stream on its own (its status is printed, with a hint).
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chat/v1/messaging.rpc-c.h"
#include "ctl.h"

#define TAIL_LINE_MAX 8192         /* bytes of one stdin line (bodies are <= 4096) */
#define TAIL_DEFAULT_PING_MS 25000 /* until the WelcomeFrame says otherwise */
#define TAIL_DEFAULT_INFLIGHT 64   /* until the WelcomeFrame says otherwise */
#define TAIL_CLOSE_GRACE_MS 2000   /* after half-close, wait this long before cancelling */

typedef enum tail_state {
    TAIL_HELLO_SENT, /* waiting for the WelcomeFrame */
    TAIL_OPEN,       /* session established */
    TAIL_CLOSING,    /* stop requested: half-closed, waiting for the server's status */
    TAIL_CLOSED,     /* on_close ran */
} tail_state;

typedef struct tail {
    ctl *c;
    rpc_ccall *call;         /* the Connect call until on_close */
    tail_state state;        /* see tail_state */
    bool done;               /* the loop may stop */
    bool stop_requested;     /* the user (signal, --for) asked to stop */
    int exit_code;           /* CTL_EXIT_* */
    const char *device;      /* Hello.device_id */
    bool presence;           /* Hello.watch_partner_presence */
    bool no_ack;             /* --no-ack: never ack (to watch resends and a stuck session) */
    uint64_t next_seq;       /* the session_seq expected next; 1 on a new stream */
    uint64_t ack_sent;       /* highest session_seq acked so far */
    bool force_ack;          /* the next deferred ack goes out even if not higher */
    uint64_t frames;         /* DeliveryFrames printed */
    uint64_t resends;        /* DeliveryFrames with an already seen session_seq */
    uint64_t gaps;           /* gaps seen */
    uint64_t dropped;        /* session_seq numbers skipped in total */
    uint32_t ping_ms;        /* ping period */
    uint64_t ping_nonce;     /* nonce of the last PingFrame */
    struct event *ack_ev;    /* deferred cumulative ack */
    struct event *ping_ev;   /* periodic PingFrame */
    struct event *stop_ev;   /* --for, then the close grace period */
    struct event *sigint_ev; /* SIGINT */
    struct event *sigterm_ev;
    int64_t run_ms; /* --for, 0 = until a signal */
    /* --send mode */
    uint64_t send_chat;     /* chat for lines from stdin; 0 = no send mode */
    struct event *stdin_ev; /* readable stdin (or a timer, for a file), while reading */
    bool stdin_is_file;     /* stdin is a regular file: read from a zero-delay timer */
    bool stdin_eof;         /* stdin ended */
    uint32_t max_inflight;  /* WelcomeFrame.max_inflight_sends */
    uint32_t inflight;      /* SendFrames without a result yet */
    uint64_t sent, send_ok, send_failed;
    char line[TAIL_LINE_MAX]; /* partial stdin line */
    size_t line_len;          /* bytes in |line| */
    bool line_overflow;       /* discarding the rest of a too long line */
} tail;

static void stdin_update(tail *t);
static void drain_lines(tail *t);
static void request_stop(tail *t, const char *why);

static void timer_ms(struct event *ev, int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* Sends one client frame; a failure means the call is closing (on_close will say why). */
static void send_frame(tail *t, const Chat__V1__ConnectRequest *f)
{
    if (t->call == NULL || t->state == TAIL_CLOSED)
        return;
    int rv = chat__v1__messaging_service__rpc_connect_send_request(t->call, f);
    if (rv != 0 && t->c->verbose)
        fprintf(stderr, "(send failed: %s)\n", rpc_strerror(rv));
}

/* Acks everything up to the last session_seq seen (dropped numbers included). |force| sends
 * it even if already sent: the server resent a frame, so it may have missed the ack. */
static void send_ack_now(tail *t, bool force)
{
    uint64_t upto = t->next_seq - 1;
    if (t->no_ack || upto == 0 || (upto <= t->ack_sent && !force))
        return;
    Chat__V1__AckFrame ack = CHAT__V1__ACK_FRAME__INIT;
    ack.session_seq = upto;
    Chat__V1__ConnectRequest f = CHAT__V1__CONNECT_REQUEST__INIT;
    f.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_ACK;
    f.ack = &ack;
    send_frame(t, &f);
    t->ack_sent = upto;
}

static void ack_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tail *t = arg;
    send_ack_now(t, t->force_ack);
    t->force_ack = false;
}

/* Acks after the frames that arrived together are printed: one AckFrame per burst. */
static void schedule_ack(tail *t)
{
    if (!evtimer_pending(t->ack_ev, NULL))
        timer_ms(t->ack_ev, 0);
}

static void ping_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tail *t = arg;
    if (t->state != TAIL_OPEN && t->state != TAIL_HELLO_SENT)
        return;
    Chat__V1__PingFrame ping = CHAT__V1__PING_FRAME__INIT;
    ping.nonce = ++t->ping_nonce;
    Chat__V1__ConnectRequest f = CHAT__V1__CONNECT_REQUEST__INIT;
    f.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_PING;
    f.ping = &ping;
    send_frame(t, &f);
    timer_ms(t->ping_ev, t->ping_ms);
}

static void report_gap(tail *t, uint64_t first, uint64_t last, const char *how)
{
    t->gaps++;
    t->dropped += last - first + 1;
    if (first == last)
        printf("GAP: session_seq %" PRIu64 " was dropped by the server (%s); recover with: %s "
               "pull --device %s\n",
               first, how, t->c->prog, t->device);
    else
        printf("GAP: session_seq %" PRIu64 "..%" PRIu64 " (%" PRIu64 " frames) were dropped by "
               "the server (%s); recover with: %s pull --device %s\n",
               first, last, last - first + 1, how, t->c->prog, t->device);
}

static void print_members(const char *what, const Chat__V1__MembershipChange *mc)
{
    printf("%-8s chat %" PRIu64 "  by ", what, mc->chat_id);
    print_text(stdout, mc->actor_id);
    fputs(":", stdout);
    for (size_t i = 0; i < mc->n_user_ids; i++) {
        fputc(' ', stdout);
        print_text(stdout, mc->user_ids[i]);
    }
    printf("  (%" PRIu32 " member%s now)\n", mc->member_count, mc->member_count == 1 ? "" : "s");
}

static void on_delivery(tail *t, const Chat__V1__DeliveryFrame *d)
{
    uint64_t seq = d->session_seq;
    if (seq == 0) {
        printf("(a DeliveryFrame without session_seq: server bug; ignored)\n");
        return;
    }
    if (seq < t->next_seq) {
        /* A resend of a frame already shown: our ack was late or lost. Ack again. */
        t->resends++;
        printf("(resend of #%" PRIu64 ", already shown)\n", seq);
        t->force_ack = true;
        schedule_ack(t);
        return;
    }
    if (seq > t->next_seq)
        report_gap(t, t->next_seq, seq - 1, "queue full");
    t->next_seq = seq + 1;
    t->frames++;

    printf("#%-5" PRIu64 " ", seq);
    switch (d->event_case) {
    case CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_POSTED:
        fputs("posted   ", stdout);
        print_chat_message(stdout, d->message_posted, true);
        break;
    case CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_EDITED:
        fputs("edited   ", stdout);
        print_chat_message(stdout, d->message_edited, true);
        break;
    case CHAT__V1__DELIVERY_FRAME__EVENT_MESSAGE_DELETED:
        fputs("deleted  ", stdout);
        print_chat_message(stdout, d->message_deleted, true);
        break;
    case CHAT__V1__DELIVERY_FRAME__EVENT_CHAT_CREATED:
        fputs("created  ", stdout);
        print_chat(stdout, d->chat_created, 0);
        break;
    case CHAT__V1__DELIVERY_FRAME__EVENT_MEMBERS_ADDED:
        print_members("joined", d->members_added);
        break;
    case CHAT__V1__DELIVERY_FRAME__EVENT_MEMBERS_REMOVED:
        print_members("left", d->members_removed);
        break;
    default:
        printf("(an event this chatctl does not know, field %d)\n", (int)d->event_case);
        break;
    }
    schedule_ack(t);
}

static void on_welcome(tail *t, const Chat__V1__WelcomeFrame *w)
{
    if (t->state != TAIL_HELLO_SENT) {
        printf("(a second WelcomeFrame: server bug; ignored)\n");
        return;
    }
    t->state = TAIL_OPEN;
    char exp[32];
    fputs("connected as ", stderr);
    print_text(stderr, w->user_id);
    fprintf(stderr,
            " device %s, session %s, site %s; token valid until %s\n"
            "  queue %" PRIu32 ", ack timeout %" PRIu32 " ms, max resends %" PRIu32
            ", ping every %" PRIu32 " ms, max in-flight sends %" PRIu32 ", max body %" PRIu32
            " bytes\n",
            t->device, w->session_id, w->site,
            print_time_ms(w->token_expires_at_ms, exp, sizeof exp), w->queue_capacity,
            w->ack_timeout_ms, w->max_resends, w->ping_interval_ms, w->max_inflight_sends,
            w->max_body_bytes);
    if (w->ping_interval_ms > 0) {
        t->ping_ms = w->ping_interval_ms;
        timer_ms(t->ping_ev, t->ping_ms);
    }
    if (w->max_inflight_sends > 0)
        t->max_inflight = w->max_inflight_sends;
    fprintf(stderr, "  (anything sent while this device was offline: %s pull --device %s)\n",
            t->c->prog, t->device);
    if (t->send_chat != 0)
        fprintf(stderr, "  type a line to send it to chat %" PRIu64 "\n", t->send_chat);
    stdin_update(t);
}

static const char *send_status_name(Chat__V1__SendStatus s)
{
    switch (s) {
    case CHAT__V1__SEND_STATUS__SEND_STATUS_OK:
        return "OK";
    case CHAT__V1__SEND_STATUS__SEND_STATUS_DUPLICATE:
        return "DUPLICATE";
    case CHAT__V1__SEND_STATUS__SEND_STATUS_REJECTED:
        return "REJECTED";
    case CHAT__V1__SEND_STATUS__SEND_STATUS_FAILED:
        return "FAILED";
    default:
        return "UNSPECIFIED";
    }
}

static void on_send_result(tail *t, const Chat__V1__SendResultFrame *r)
{
    if (t->inflight > 0)
        t->inflight--;
    bool ok = r->status == CHAT__V1__SEND_STATUS__SEND_STATUS_OK ||
              r->status == CHAT__V1__SEND_STATUS__SEND_STATUS_DUPLICATE;
    if (ok)
        t->send_ok++;
    else
        t->send_failed++;
    printf("sent     %s message_id=%" PRIu64 " chat %" PRIu64 " client_message_id=%s",
           send_status_name(r->status), r->message_id, r->chat_id, r->client_message_id);
    if (!ok) {
        printf("  %s", rpc_status_name(r->code));
        if (r->reason != NULL && *r->reason != '\0') {
            fputs(": ", stdout);
            print_text(stdout, r->reason);
        }
    }
    fputc('\n', stdout);
    drain_lines(t);
    stdin_update(t);
}

static void on_pong(tail *t, const Chat__V1__PongFrame *p)
{
    if (t->c->verbose)
        printf("(pong %" PRIu64 ", last_session_seq %" PRIu64 ")\n", p->nonce, p->last_session_seq);
    /* Everything up to last_session_seq was written before this pong or dropped: what we have
     * not seen of it was dropped at the tail of the stream. */
    if (p->last_session_seq >= t->next_seq) {
        report_gap(t, t->next_seq, p->last_session_seq, "queue full, seen from a pong");
        t->next_seq = p->last_session_seq + 1;
        schedule_ack(t);
    }
}

static void on_presence(const Chat__V1__UserPresence *p)
{
    char when[32];
    fputs("presence ", stdout);
    print_text(stdout, p->user_id);
    if (p->online)
        printf(" online (%" PRIu32 " device%s)\n", p->online_devices,
               p->online_devices == 1 ? "" : "s");
    else
        printf(" offline (last seen %s)\n", print_time_ms(p->last_seen_at_ms, when, sizeof when));
}

static void on_message(rpc_ccall *call, const Chat__V1__ConnectResponse *msg, void *user_data)
{
    (void)call;
    tail *t = user_data;
    switch (msg->frame_case) {
    case CHAT__V1__CONNECT_RESPONSE__FRAME_WELCOME:
        on_welcome(t, msg->welcome);
        break;
    case CHAT__V1__CONNECT_RESPONSE__FRAME_SEND_RESULT:
        on_send_result(t, msg->send_result);
        break;
    case CHAT__V1__CONNECT_RESPONSE__FRAME_DELIVERY:
        on_delivery(t, msg->delivery);
        break;
    case CHAT__V1__CONNECT_RESPONSE__FRAME_PONG:
        on_pong(t, msg->pong);
        break;
    case CHAT__V1__CONNECT_RESPONSE__FRAME_PRESENCE:
        on_presence(msg->presence);
        break;
    default:
        printf("(a server frame this chatctl does not know, field %d)\n", (int)msg->frame_case);
        break;
    }
}

static const char *close_hint(int code)
{
    switch (code) {
    case RPC_STATUS_UNAUTHENTICATED:
        return "the token is missing, invalid or expired: get a fresh one (--as, --token)";
    case RPC_STATUS_ABORTED:
        return "this user opened a newer stream with the same device id (use --device)";
    case RPC_STATUS_RESOURCE_EXHAUSTED:
        return "the session was stuck: a frame stayed unacknowledged after its resends";
    case RPC_STATUS_UNAVAILABLE:
        return "svc-messaging is down, shutting down or unreachable (--messaging, "
               "$MESSAGING_ADDR); reconnect and pull";
    case RPC_STATUS_DEADLINE_EXCEEDED:
        return "no Hello in time, or the stream was silent too long";
    case RPC_STATUS_FAILED_PRECONDITION:
    case RPC_STATUS_INVALID_ARGUMENT:
        return "the server refused a frame of this client (a chatctl bug?)";
    default:
        return NULL;
    }
}

static void on_close(rpc_ccall *call, const rpc_status *st, void *user_data)
{
    (void)call;
    tail *t = user_data;
    t->call = NULL;
    t->state = TAIL_CLOSED;
    t->done = true;
    bool clean =
        t->stop_requested && (st->code == RPC_STATUS_OK || st->code == RPC_STATUS_CANCELLED);
    if (clean) {
        t->exit_code = CTL_EXIT_OK;
        return;
    }
    fflush(stdout);
    if (st->message != NULL && *st->message != '\0')
        ctl_errorf(t->c, "Connect: stream ended: %s: %s", rpc_status_name(st->code), st->message);
    else
        ctl_errorf(t->c, "Connect: stream ended: %s", rpc_status_name(st->code));
    const char *hint = close_hint(st->code);
    if (hint != NULL)
        fprintf(stderr, "  (%s)\n", hint);
    t->exit_code = CTL_EXIT_FAIL;
}

/* ---- stdin (--send) ----------------------------------------------------------------------- */

static void send_line(tail *t, char *s, size_t len)
{
    while (len > 0 && s[len - 1] == '\r')
        len--;
    s[len] = '\0';
    if (len == 0)
        return;
    char cid[CTL_CLIENT_ID_LEN + 1];
    ctl_new_client_id(cid);
    Chat__V1__SendFrame sf = CHAT__V1__SEND_FRAME__INIT;
    sf.client_message_id = cid;
    sf.chat_id = t->send_chat;
    sf.body = s;
    Chat__V1__ConnectRequest f = CHAT__V1__CONNECT_REQUEST__INIT;
    f.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_SEND;
    f.send = &sf;
    send_frame(t, &f);
    t->inflight++;
    t->sent++;
}

/* Sends the complete lines buffered from stdin while fewer than max_inflight_sends wait for
 * their result (more would be REJECTED with RESOURCE_EXHAUSTED); the rest wait for results.
 * After EOF, a last line without a newline goes too. */
static void drain_lines(tail *t)
{
    if (t->state != TAIL_OPEN)
        return;
    size_t start = 0;
    while (t->inflight < t->max_inflight && start < t->line_len) {
        char *nl = memchr(t->line + start, '\n', t->line_len - start);
        if (nl == NULL) {
            if (!t->stdin_eof)
                break;
            if (!t->line_overflow)
                send_line(t, t->line + start, t->line_len - start);
            start = t->line_len;
            break;
        }
        size_t end = (size_t)(nl - t->line);
        if (t->line_overflow)
            t->line_overflow = false; /* the end of a line being discarded */
        else
            send_line(t, t->line + start, end - start);
        start = end + 1;
    }
    memmove(t->line, t->line + start, t->line_len - start);
    t->line_len -= start;
}

static void stdin_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd; /* -1 for the timer of a regular file */
    (void)what;
    tail *t = arg;
    /* One read per readiness: never blocks, and leaves the loop to the stream. */
    ssize_t n = read(STDIN_FILENO, t->line + t->line_len, sizeof t->line - 1 - t->line_len);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        t->stdin_eof = true;
    } else {
        t->line_len += (size_t)n;
        if (t->line_len == sizeof t->line - 1 && memchr(t->line, '\n', t->line_len) == NULL) {
            fprintf(stderr, "(a line longer than %d bytes was not sent)\n", TAIL_LINE_MAX - 1);
            t->line_overflow = true;
            t->line_len = 0;
        }
    }
    drain_lines(t);
    stdin_update(t);
}

/* Reads stdin only in send mode, while the session is open, no complete line waits in the
 * buffer and fewer than max_inflight_sends are outstanding. A regular file (`< lines.txt`)
 * cannot be polled (epoll refuses it) and never blocks: it is read from a zero-delay timer,
 * one read per loop turn. */
static void stdin_update(tail *t)
{
    if (t->stdin_ev == NULL)
        return;
    bool want = t->state == TAIL_OPEN && !t->stdin_eof && t->inflight < t->max_inflight &&
                memchr(t->line, '\n', t->line_len) == NULL && t->line_len < sizeof t->line - 1;
    bool reading = event_pending(t->stdin_ev, EV_READ | EV_TIMEOUT, NULL);
    if (want && !reading) {
        if (t->stdin_is_file)
            timer_ms(t->stdin_ev, 0);
        else
            event_add(t->stdin_ev, NULL);
    } else if (!want && reading) {
        event_del(t->stdin_ev);
    }
}

/* ---- stopping ---------------------------------------------------------------------------------
 */

static void grace_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tail *t = arg;
    if (t->call != NULL)
        rpc_ccall_cancel(t->call); /* the server did not end the stream: on_close follows */
}

static void request_stop(tail *t, const char *why)
{
    if (t->state == TAIL_CLOSED)
        return;
    if (t->stop_requested) {
        if (t->call != NULL)
            rpc_ccall_cancel(t->call);
        return;
    }
    t->stop_requested = true;
    if (t->c->verbose)
        fprintf(stderr, "(%s: closing the stream)\n", why);
    send_ack_now(t, false);
    t->state = TAIL_CLOSING;
    stdin_update(t);
    if (t->call != NULL)
        rpc_ccall_close_send(t->call);
    event_del(t->stop_ev);
    evtimer_assign(t->stop_ev, t->c->base, grace_cb, t);
    timer_ms(t->stop_ev, TAIL_CLOSE_GRACE_MS);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    request_stop(arg, sig == SIGINT ? "interrupted" : "terminated");
}

static void for_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    request_stop(arg, "--for elapsed");
}

int cmd_tail(ctl *c, int argc, char **argv)
{
    tail *t = calloc(1, sizeof *t);
    if (t == NULL)
        abort();
    const char *send_s = NULL, *for_s = NULL;
    t->device = CTL_DEFAULT_DEVICE;
    const args_opt opts[] = {{"--device", &t->device, NULL},     {"--send", &send_s, NULL},
                             {"--presence", NULL, &t->presence}, {"--for", &for_s, NULL},
                             {"--no-ack", NULL, &t->no_ack},     {NULL, NULL, NULL}};
    int ret = CTL_EXIT_USAGE;
    int n = args_parse(c, "tail", argc, argv, opts);
    if (n < 0)
        goto out;
    if (n != 0 ||
        (send_s != NULL && (args_parse_u64(send_s, &t->send_chat) != 0 || t->send_chat == 0)) ||
        (for_s != NULL && args_parse_duration_ms(for_s, &t->run_ms) != 0)) {
        ctl_errorf(c, "tail: usage: tail [--device D] [--send CHAT_ID] [--presence] "
                      "[--for DURATION] [--no-ack]");
        goto out;
    }
    if (!args_valid_device(t->device)) {
        ctl_errorf(c, "tail: --device wants 1..64 bytes of [A-Za-z0-9._-]");
        goto out;
    }
    ret = CTL_EXIT_FAIL;
    rpc_channel *ch = ctl_messaging(c);
    if (ch == NULL)
        goto out;
    struct event_base *base = c->base;
    t->c = c;
    t->next_seq = 1;
    t->ping_ms = TAIL_DEFAULT_PING_MS;
    t->max_inflight = TAIL_DEFAULT_INFLIGHT;
    t->ack_ev = evtimer_new(base, ack_cb, t);
    t->ping_ev = evtimer_new(base, ping_cb, t);
    t->stop_ev = evtimer_new(base, for_cb, t);
    t->sigint_ev = evsignal_new(base, SIGINT, signal_cb, t);
    t->sigterm_ev = evsignal_new(base, SIGTERM, signal_cb, t);
    if (t->send_chat != 0) {
        struct stat st;
        t->stdin_is_file = fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode);
        if (t->stdin_is_file)
            t->stdin_ev = evtimer_new(base, stdin_cb, t);
        else
            t->stdin_ev = event_new(base, STDIN_FILENO, EV_READ | EV_PERSIST, stdin_cb, t);
    }
    if (!t->ack_ev || !t->ping_ev || !t->stop_ev || !t->sigint_ev || !t->sigterm_ev ||
        (t->send_chat != 0 && !t->stdin_ev)) {
        ctl_errorf(c, "tail: cannot set up the event loop (is stdin open?)");
        goto out;
    }
    event_add(t->sigint_ev, NULL);
    event_add(t->sigterm_ev, NULL);
    if (t->run_ms > 0)
        timer_ms(t->stop_ev, t->run_ms);

    /* No deadline: the stream lives until we stop it. */
    rpc_call_opts o = {0};
    o.metadata = &c->auth_md;
    Chat__V1__MessagingService__Connect__RpcClientCallbacks cb = {NULL, on_message, on_close};
    int rv = chat__v1__messaging_service__rpc_connect(&t->call, ch, &o, &cb, t);
    if (rv != 0) {
        ctl_errorf(c, "Connect: cannot start the call: %s", rpc_strerror(rv));
        goto out;
    }
    if (t->call != NULL) {
        Chat__V1__Hello hello = CHAT__V1__HELLO__INIT;
        hello.device_id = (char *)t->device;
        hello.watch_partner_presence = t->presence;
        hello.client_info = "chatctl/0.1";
        Chat__V1__ConnectRequest f = CHAT__V1__CONNECT_REQUEST__INIT;
        f.frame_case = CHAT__V1__CONNECT_REQUEST__FRAME_HELLO;
        f.hello = &hello;
        t->state = TAIL_HELLO_SENT;
        send_frame(t, &f);
        timer_ms(t->ping_ev, t->ping_ms);
    }
    rpc_run_until(base, &t->done, 0);
    fflush(stdout);
    fprintf(stderr,
            "(%" PRIu64 " frame%s, %" PRIu64 " gap%s with %" PRIu64 " dropped, %" PRIu64
            " resend%s",
            t->frames, t->frames == 1 ? "" : "s", t->gaps, t->gaps == 1 ? "" : "s", t->dropped,
            t->resends, t->resends == 1 ? "" : "s");
    if (t->send_chat != 0)
        fprintf(stderr,
                "; sent %" PRIu64 ": %" PRIu64 " ok, %" PRIu64 " not, %" PRIu32 " without a result",
                t->sent, t->send_ok, t->send_failed, t->inflight);
    fprintf(stderr, ")\n");
    ret = t->exit_code;
out:
    if (t->call != NULL) {
        /* Only reached on a setup failure after the call started: end it before |t| goes. */
        rpc_ccall_cancel(t->call);
        rpc_run_until(c->base, &t->done, 1000);
    }
    if (t->ack_ev)
        event_free(t->ack_ev);
    if (t->ping_ev)
        event_free(t->ping_ev);
    if (t->stop_ev)
        event_free(t->stop_ev);
    if (t->sigint_ev)
        event_free(t->sigint_ev);
    if (t->sigterm_ev)
        event_free(t->sigterm_ev);
    if (t->stdin_ev)
        event_free(t->stdin_ev);
    free(t);
    return ret;
}

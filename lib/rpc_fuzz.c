/*
 * rpc_fuzz.c: TEST-ONLY. Lets tests/fuzz/fuzz_server_session.c drive real server connections
 * in-process: no listener, no worker threads, no timing. Services never call this.
 *
 * An rpc__fuzz is a private worker (its own event loop, never run as a thread) of a configured
 * but unstarted rpc_server. rpc__fuzz_feed() accepts one connection on a socketpair through
 * the real rpc__conn_accept(), writes bytes into the peer end in chunks, runs the loop without
 * blocking until the connection has read each chunk (discarding whatever it answers), and then
 * closes it the way a stopping worker does (rpc__conns_close_all). Everything between the
 * socket and the handlers is the production code.
 */
#include "rpc_server_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mem.h"

/* These three belong in rpc_server_int.h; declared here so the file stands alone. */
typedef struct rpc__fuzz rpc__fuzz;

/* Creates a fuzz worker for |srv| (configured, methods registered, never started). |srv| must
 * outlive it. Returns 0 or RPC_ERR_NOMEM. */
int rpc__fuzz_new(rpc__fuzz **out, rpc_server *srv);

/* Serves one connection that receives |data| (|len| bytes) in writes of at most |chunk| bytes
 * (0: one write), then closes it and runs what the close scheduled. Handlers run on
 * rpc__fuzz_base(). Returns 0 or -errno when no socketpair could be made. */
int rpc__fuzz_feed(rpc__fuzz *f, const uint8_t *data, size_t len, size_t chunk);

/* The fuzz worker's loop, for handlers that answer later (timers). */
struct event_base *rpc__fuzz_base(rpc__fuzz *f);

/* Frees |f|; no connection is open between feeds. */
void rpc__fuzz_free(rpc__fuzz *f);

struct rpc__fuzz {
    rpc__worker w;       /* the private worker */
    uint8_t sink[65536]; /* where the server's answers are discarded */
};

int rpc__fuzz_new(rpc__fuzz **out, rpc_server *srv)
{
    rpc__fuzz *f = mem_calloc(1, sizeof(*f));
    f->w.srv = srv;
    f->w.listen_fd = -1;
    f->w.base = event_base_new();
    if (f->w.base == NULL) {
        free(f);
        return RPC_ERR_NOMEM;
    }
    rpc__link_init(&f->w.conns);
    rpc__link_init(&f->w.health_watchers);
    *out = f;
    return 0;
}

struct event_base *rpc__fuzz_base(rpc__fuzz *f)
{
    return f->w.base;
}

void rpc__fuzz_free(rpc__fuzz *f)
{
    if (f == NULL)
        return;
    rpc__conns_close_all(&f->w);
    event_base_loop(f->w.base, EVLOOP_NONBLOCK);
    rpc__conns_cleanup(&f->w);
    event_base_free(f->w.base);
    free(f);
}

/* Reads and discards what the server sent. Returns the bytes read. */
static size_t drain(rpc__fuzz *f, int fd)
{
    size_t total = 0;
    for (;;) {
        ssize_t n = recv(fd, f->sink, sizeof(f->sink), 0);
        if (n <= 0)
            return total;
        total += (size_t)n;
    }
}

/* Runs the loop until the server has read everything written to it and answers nothing more
 * (or the connection is gone). Bounded, so a connection that stops reading cannot hang us. */
static void settle(rpc__fuzz *f, int fd)
{
    for (int i = 0; i < 256; i++) {
        event_base_loop(f->w.base, EVLOOP_NONBLOCK);
        size_t got = drain(f, fd);
        if (f->w.n_conns == 0)
            return;
        int unread = 0;
        if (ioctl(fd, SIOCOUTQ, &unread) < 0)
            unread = 0;
        if (unread == 0 && got == 0)
            return;
    }
}

int rpc__fuzz_feed(rpc__fuzz *f, const uint8_t *data, size_t len, size_t chunk)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(1)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rpc__conn_accept(&f->w, sv[0], (struct sockaddr *)&peer, sizeof(peer));
    if (chunk == 0)
        chunk = len ? len : 1;
    size_t off = 0;
    int stalls = 0;
    while (off < len && f->w.n_conns > 0 && stalls < 4) {
        size_t n = len - off < chunk ? len - off : chunk;
        ssize_t k = send(sv[1], data + off, n, MSG_NOSIGNAL);
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            break; /* the server closed its end */
        if (k > 0) {
            off += (size_t)k;
            stalls = 0;
        } else {
            stalls++; /* socket full: let the server read, give up if it never does */
        }
        settle(f, sv[1]);
    }
    settle(f, sv[1]);
    rpc__conns_close_all(&f->w);
    /* Run what closing scheduled (deferred handler work, zero timers). */
    event_base_loop(f->w.base, EVLOOP_NONBLOCK);
    close(sv[1]);
    return 0;
}

/*
 * idle_conns: holds N idle HTTP/2 connections open to a server, for
 * bench/run.sh's RSS-per-idle-connection figure.
 *
 *   idle_conns --target HOST:PORT --count N [--hold SECONDS]
 *
 * Each connection sends the client preface and an empty SETTINGS, ACKs the
 * server's SETTINGS and waits for the server's ACK of its own; after that it
 * only answers PINGs (so keepalive does not close it). When every connection
 * has finished that exchange it prints "ready N" (flushed), then holds them
 * until SIGTERM/SIGINT or --hold seconds (default 600) and prints "lost K" if
 * the server closed any. Raw frames, no HTTP/2 library: the client must be
 * small enough that 10,000 of its connections fit next to the server (needs
 * ulimit -n above N).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_HEADER 9
#define TYPE_SETTINGS 0x4
#define TYPE_PING 0x6
#define FLAG_ACK 0x1

typedef struct conn {
    int fd;                         /* -1 once closed */
    uint8_t buf[FRAME_HEADER + 64]; /* partial frame header or small payload */
    size_t len;                     /* bytes in |buf| */
    uint32_t skip;                  /* payload bytes of a frame we ignore, still to read */
    bool got_settings;              /* the server's SETTINGS arrived (and was ACKed) */
    bool got_ack;                   /* the server ACKed ours */
} conn;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
                continue;
            }
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void frame_header(uint8_t *h, uint32_t len, uint8_t type, uint8_t flags)
{
    h[0] = (uint8_t)(len >> 16);
    h[1] = (uint8_t)(len >> 8);
    h[2] = (uint8_t)len;
    h[3] = type;
    h[4] = flags;
    memset(h + 5, 0, 4);
}

/* Consumes whole frames from c->buf. Returns -1 when the connection must be dropped. */
static int parse(conn *c)
{
    size_t off = 0;
    while (c->len - off >= FRAME_HEADER) {
        const uint8_t *h = c->buf + off;
        uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
        uint8_t type = h[3], flags = h[4];
        if (type == TYPE_PING && !(flags & FLAG_ACK)) {
            if (len != 8)
                return -1;
            if (c->len - off < FRAME_HEADER + 8)
                break;
            uint8_t pong[FRAME_HEADER + 8];
            frame_header(pong, 8, TYPE_PING, FLAG_ACK);
            memcpy(pong + FRAME_HEADER, h + FRAME_HEADER, 8);
            if (write_all(c->fd, pong, sizeof(pong)) < 0)
                return -1;
            off += FRAME_HEADER + 8;
            continue;
        }
        if (type == TYPE_SETTINGS) {
            if (flags & FLAG_ACK) {
                c->got_ack = true;
            } else if (!c->got_settings) {
                uint8_t ack[FRAME_HEADER];
                frame_header(ack, 0, TYPE_SETTINGS, FLAG_ACK);
                if (write_all(c->fd, ack, sizeof(ack)) < 0)
                    return -1;
                c->got_settings = true;
            }
        }
        /* Everything else (WINDOW_UPDATE, GOAWAY, SETTINGS payload) is skipped. */
        off += FRAME_HEADER;
        size_t have = c->len - off;
        if (have >= len) {
            off += len;
        } else {
            off += have;
            c->skip = len - (uint32_t)have;
        }
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

/* Reads what is available. Returns -1 when the server closed the connection. */
static int on_readable(conn *c)
{
    for (;;) {
        uint8_t tmp[4096];
        ssize_t n = recv(c->fd, tmp, sizeof(tmp), 0);
        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        size_t i = 0;
        while (i < (size_t)n) {
            if (c->skip > 0) {
                size_t k = (size_t)n - i < c->skip ? (size_t)n - i : c->skip;
                c->skip -= (uint32_t)k;
                i += k;
                continue;
            }
            size_t room = sizeof(c->buf) - c->len;
            size_t k = (size_t)n - i < room ? (size_t)n - i : room;
            memcpy(c->buf + c->len, tmp + i, k);
            c->len += k;
            i += k;
            if (parse(c) < 0)
                return -1;
        }
    }
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s --target HOST:PORT --count N [--hold SECONDS]\n", argv0);
}

int main(int argc, char **argv)
{
    const char *target = NULL;
    long count = 0, hold = 600;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--target") == 0)
            target = argv[i + 1];
        else if (strcmp(argv[i], "--count") == 0)
            count = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--hold") == 0)
            hold = atol(argv[i + 1]);
        else {
            usage(argv[0]);
            return 2;
        }
    }
    if (argc % 2 == 0 || target == NULL || count < 1 || count > 1000000 || hold < 0) {
        usage(argv[0]);
        return 2;
    }
    char host[256];
    const char *colon = strrchr(target, ':');
    if (colon == NULL || (size_t)(colon - target) >= sizeof(host)) {
        usage(argv[0]);
        return 2;
    }
    memcpy(host, target, (size_t)(colon - target));
    host[colon - target] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
        fprintf(stderr, "idle_conns: cannot resolve %s\n", target);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);

    conn *conns = calloc((size_t)count, sizeof(*conns));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (conns == NULL || ep < 0) {
        perror("idle_conns");
        return 1;
    }
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    uint8_t hello[sizeof(preface) - 1 + FRAME_HEADER];
    memcpy(hello, preface, sizeof(preface) - 1);
    frame_header(hello + sizeof(preface) - 1, 0, TYPE_SETTINGS, 0);

    for (long i = 0; i < count; i++) {
        conn *c = &conns[i];
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
            fprintf(stderr, "idle_conns: connection %ld: %s\n", i, strerror(errno));
            return 1;
        }
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (write_all(c->fd, hello, sizeof(hello)) < 0) {
            fprintf(stderr, "idle_conns: connection %ld: %s\n", i, strerror(errno));
            return 1;
        }
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            perror("idle_conns: epoll_ctl");
            return 1;
        }
    }
    freeaddrinfo(ai);

    long ready = 0, lost = 0;
    bool announced = false;
    time_t deadline = 0;
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 200);
        if (n < 0 && errno != EINTR) {
            perror("idle_conns: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            bool was_ready = c->got_settings && c->got_ack;
            if (on_readable(c) < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                c->fd = -1;
                lost++;
                if (was_ready)
                    ready--;
                continue;
            }
            if (!was_ready && c->got_settings && c->got_ack)
                ready++;
        }
        if (!announced && ready + lost == count) {
            printf("ready %ld\n", ready);
            fflush(stdout);
            announced = true;
            deadline = time(NULL) + hold;
        }
        if (announced && time(NULL) >= deadline)
            break;
    }
    if (lost > 0)
        printf("lost %ld\n", lost);
    for (long i = 0; i < count; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    free(conns);
    close(ep);
    return 0;
}

/*
 * lib_servers.h: helpers for the lib/ adapter tests that need real servers. Starts
 * redis-server and PostgreSQL 15 (Debian packages) on loopback with a free port and a temp
 * dir, waits until they answer, stops them, and drives a libevent loop until a counter is
 * reached. Header-only (static inline) so each test program stays one file.
 */
#ifndef LIB_SERVERS_H
#define LIB_SERVERS_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>

static inline long long ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void ts_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* A TCP port that was free a moment ago on 127.0.0.1. */
static inline int ts_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* True when something accepts TCP connections on 127.0.0.1:|port|. */
static inline bool ts_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static inline bool ts_have_exe(const char *path)
{
    return access(path, X_OK) == 0;
}

/* Makes a fresh temp dir; returns a malloc'd path or NULL. */
static inline char *ts_mkdtemp(const char *tag)
{
    char tmpl[256];
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpl, sizeof(tmpl), "%s/chat-%s-XXXXXX", base, tag);
    if (mkdtemp(tmpl) == NULL)
        return NULL;
    return strdup(tmpl);
}

static inline void ts_rm_rf(const char *dir)
{
    /* Only ever a dir made by ts_mkdtemp(). */
    if (dir == NULL || dir[0] != '/' || strstr(dir, "/chat-") == NULL || strchr(dir, '\'') != NULL)
        return;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* Waits for |pid| to exit for up to |ms|, then SIGKILLs it. */
static inline void ts_stop_pid(pid_t pid, int sig, int ms)
{
    if (pid <= 0)
        return;
    kill(pid, sig);
    long long end = ts_now_ms() + ms;
    while (ts_now_ms() < end) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        ts_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* --- redis-server ------------------------------------------------------------------------ */

typedef struct ts_redis {
    pid_t pid; /* server process, 0 when stopped */
    int port;  /* TCP port on 127.0.0.1 */
    char *dir; /* temp dir (working dir of the server) */
} ts_redis;

#define TS_REDIS_SERVER "/usr/bin/redis-server"

/* Starts redis-server on |r->port| (picks one when 0). Returns true when it answers. */
static inline bool ts_redis_start(ts_redis *r)
{
    if (!ts_have_exe(TS_REDIS_SERVER))
        return false;
    if (r->dir == NULL)
        r->dir = ts_mkdtemp("redis");
    if (r->port == 0)
        r->port = ts_free_port();
    if (r->dir == NULL || r->port <= 0)
        return false;
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        char port[16];
        snprintf(port, sizeof(port), "%d", r->port);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            close(devnull);
        }
        if (chdir(r->dir) != 0)
            _exit(127);
        execl(TS_REDIS_SERVER, TS_REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", "--daemonize", "no", "--dir", r->dir, "--loglevel", "warning",
              (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    long long end = ts_now_ms() + 10000;
    while (ts_now_ms() < end) {
        if (ts_port_open(r->port))
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            r->pid = 0;
            return false;
        }
        ts_sleep_ms(20);
    }
    return false;
}

/* Stops the server (SIGKILL when |hard|, else SIGTERM); the dir and port are kept for a
 * restart. */
static inline void ts_redis_stop(ts_redis *r, bool hard)
{
    ts_stop_pid(r->pid, hard ? SIGKILL : SIGTERM, 5000);
    r->pid = 0;
}

static inline void ts_redis_cleanup(ts_redis *r)
{
    ts_redis_stop(r, false);
    ts_rm_rf(r->dir);
    free(r->dir);
    r->dir = NULL;
}

/* --- PostgreSQL 15 ----------------------------------------------------------------------- */

typedef struct ts_pg {
    pid_t pid; /* postgres process */
    int port;  /* TCP port on 127.0.0.1 */
    char *dir; /* temp dir: data/ and the socket */
} ts_pg;

#define TS_PG_BIN "/usr/lib/postgresql/15/bin"

/* Runs |argv| (as user postgres when we are root) and waits; returns the exit status. */
static inline int ts_run_as_pg(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            close(devnull);
        }
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("postgres");
            if (pw == NULL || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
                _exit(126);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Starts postgres on |p->port| (picks one when 0), with a fresh cluster on the first start.
 * Returns true when it accepts TCP connections. */
static inline bool ts_pg_start(ts_pg *p)
{
    char path[512], data[512];
    snprintf(path, sizeof(path), "%s/postgres", TS_PG_BIN);
    if (!ts_have_exe(path))
        return false;
    if (p->dir == NULL) {
        p->dir = ts_mkdtemp("pg");
        if (p->dir == NULL)
            return false;
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("postgres");
            if (pw == NULL || chown(p->dir, pw->pw_uid, pw->pw_gid) != 0)
                return false;
        }
        snprintf(data, sizeof(data), "%s/data", p->dir);
        char initdb[512];
        snprintf(initdb, sizeof(initdb), "%s/initdb", TS_PG_BIN);
        char *argv[] = {initdb,     "-D",        data, "-A",   "trust",      "-U",
                        "postgres", "--no-sync", "-E", "UTF8", "--locale=C", NULL};
        if (ts_run_as_pg(argv) != 0)
            return false;
    }
    if (p->port == 0)
        p->port = ts_free_port();
    snprintf(data, sizeof(data), "%s/data", p->dir);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        char port[16];
        snprintf(port, sizeof(port), "%d", p->port);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
            close(devnull);
        }
        if (geteuid() == 0) {
            struct passwd *pw = getpwnam("postgres");
            if (pw == NULL || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
                _exit(126);
        }
        execl(path, path, "-D", data, "-p", port, "-k", p->dir, "-c", "listen_addresses=127.0.0.1",
              "-c", "fsync=off", "-c", "max_connections=50", (char *)NULL);
        _exit(127);
    }
    p->pid = pid;
    long long end = ts_now_ms() + 30000;
    while (ts_now_ms() < end) {
        if (ts_port_open(p->port)) {
            /* Accepting TCP before recovery ends is possible; give it a moment. */
            ts_sleep_ms(100);
            return true;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            p->pid = 0;
            return false;
        }
        ts_sleep_ms(20);
    }
    return false;
}

/* Stops postgres: SIGQUIT (immediate) when |hard|, else SIGINT (fast shutdown). */
static inline void ts_pg_stop(ts_pg *p, bool hard)
{
    ts_stop_pid(p->pid, hard ? SIGQUIT : SIGINT, 10000);
    p->pid = 0;
}

static inline void ts_pg_cleanup(ts_pg *p)
{
    ts_pg_stop(p, false);
    ts_rm_rf(p->dir);
    free(p->dir);
    p->dir = NULL;
}

/* --- loop driving ------------------------------------------------------------------------ */

static inline void ts_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Runs |base| until *counter >= target or |ms| pass. Returns true when the target was met. */
static inline bool ts_wait_for(struct event_base *base, const int *counter, int target, int ms)
{
    struct event *tick = event_new(base, -1, EV_PERSIST, ts_tick_cb, NULL);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    long long end = ts_now_ms() + ms;
    while (*counter < target && ts_now_ms() < end)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return *counter >= target;
}

/* Runs |base| for |ms|. */
static inline void ts_run_for(struct event_base *base, int ms)
{
    int never = 0;
    ts_wait_for(base, &never, 1, ms);
}

#endif /* LIB_SERVERS_H */

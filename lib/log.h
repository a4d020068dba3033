/*
 * log.h: one-line structured logs to stderr, safe from any thread.
 *
 *   2026-11-22T14:30:00.123Z INFO svc-chats: listening port=50051
 *
 * The level comes from log_init() or the LOG_LEVEL environment variable
 * (debug, info, warn, error; default info).
 */
#ifndef LOG_H
#define LOG_H

typedef enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
} log_level;

/* Sets the program name printed on every line (copied) and reads LOG_LEVEL. */
void log_init(const char *name);
/* Overrides the level. */
void log_set_level(log_level level);
/* True when |level| would be printed. */
int log_enabled(log_level level);

void log_write(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_write(LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define log_info(...) log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

#endif /* LOG_H */

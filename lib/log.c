#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static char prog[64] = "chat";
static log_level min_level = LOG_INFO;

void log_init(const char *name)
{
    snprintf(prog, sizeof(prog), "%s", name);
    const char *lv = getenv("LOG_LEVEL");
    if (lv == NULL)
        return;
    if (strcasecmp(lv, "debug") == 0)
        min_level = LOG_DEBUG;
    else if (strcasecmp(lv, "warn") == 0)
        min_level = LOG_WARN;
    else if (strcasecmp(lv, "error") == 0)
        min_level = LOG_ERROR;
    else
        min_level = LOG_INFO;
}

void log_set_level(log_level level)
{
    min_level = level;
}

int log_enabled(log_level level)
{
    return level >= min_level;
}

void log_write(log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < min_level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, names[level], prog);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line keeps lines whole across threads. */
    fwrite(line, 1, len, stderr);
}

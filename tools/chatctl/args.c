/*
 * args.c: parsing of command-line values (see ctl.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

int args_parse_u64(const char *s, uint64_t *out)
{
    if (strcmp(s, "max") == 0 || strcmp(s, "end") == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    /* strtoull accepts "-1" and leading blanks; ids are plain digits. */
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (uint64_t)v;
    return 0;
}

int args_parse_u32(const char *s, uint32_t min, uint32_t max, uint32_t *out)
{
    uint64_t v;
    if (args_parse_u64(s, &v) != 0 || strcmp(s, "max") == 0 || strcmp(s, "end") == 0)
        return -1;
    if (v < min || v > max)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int args_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}, {"", 1000}};
    if (!isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || v <= 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) != 0)
            continue;
        if (v > INT64_MAX / units[i].ms)
            return -1;
        *out = (int64_t)v * units[i].ms;
        return 0;
    }
    return -1;
}

bool args_valid_device(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
            return false;
    }
    return true;
}

int args_parse(ctl *c, const char *cmd, int argc, char **argv, const args_opt *opts)
{
    int n = 0;
    bool options_done = false;
    for (int i = 1; i < argc;) {
        char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            argv[n++] = a; /* n < i always, so this never overwrites an unread argument */
            i++;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            i++;
            continue;
        }
        const args_opt *o = opts;
        for (; o != NULL && o->name != NULL; o++) {
            size_t len = strlen(o->name);
            if (strncmp(a, o->name, len) != 0 || (a[len] != '\0' && a[len] != '='))
                continue;
            if (o->value == NULL && a[len] == '=') {
                ctl_errorf(c, "%s: %s takes no value", cmd, o->name);
                return -1;
            }
            if (o->value != NULL) {
                if (a[len] == '=') {
                    *o->value = a + len + 1;
                    i++;
                } else if (i + 1 < argc) {
                    *o->value = argv[i + 1];
                    i += 2;
                } else {
                    ctl_errorf(c, "%s: %s needs a value", cmd, o->name);
                    return -1;
                }
            } else {
                i++;
            }
            if (o->flag != NULL)
                *o->flag = true;
            break;
        }
        if (o != NULL && o->name != NULL)
            continue;
        int r = ctl_parse_common(c, argc, argv, &i);
        if (r < 0)
            return -1;
        if (r == 0) {
            ctl_errorf(c, "%s: unknown option %s (see %s --help)", cmd, a, c->prog);
            return -1;
        }
    }
    return n;
}

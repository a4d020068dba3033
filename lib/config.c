/* Settings from flags and the environment (config.h). */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

static int conf_argc;
static char **conf_argv;

/* "true" stands for a bare boolean flag; it is a static string so callers may compare. */
static const char bare_flag[] = "true";

/* Longest setting name accepted; longer names are a programming error and never match. */
#define CONF_NAME_MAX 128

const char *conf_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case CONF_E_INVALID:
        return "value does not parse";
    case CONF_E_RANGE:
        return "value out of range";
    default:
        if (err < 0 && err > -4096)
            return strerror(-err);
        return "unknown error";
    }
}

void conf_init(int argc, char **argv)
{
    conf_argc = argc > 0 ? argc : 0;
    conf_argv = argc > 0 ? argv : NULL;
}

static const char *flag_value(const char *name)
{
    size_t nlen = strlen(name);
    /* The last occurrence wins, as with most command-line tools. */
    const char *found = NULL;
    for (int i = 1; i < conf_argc; i++) {
        const char *a = conf_argv[i];
        if (a == NULL)
            break;
        if (strcmp(a, "--") == 0)
            break;
        if (a[0] != '-' || a[1] != '-' || strncmp(a + 2, name, nlen) != 0)
            continue;
        const char *rest = a + 2 + nlen;
        if (*rest == '=') {
            found = rest + 1;
        } else if (*rest == '\0') {
            const char *next = i + 1 < conf_argc ? conf_argv[i + 1] : NULL;
            if (next != NULL && !(next[0] == '-' && next[1] == '-')) {
                found = next;
                i++;
            } else {
                found = bare_flag;
            }
        }
    }
    return found;
}

static const char *env_value(const char *name)
{
    char env[CONF_NAME_MAX + 1];
    size_t n = strlen(name);
    if (n > CONF_NAME_MAX)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        env[i] = (c == '-' || c == '.') ? '_' : (char)toupper(c);
    }
    env[n] = '\0';
    return getenv(env);
}

static const char *lookup(const char *name)
{
    if (name == NULL || strlen(name) > CONF_NAME_MAX)
        return NULL;
    const char *v = flag_value(name);
    return v != NULL ? v : env_value(name);
}

const char *conf_get_str(const char *name, const char *def)
{
    const char *v = lookup(name);
    return v != NULL ? v : def;
}

bool conf_is_set(const char *name)
{
    return lookup(name) != NULL;
}

int conf_get_int(const char *name, int64_t def, int64_t min, int64_t max, int64_t *out)
{
    *out = def;
    const char *v = lookup(name);
    if (v == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 0);
    if (end == v || *end != '\0' || errno == ERANGE) {
        log_warn("config: %s=\"%s\" is not an integer; using %lld", name, v, (long long)def);
        return CONF_E_INVALID;
    }
    if (x < min || x > max) {
        log_warn("config: %s=%lld outside [%lld, %lld]; using %lld", name, x, (long long)min,
                 (long long)max, (long long)def);
        return CONF_E_RANGE;
    }
    *out = x;
    return 0;
}

int conf_get_bool(const char *name, bool def, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    *out = def;
    const char *v = lookup(name);
    if (v == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    log_warn("config: %s=\"%s\" is not a boolean; using %s", name, v, def ? "true" : "false");
    return CONF_E_INVALID;
}

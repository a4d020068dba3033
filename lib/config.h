/*
 * config.h: service settings from command-line flags and the environment.
 *
 * Every setting has a kebab-case name ("redis-url"). Its value is looked up, first match wins:
 *   1. the flag "--redis-url=VALUE" or "--redis-url VALUE" in the argv given to conf_init();
 *   2. the environment variable REDIS_URL (upper case, '-' and '.' become '_');
 *   3. the default passed by the caller.
 * A bare "--name" (no value, or followed by another "--flag") counts as "true" for booleans.
 *
 * Call conf_init() once from main() before any thread starts; the getters are then safe from
 * any thread (they only read).
 */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes: 0 success, negative failure. */
enum {
    CONF_E_INVALID = -1600, /* the value does not parse as the requested type */
    CONF_E_RANGE = -1601,   /* the value parses but lies outside [min, max] */
};

/* Returns a static description of |err| (a CONF_E_* or -errno). */
const char *conf_strerror(int err);

/* Remembers |argv| (argc entries; not copied: it must outlive every getter call, which
 * main()'s argv does). Calling it again replaces the previous argv; argc 0 forgets it. */
void conf_init(int argc, char **argv);

/* The raw value of |name|, or |def| when neither a flag nor an environment variable is set.
 * The returned pointer points into argv, the environment or |def|: do not free it, and copy
 * it if the environment may change. */
const char *conf_get_str(const char *name, const char *def);

/* Reads |name| as a decimal (or 0x hex) integer in [min, max] into |out|. When unset, |out|
 * is |def| and 0 is returned. On CONF_E_INVALID or CONF_E_RANGE |out| is |def| too, and a
 * warning naming the setting is logged so a typo is never silent. */
int conf_get_int(const char *name, int64_t def, int64_t min, int64_t max, int64_t *out);

/* Reads |name| as a boolean: 1/true/yes/on or 0/false/no/off (any case); a bare flag is true.
 * Same error behaviour as conf_get_int(). */
int conf_get_bool(const char *name, bool def, bool *out);

/* True when |name| is set by a flag or the environment (even to an empty string). */
bool conf_is_set(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* CONFIG_H */

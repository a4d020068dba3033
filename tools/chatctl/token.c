/*
 * token.c: `chatctl token <user> [--ttl 24h]` prints a dev JWT (HS256 with $JWT_SECRET).
 */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "ctl.h"

int cmd_token(ctl *c, int argc, char **argv)
{
    const char *ttl = NULL;
    const args_opt opts[] = {{"--ttl", &ttl, NULL}, {NULL, NULL, NULL}};
    int n = args_parse(c, "token", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    const char *user = n == 1 ? argv[0] : (n == 0 ? c->as_user : NULL);
    if (user == NULL) {
        ctl_errorf(c, "token: usage: token <user> [--ttl 24h]");
        return CTL_EXIT_USAGE;
    }
    int64_t ttl_ms = 24LL * 3600 * 1000;
    if (ttl != NULL && (args_parse_duration_ms(ttl, &ttl_ms) != 0 || ttl_ms < 1000)) {
        ctl_errorf(c, "token: --ttl wants a duration of at least 1s (e.g. 30m, 24h, 7d)");
        return CTL_EXIT_USAGE;
    }
    const char *secret = getenv("JWT_SECRET");
    if (secret == NULL || *secret == '\0') {
        ctl_errorf(c, "token: $JWT_SECRET is not set (eval \"$(tools/stack.sh env)\")");
        return CTL_EXIT_FAIL;
    }
    char *token = NULL;
    int rv = auth_token_mint(secret, strlen(secret), user, ttl_ms / 1000, &token);
    if (rv != 0) {
        ctl_errorf(c,
                   "token: cannot mint a token for '%s': %s (user ids are 1..%d printable "
                   "ASCII bytes; JWT_SECRET needs at least %d bytes)",
                   user, auth_strerror(rv), AUTH_USER_ID_MAX, AUTH_SECRET_MIN);
        return CTL_EXIT_FAIL;
    }
    printf("%s\n", token);
    free(token);
    return CTL_EXIT_OK;
}

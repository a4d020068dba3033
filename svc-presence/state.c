/* state.c: reading the per-user presence record (see state.h). */
#include "state.h"

#include <stdbool.h>
#include <string.h>

/* Parses decimal digits at *p (up to |end|) into |*v|. */
static bool parse_ms(const char **p, const char *end, int64_t *v)
{
    const char *q = *p;
    int64_t x = 0;
    if (q == end || *q < '0' || *q > '9')
        return false;
    while (q < end && *q >= '0' && *q <= '9') {
        if (x > (INT64_MAX - 9) / 10)
            return false;
        x = x * 10 + (*q++ - '0');
    }
    *p = q;
    *v = x;
    return true;
}

int state_parse(const char *s, size_t len, int64_t now_ms, presence_state *out)
{
    memset(out, 0, sizeof(*out));
    if (s == NULL)
        return 0;
    const char *p = s, *end = s + len;
    int64_t seen;
    if (!parse_ms(&p, end, &seen))
        return -1;
    int64_t max_dead = 0;
    presence_state st = {.last_seen_ms = seen};
    while (p < end) {
        if (*p++ != ' ')
            return -1;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        if (eq == NULL || eq == p || memchr(p, ' ', (size_t)(eq - p)) != NULL)
            return -1;
        p = eq + 1;
        int64_t exp;
        if (!parse_ms(&p, end, &exp))
            return -1;
        if (exp >= now_ms) {
            st.devices++;
            if (st.next_expiry_ms == 0 || exp < st.next_expiry_ms)
                st.next_expiry_ms = exp;
        } else if (exp > max_dead) {
            max_dead = exp;
        }
    }
    if (st.devices == 0 && max_dead > st.last_seen_ms)
        st.last_seen_ms = max_dead;
    *out = st;
    return 0;
}

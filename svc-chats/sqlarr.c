/* sqlarr.c: array literals (see sqlarr.h). */
#include "sqlarr.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

static void reserve(sqlarr *a, size_t more)
{
    if (a->len + more + 2 <= a->cap)
        return;
    size_t cap = a->cap ? a->cap : 256;
    while (cap < a->len + more + 2)
        cap *= 2;
    a->buf = mem_realloc(a->buf, cap);
    a->cap = cap;
}

void sqlarr_init(sqlarr *a)
{
    memset(a, 0, sizeof(*a));
    reserve(a, 1);
    a->buf[0] = '{';
    a->len = 1;
}

void sqlarr_free(sqlarr *a)
{
    free(a->buf);
    memset(a, 0, sizeof(*a));
}

static void sep(sqlarr *a)
{
    if (a->n++ > 0)
        a->buf[a->len++] = ',';
}

void sqlarr_add_i64(sqlarr *a, int64_t v)
{
    reserve(a, 24);
    sep(a);
    a->len += (size_t)snprintf(a->buf + a->len, 22, "%" PRId64, v);
}

void sqlarr_add_bool(sqlarr *a, bool v)
{
    reserve(a, 2);
    sep(a);
    a->buf[a->len++] = v ? 't' : 'f';
}

void sqlarr_add_text(sqlarr *a, const char *s)
{
    if (s == NULL) {
        reserve(a, 5);
        sep(a);
        memcpy(a->buf + a->len, "NULL", 4);
        a->len += 4;
        return;
    }
    size_t l = strlen(s);
    reserve(a, 2 * l + 3);
    sep(a);
    a->buf[a->len++] = '"';
    for (size_t i = 0; i < l; i++) {
        if (s[i] == '"' || s[i] == '\\')
            a->buf[a->len++] = '\\';
        a->buf[a->len++] = s[i];
    }
    a->buf[a->len++] = '"';
}

const char *sqlarr_str(sqlarr *a)
{
    reserve(a, 1);
    a->buf[a->len] = '}';
    a->buf[a->len + 1] = '\0';
    return a->buf;
}

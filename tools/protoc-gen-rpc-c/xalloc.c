#include "xalloc.h"

#include "mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *xconcat(const char *first, ...)
{
    va_list ap;
    size_t len = 0;
    const char *s;
    char *out, *w;

    va_start(ap, first);
    for (s = first; s != NULL; s = va_arg(ap, const char *))
        len += strlen(s);
    va_end(ap);

    out = w = mem_alloc(len + 1);
    va_start(ap, first);
    for (s = first; s != NULL; s = va_arg(ap, const char *)) {
        size_t n = strlen(s);
        memcpy(w, s, n);
        w += n;
    }
    va_end(ap);
    *w = '\0';
    return out;
}

/*
 * xalloc.h: allocation for protoc-gen-rpc-c. A code generator has no useful
 * way to go on without memory, so every function here aborts on failure.
 */
#ifndef PGRC_XALLOC_H
#define PGRC_XALLOC_H

#include <stddef.h>

/* Like malloc/calloc/realloc/strdup, but never return NULL (abort instead). */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Returns a new string "a" + "b" + ... up to a NULL argument. Caller frees. */
char *xconcat(const char *first, ...);

#endif /* PGRC_XALLOC_H */

/*
 * mem.h: allocation wrappers that abort the process on out-of-memory, so
 * callers never handle NULL from an allocation (like redis' zmalloc). Sizes
 * that come from the network must be checked against a limit before calling.
 */
#ifndef MEM_H
#define MEM_H

#include <stddef.h>

/* Like malloc/calloc/realloc/strdup/strndup but never return NULL. */
void *mem_alloc(size_t n);
void *mem_calloc(size_t count, size_t size);
void *mem_realloc(void *p, size_t n);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);
/* Copies |n| bytes of |p| into a new allocation. */
void *mem_dup(const void *p, size_t n);

#endif /* MEM_H */

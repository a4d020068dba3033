/*
 * xalloc.h: allocation for protoc-gen-rpc-c. A code generator has no useful
 * way to go on without memory, so every function here aborts on failure.
 */
#ifndef PGRC_XALLOC_H
#define PGRC_XALLOC_H

#include <stddef.h>

/* Allocation that aborts on OOM comes from lib/mem.h (mem_alloc, mem_strdup, ...). */
#include "mem.h"

/* Returns a new string "a" + "b" + ... up to a NULL argument. Caller frees. */
char *xconcat(const char *first, ...);

#endif /* PGRC_XALLOC_H */

/*
 * sqlarr.h: PostgreSQL array literals ('{1,2,"a\"b",NULL}') built in a growable buffer, so a
 * whole batch travels as a few array parameters and is expanded with unnest() on the server
 * (one statement per table instead of one per row).
 */
#ifndef CHATS_SQLARR_H
#define CHATS_SQLARR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sqlarr {
    char *buf;  /* NUL-terminated literal, owned */
    size_t len; /* bytes used (without the NUL) */
    size_t cap; /* bytes allocated */
    size_t n;   /* elements added */
} sqlarr;

void sqlarr_init(sqlarr *a);
void sqlarr_free(sqlarr *a);
void sqlarr_add_i64(sqlarr *a, int64_t v);
/* Adds a quoted text element (|s| must hold no NUL); NULL adds SQL NULL. */
void sqlarr_add_text(sqlarr *a, const char *s);
void sqlarr_add_bool(sqlarr *a, bool v);
/* The finished literal ("{...}"); valid until the next add or free. */
const char *sqlarr_str(sqlarr *a);

#endif /* CHATS_SQLARR_H */

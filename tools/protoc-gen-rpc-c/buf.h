/*
 * buf.h: a growable text buffer, the output side of the generator.
 */
#ifndef PGRC_BUF_H
#define PGRC_BUF_H

#include <stddef.h>

typedef struct buf {
    char *data; /* NUL-terminated text, owned */
    size_t len; /* bytes before the NUL */
    size_t cap; /* bytes allocated */
} buf;

/* Zero-initialisation (buf b = {0};) is a valid empty buffer. */
void buf_puts(buf *b, const char *s);
void buf_putc(buf *b, char c);
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns the text (never NULL) and leaves |b| empty; the caller frees it. */
char *buf_take(buf *b);

void buf_free(buf *b);

#endif /* PGRC_BUF_H */

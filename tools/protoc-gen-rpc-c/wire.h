/*
 * wire.h: a minimal reader of the protobuf wire format.
 *
 * protobuf-c decodes the request into structs, but two things need the raw
 * bytes: the serialized FileDescriptorProtos, which are embedded exactly as
 * protoc sent them, and protobuf-c's own file option (pb_c_file, extension
 * 1019 of FileOptions), which descriptor.proto does not know and protobuf-c
 * therefore keeps as an unknown field.
 */
#ifndef PGRC_WIRE_H
#define PGRC_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum {
    WIRE_VARINT = 0,
    WIRE_FIXED64 = 1,
    WIRE_LEN = 2,
    WIRE_FIXED32 = 5,
};

/* One field read by wire_next(). */
typedef struct wire_field {
    uint32_t number;     /* field number */
    int type;            /* WIRE_* */
    uint64_t varint;     /* value of a WIRE_VARINT field */
    const uint8_t *data; /* WIRE_LEN payload, fixed32/64 bytes; points into the input */
    size_t len;          /* bytes at |data| */
} wire_field;

/* Reads one varint at *p (before |end|) and advances *p. Returns 0 or -1 if malformed. */
int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out);

/* Reads the field at *p (before |end|) into |f| and advances *p past it. Returns 1 for a
 * field, 0 at the end of the input, -1 for malformed input or a group (unsupported). */
int wire_next(const uint8_t **p, const uint8_t *end, wire_field *f);

#endif /* PGRC_WIRE_H */

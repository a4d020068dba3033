/*
 * rpc_wire.h: the gRPC-over-HTTP/2 wire pieces shared by server and client:
 * the length-prefixed message deframer, message framing with optional gzip,
 * grpc-timeout, percent-encoded grpc-message, base64 for "-bin" metadata.
 * Pure functions and small state machines with no I/O, so each is unit
 * tested and fuzzed alone (tests/unit/rpc_wire_test.c, tests/fuzz/).
 */
#ifndef RPC_WIRE_H
#define RPC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#define RPC_FRAME_HEADER 5 /* 1 byte compressed flag + 4 bytes big-endian length */

/* --- deframer ------------------------------------------------------------------------------ */

/* Called for each complete message. |data| is valid only during the call. Return 0 to go on or
 * a negative code to stop feeding (returned by rpc_deframer_feed). */
typedef int (*rpc_deframer_cb)(bool compressed, const uint8_t *data, size_t len, void *user_data);

typedef struct rpc_deframer {
    size_t max_len;                /* largest accepted message length (checked before allocating) */
    uint8_t hdr[RPC_FRAME_HEADER]; /* header bytes collected so far */
    size_t hdr_got;                /* bytes of |hdr| filled */
    uint8_t *buf;                  /* message body being collected (owned) */
    size_t cap;                    /* bytes allocated for |buf|: it grows as bytes arrive, so an
                                      announced length alone reserves no memory */
    size_t len;                    /* length announced by the header */
    size_t got;                    /* bytes of the body collected */
    bool in_body;                  /* header complete, collecting body */
} rpc_deframer;

void rpc_deframer_init(rpc_deframer *d, size_t max_len);
void rpc_deframer_free(rpc_deframer *d);

/* Feeds |len| bytes. Calls |cb| for every complete message. Returns 0, RPC_ERR_TOO_LARGE when a
 * header announces more than max_len, RPC_ERR_PROTO for a flag byte other than 0/1, or what
 * |cb| returned. After an error the deframer must not be fed again. */
int rpc_deframer_feed(rpc_deframer *d, const uint8_t *data, size_t len, rpc_deframer_cb cb,
                      void *user_data);

/* True when a message has been started but not completed (a truncated message at END_STREAM). */
bool rpc_deframer_partial(const rpc_deframer *d);

/* --- framing ------------------------------------------------------------------------------- */

/* Serializes |msg| into a new buffer with the 5-byte prefix; gzip-compresses it when |gzip|
 * (the flag is set only when compression was applied). Returns 0 or RPC_ERR_TOO_LARGE when the
 * serialized size exceeds |max_len|. *out is owned by the caller (free()). */
int rpc_frame_message(const ProtobufCMessage *msg, bool gzip, size_t max_len, uint8_t **out,
                      size_t *out_len);

/* Same for raw bytes. */
int rpc_frame_bytes(const uint8_t *data, size_t len, bool gzip, size_t max_len, uint8_t **out,
                    size_t *out_len);

/* The two above with |headroom| bytes reserved (uninitialized) before the frame: the frame
 * starts at *out + headroom and is *out_len bytes long. Lets a caller that keeps frames in its
 * own structures (a queue chunk with the bytes at its end) serialize once, with no copy. */
int rpc_frame_message_at(const ProtobufCMessage *msg, bool gzip, size_t max_len, size_t headroom,
                         uint8_t **out, size_t *out_len);
int rpc_frame_bytes_at(const uint8_t *data, size_t len, bool gzip, size_t max_len, size_t headroom,
                       uint8_t **out, size_t *out_len);

/* Decodes one deframed message: gunzips when |compressed| (RPC_ERR_TOO_LARGE past |max_len|,
 * RPC_ERR_PROTO for bad gzip) and unpacks it with |desc| (RPC_ERR_PROTO when unparsable).
 * *out is freed with protobuf_c_message_free_unpacked(*out, NULL). */
int rpc_decode_message(const ProtobufCMessageDescriptor *desc, bool compressed, const uint8_t *data,
                       size_t len, size_t max_len, ProtobufCMessage **out);

/* --- gzip ---------------------------------------------------------------------------------- */

/* Compresses into a new buffer (free()). Returns 0 or RPC_ERR_NOMEM. */
int rpc_gzip_compress(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len);
/* Decompresses at most |max_len| bytes. Returns 0, RPC_ERR_TOO_LARGE or RPC_ERR_PROTO. */
int rpc_gzip_decompress(const uint8_t *in, size_t len, size_t max_len, uint8_t **out,
                        size_t *out_len);

/* --- headers ------------------------------------------------------------------------------- */

/* Parses a grpc-timeout value ("100m", "5S", at most 8 digits). Returns 0 and *ms (rounded up,
 * capped at ~100 years) or RPC_ERR_INVALID. */
int rpc_timeout_parse(const char *s, size_t len, int64_t *ms);
/* Formats |ms| (> 0) as a grpc-timeout value into |buf| (>= 16 bytes). */
void rpc_timeout_format(int64_t ms, char *buf, size_t buflen);

/* Percent-encodes a grpc-message (bytes outside 0x20-0x7E and '%' become %XX). Returns a new
 * string (free()). */
char *rpc_percent_encode(const char *s);
/* Decodes; invalid escapes are kept literally, as the spec asks. Returns a new string. */
char *rpc_percent_decode(const char *s, size_t len);

/* Base64 for -bin metadata: encode without padding; decode accepts padded or unpadded.
 * Results are new buffers (free()). decode returns 0 or RPC_ERR_INVALID. */
char *rpc_base64_encode(const uint8_t *in, size_t len);
int rpc_base64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len);

/* True for a legal metadata key ([0-9a-z_.-]+, not starting with ':' and not "grpc-" reserved
 * when |user| is set). */
bool rpc_md_key_valid(const char *key, bool user);
/* True when |key| ends in "-bin". */
bool rpc_md_key_is_bin(const char *key);

#endif /* RPC_WIRE_H */

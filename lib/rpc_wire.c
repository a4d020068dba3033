#include "rpc_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "mem.h"
#include "rpc.h"

void rpc_deframer_init(rpc_deframer *d, size_t max_len)
{
    memset(d, 0, sizeof(*d));
    d->max_len = max_len;
}

void rpc_deframer_free(rpc_deframer *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
    d->in_body = false;
    d->hdr_got = 0;
}

bool rpc_deframer_partial(const rpc_deframer *d)
{
    return d->hdr_got > 0 || d->in_body;
}

int rpc_deframer_feed(rpc_deframer *d, const uint8_t *data, size_t len, rpc_deframer_cb cb,
                      void *user_data)
{
    while (len > 0 || (d->in_body && d->got == d->len)) {
        if (!d->in_body) {
            size_t take = RPC_FRAME_HEADER - d->hdr_got;
            if (take > len)
                take = len;
            memcpy(d->hdr + d->hdr_got, data, take);
            d->hdr_got += take;
            data += take;
            len -= take;
            if (d->hdr_got < RPC_FRAME_HEADER)
                return 0;
            if (d->hdr[0] > 1)
                return RPC_ERR_PROTO;
            d->len = ((size_t)d->hdr[1] << 24) | ((size_t)d->hdr[2] << 16) |
                     ((size_t)d->hdr[3] << 8) | d->hdr[4];
            /* The limit is checked on the announced length, before any allocation. */
            if (d->len > d->max_len)
                return RPC_ERR_TOO_LARGE;
            d->got = 0;
            d->in_body = true;
            free(d->buf);
            d->buf = NULL;
            /* Zero-copy when the whole body is already in this chunk. */
            if (len >= d->len) {
                bool compressed = d->hdr[0] == 1;
                const uint8_t *body = data;
                size_t blen = d->len;
                data += blen;
                len -= blen;
                d->in_body = false;
                d->hdr_got = 0;
                int rv = cb(compressed, body, blen, user_data);
                if (rv < 0)
                    return rv;
                continue;
            }
            d->cap = 0;
        }
        size_t take = d->len - d->got;
        if (take > len)
            take = len;
        if (d->got + take > d->cap) {
            size_t ncap = d->cap ? d->cap * 2 : 16384;
            while (ncap < d->got + take)
                ncap *= 2;
            if (ncap > d->len)
                ncap = d->len;
            d->buf = mem_realloc(d->buf, ncap);
            d->cap = ncap;
        }
        if (take) {
            memcpy(d->buf + d->got, data, take);
            d->got += take;
            data += take;
            len -= take;
        }
        if (d->got < d->len)
            return 0;
        uint8_t *buf = d->buf;
        d->buf = NULL;
        d->cap = 0;
        d->in_body = false;
        d->hdr_got = 0;
        int rv = cb(d->hdr[0] == 1, buf, d->len, user_data);
        free(buf);
        if (rv < 0)
            return rv;
    }
    return 0;
}

static void frame_header(uint8_t *buf, bool compressed, size_t len)
{
    buf[0] = compressed ? 1 : 0;
    buf[1] = (uint8_t)(len >> 24);
    buf[2] = (uint8_t)(len >> 16);
    buf[3] = (uint8_t)(len >> 8);
    buf[4] = (uint8_t)len;
}

int rpc_frame_bytes_at(const uint8_t *data, size_t len, bool gzip, size_t max_len, size_t headroom,
                       uint8_t **out, size_t *out_len)
{
    uint8_t *z = NULL;
    size_t zlen = 0;
    if (len > max_len || len > UINT32_MAX)
        return RPC_ERR_TOO_LARGE;
    if (gzip) {
        int rv = rpc_gzip_compress(data, len, &z, &zlen);
        if (rv < 0)
            return rv;
        if (zlen > UINT32_MAX) {
            free(z);
            return RPC_ERR_TOO_LARGE;
        }
        data = z;
        len = zlen;
    }
    uint8_t *buf = mem_alloc(headroom + RPC_FRAME_HEADER + len);
    frame_header(buf + headroom, gzip, len);
    if (len)
        memcpy(buf + headroom + RPC_FRAME_HEADER, data, len);
    free(z);
    *out = buf;
    *out_len = RPC_FRAME_HEADER + len;
    return 0;
}

int rpc_frame_bytes(const uint8_t *data, size_t len, bool gzip, size_t max_len, uint8_t **out,
                    size_t *out_len)
{
    return rpc_frame_bytes_at(data, len, gzip, max_len, 0, out, out_len);
}

int rpc_frame_message_at(const ProtobufCMessage *msg, bool gzip, size_t max_len, size_t headroom,
                         uint8_t **out, size_t *out_len)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > max_len || len > UINT32_MAX)
        return RPC_ERR_TOO_LARGE;
    if (!gzip) {
        uint8_t *buf = mem_alloc(headroom + RPC_FRAME_HEADER + len);
        protobuf_c_message_pack(msg, buf + headroom + RPC_FRAME_HEADER);
        frame_header(buf + headroom, false, len);
        *out = buf;
        *out_len = RPC_FRAME_HEADER + len;
        return 0;
    }
    uint8_t *tmp = mem_alloc(len);
    protobuf_c_message_pack(msg, tmp);
    int rv = rpc_frame_bytes_at(tmp, len, true, max_len, headroom, out, out_len);
    free(tmp);
    return rv;
}

int rpc_frame_message(const ProtobufCMessage *msg, bool gzip, size_t max_len, uint8_t **out,
                      size_t *out_len)
{
    return rpc_frame_message_at(msg, gzip, max_len, 0, out, out_len);
}

int rpc_decode_message(const ProtobufCMessageDescriptor *desc, bool compressed, const uint8_t *data,
                       size_t len, size_t max_len, ProtobufCMessage **out)
{
    uint8_t *plain = NULL;
    size_t plen = 0;
    if (compressed) {
        int rv = rpc_gzip_decompress(data, len, max_len, &plain, &plen);
        if (rv < 0)
            return rv;
        data = plain;
        len = plen;
    }
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
    free(plain);
    if (m == NULL)
        return RPC_ERR_PROTO;
    *out = m;
    return 0;
}

int rpc_gzip_compress(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    /* windowBits 15 + 16 selects the gzip wrapper that grpc-encoding: gzip means. */
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return RPC_ERR_NOMEM;
    size_t cap = deflateBound(&zs, (uLong)len) + 32;
    uint8_t *buf = mem_alloc(cap);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    int zr = deflate(&zs, Z_FINISH);
    size_t n = zs.total_out;
    deflateEnd(&zs);
    if (zr != Z_STREAM_END) {
        free(buf);
        return RPC_ERR_NOMEM;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

int rpc_gzip_decompress(const uint8_t *in, size_t len, size_t max_len, uint8_t **out,
                        size_t *out_len)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    if (inflateInit2(&zs, 15 + 16) != Z_OK)
        return RPC_ERR_NOMEM;
    size_t cap = len * 4 + 64;
    if (cap > max_len + 1)
        cap = max_len + 1;
    uint8_t *buf = mem_alloc(cap);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    int zr;
    for (;;) {
        zs.next_out = buf + zs.total_out;
        zs.avail_out = (uInt)(cap - zs.total_out);
        zr = inflate(&zs, Z_NO_FLUSH);
        if (zr == Z_STREAM_END)
            break;
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            inflateEnd(&zs);
            free(buf);
            return RPC_ERR_PROTO;
        }
        if (zs.total_out > max_len) {
            inflateEnd(&zs);
            free(buf);
            return RPC_ERR_TOO_LARGE;
        }
        if (zs.avail_out == 0) {
            if (cap > max_len) {
                inflateEnd(&zs);
                free(buf);
                return RPC_ERR_TOO_LARGE;
            }
            cap = cap * 2 > max_len + 1 ? max_len + 1 : cap * 2;
            buf = mem_realloc(buf, cap);
        } else if (zs.avail_in == 0) {
            /* Input ended before the gzip trailer: truncated. */
            inflateEnd(&zs);
            free(buf);
            return RPC_ERR_PROTO;
        }
    }
    size_t n = zs.total_out;
    inflateEnd(&zs);
    if (n > max_len) {
        free(buf);
        return RPC_ERR_TOO_LARGE;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

int rpc_timeout_parse(const char *s, size_t len, int64_t *ms)
{
    if (len < 2 || len > 9)
        return RPC_ERR_INVALID;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return RPC_ERR_INVALID;
        v = v * 10 + (s[i] - '0');
    }
    const int64_t cap = INT64_C(100) * 365 * 24 * 3600 * 1000;
    int64_t r;
    switch (s[len - 1]) {
    case 'H':
        r = v * 3600 * 1000;
        break;
    case 'M':
        r = v * 60 * 1000;
        break;
    case 'S':
        r = v * 1000;
        break;
    case 'm':
        r = v;
        break;
    case 'u':
        r = (v + 999) / 1000;
        break;
    case 'n':
        r = (v + 999999) / 1000000;
        break;
    default:
        return RPC_ERR_INVALID;
    }
    *ms = r > cap ? cap : r;
    return 0;
}

/* Divides rounding up (a deadline is never shortened), for v >= 0 without overflow. */
static int64_t div_up(int64_t v, int64_t d)
{
    return v / d + (v % d != 0);
}

void rpc_timeout_format(int64_t ms, char *buf, size_t buflen)
{
    /* At most 8 digits on the wire: the smallest unit whose rounded-up value fits. */
    const int64_t max = 99999999;
    if (ms < 1)
        ms = 1;
    int64_t s = div_up(ms, 1000), m = div_up(s, 60), h = div_up(m, 60);
    if (ms <= max)
        snprintf(buf, buflen, "%lldm", (long long)ms);
    else if (s <= max)
        snprintf(buf, buflen, "%lldS", (long long)s);
    else if (m <= max)
        snprintf(buf, buflen, "%lldM", (long long)m);
    else
        snprintf(buf, buflen, "%lldH", (long long)(h <= max ? h : max)); /* ~11000 years */
}

char *rpc_percent_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = mem_alloc(n * 3 + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c <= 0x7e && c != '%') {
            out[j++] = (char)c;
        } else {
            out[j++] = '%';
            out[j++] = hex[c >> 4];
            out[j++] = hex[c & 15];
        }
    }
    out[j] = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *rpc_percent_decode(const char *s, size_t len)
{
    char *out = mem_alloc(len + 1);
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len) {
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h >= 0 && l >= 0) {
                out[j++] = (char)(h << 4 | l);
                i += 2;
                continue;
            }
        }
        out[j++] = s[i];
    }
    out[j] = '\0';
    return out;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *rpc_base64_encode(const uint8_t *in, size_t len)
{
    char *out = mem_alloc((len + 2) / 3 * 4 + 1);
    size_t j = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[j++] = b64[v >> 18];
        out[j++] = b64[(v >> 12) & 63];
        out[j++] = b64[(v >> 6) & 63];
        out[j++] = b64[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[j++] = b64[v >> 18];
        out[j++] = b64[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[j++] = b64[v >> 18];
        out[j++] = b64[(v >> 12) & 63];
        out[j++] = b64[(v >> 6) & 63];
    }
    out[j] = '\0';
    return out;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int rpc_base64_decode(const char *in, size_t len, uint8_t **out, size_t *out_len)
{
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return RPC_ERR_INVALID;
    uint8_t *buf = mem_alloc(len * 3 / 4 + 3);
    size_t j = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val(in[i]);
        if (v < 0) {
            free(buf);
            return RPC_ERR_INVALID;
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[j++] = (uint8_t)(acc >> bits);
        }
    }
    *out = buf;
    *out_len = j;
    return 0;
}

bool rpc_md_key_valid(const char *key, bool user)
{
    if (key == NULL || key[0] == '\0')
        return false;
    for (const char *p = key; *p; p++) {
        char c = *p;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    if (user && strncmp(key, "grpc-", 5) == 0)
        return false;
    return true;
}

bool rpc_md_key_is_bin(const char *key)
{
    size_t n = strlen(key);
    return n >= 4 && strcmp(key + n - 4, "-bin") == 0;
}

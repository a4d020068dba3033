#include "wire.h"

int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t byte = *(*p)++;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

int wire_next(const uint8_t **p, const uint8_t *end, wire_field *f)
{
    uint64_t key, len;

    if (*p >= end)
        return 0;
    if (wire_varint(p, end, &key) != 0)
        return -1;
    if ((key >> 3) == 0 || (key >> 3) > UINT32_MAX)
        return -1;
    f->number = (uint32_t)(key >> 3);
    f->type = (int)(key & 7);
    f->varint = 0;
    f->data = NULL;
    f->len = 0;

    switch (f->type) {
    case WIRE_VARINT:
        return wire_varint(p, end, &f->varint) == 0 ? 1 : -1;
    case WIRE_FIXED64:
    case WIRE_FIXED32:
        len = f->type == WIRE_FIXED64 ? 8 : 4;
        break;
    case WIRE_LEN:
        if (wire_varint(p, end, &len) != 0)
            return -1;
        break;
    default:
        return -1;
    }
    if (len > (uint64_t)(end - *p))
        return -1;
    f->data = *p;
    f->len = (size_t)len;
    *p += len;
    return 1;
}

/* validate.c: input rules (see validate.h). */
#include "validate.h"

#include <string.h>

bool validate_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0) {
            n = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (i + n > len)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

static bool printable(const char *s, size_t max)
{
    size_t l = s ? strlen(s) : 0;
    if (l == 0 || l > max)
        return false;
    for (size_t i = 0; i < l; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7E)
            return false;
    return true;
}

bool validate_user_id(const char *s)
{
    return printable(s, VALIDATE_USER_ID_MAX);
}

bool validate_token_id(const char *s)
{
    return printable(s, VALIDATE_REQUEST_ID_MAX);
}

bool validate_device_id(const char *s)
{
    size_t l = s ? strlen(s) : 0;
    if (l == 0 || l > VALIDATE_DEVICE_ID_MAX)
        return false;
    for (size_t i = 0; i < l; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

bool validate_body(const char *s)
{
    size_t l = s ? strlen(s) : 0;
    return l >= 1 && l <= VALIDATE_BODY_MAX && validate_utf8(s, l);
}

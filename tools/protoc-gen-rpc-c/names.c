#include "names.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "xalloc.h"

/* Plain ASCII tests: protoc-c uses the C locale's, and .proto names are ASCII. */
static bool is_upper(char c)
{
    return c >= 'A' && c <= 'Z';
}

static char to_lower(char c)
{
    return is_upper(c) ? (char)(c - 'A' + 'a') : c;
}

static char to_upper(char c)
{
    return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* A '_' goes before a capital that follows a non-capital; the first character counts as
 * following a capital so that no name starts with '_'. */
static void camel_split(buf *out, const char *name, size_t len, bool upper)
{
    bool was_upper = true;
    for (size_t i = 0; i < len; i++) {
        bool up = is_upper(name[i]);
        if (up && !was_upper)
            buf_putc(out, '_');
        buf_putc(out, upper ? to_upper(name[i]) : to_lower(name[i]));
        was_upper = up;
    }
}

static void camel_join(buf *out, const char *name, size_t len)
{
    bool next_upper = true;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '_') {
            next_upper = true;
        } else if (next_upper) {
            buf_putc(out, to_upper(name[i]));
            next_upper = false;
        } else {
            buf_putc(out, name[i]);
        }
    }
}

char *names_camel_to_lower(const char *name)
{
    buf b = {0};
    camel_split(&b, name, strlen(name), false);
    return buf_take(&b);
}

char *names_camel_to_upper(const char *name)
{
    buf b = {0};
    camel_split(&b, name, strlen(name), true);
    return buf_take(&b);
}

char *names_to_camel(const char *name)
{
    buf b = {0};
    camel_join(&b, name, strlen(name));
    return buf_take(&b);
}

enum piece_style { PIECE_LOWER, PIECE_UPPER, PIECE_CAMEL };

static char *full_name(const char *name, const char *package, const char *c_package,
                       enum piece_style style)
{
    char *renamed = NULL;
    buf b = {0};

    /* protoc-c's OverrideFullName: swap the package prefix for c_package. */
    if (c_package != NULL) {
        size_t plen = package ? strlen(package) : 0;
        renamed = xconcat(c_package, plen == 0 ? "." : "", name + plen, (char *)NULL);
        name = renamed;
    }

    const char *p = name;
    while (*p != '\0') {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (len > 0) {
            if (b.len > 0)
                buf_puts(&b, "__");
            if (style == PIECE_CAMEL)
                camel_join(&b, p, len);
            else
                camel_split(&b, p, len, style == PIECE_UPPER);
        }
        p += len;
        if (*p == '.')
            p++;
    }
    free(renamed);
    return buf_take(&b);
}

char *names_full_to_lower(const char *full, const char *package, const char *c_package)
{
    return full_name(full, package, c_package, PIECE_LOWER);
}

char *names_full_to_upper(const char *full, const char *package, const char *c_package)
{
    return full_name(full, package, c_package, PIECE_UPPER);
}

char *names_full_to_c(const char *full, const char *package, const char *c_package)
{
    return full_name(full, package, c_package, PIECE_CAMEL);
}

char *names_file_ident(const char *path)
{
    buf b = {0};
    if (isdigit((unsigned char)path[0]))
        buf_putc(&b, '_');
    for (const char *p = path; *p != '\0'; p++)
        buf_putc(&b, isalnum((unsigned char)*p) ? *p : '_');
    return buf_take(&b);
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

char *names_strip_proto(const char *path)
{
    char *out = mem_strdup(path);
    if (has_suffix(out, ".protodevel"))
        out[strlen(out) - strlen(".protodevel")] = '\0';
    else if (has_suffix(out, ".proto"))
        out[strlen(out) - strlen(".proto")] = '\0';
    return out;
}

static const char *const reserved[] = {
    "_Alignas",  "_Alignof",       "_Atomic",       "_Bool",   "_Complex", "_Generic", "_Imaginary",
    "_Noreturn", "_Static_assert", "_Thread_local", "auto",    "break",    "case",     "char",
    "const",     "continue",       "default",       "do",      "double",   "else",     "enum",
    "extern",    "float",          "for",           "goto",    "if",       "inline",   "int",
    "long",      "register",       "restrict",      "return",  "short",    "signed",   "sizeof",
    "static",    "struct",         "switch",        "typedef", "union",    "unsigned", "void",
    "volatile",  "while",          "user_data",
};

char *names_member(const char *lower)
{
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strcmp(lower, reserved[i]) == 0)
            return xconcat(lower, "_", (char *)NULL);
    }
    return mem_strdup(lower);
}

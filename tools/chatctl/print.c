/*
 * print.c: how chatctl shows messages and chats (see ctl.h).
 *
 * One line per thing, ids first, so the output can be grepped and cut. Text from the server
 * (bodies, titles, user ids) is printed with control characters escaped: another user's
 * message must not be able to move the cursor or recolour the terminal.
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "ctl.h"

const char *print_time_ms(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return buf;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (localtime_r(&s, &tm) == NULL) {
        snprintf(buf, len, "%" PRId64, ms);
        return buf;
    }
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03d", day, (int)(ms % 1000));
    return buf;
}

void print_text(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; p != NULL && *p != '\0'; p++) {
        if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p == '\\')
            fputs("\\\\", f);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
}

void print_chat_message(FILE *f, const Chat__V1__Message *m, bool with_chat)
{
    char when[32];
    fprintf(f, "%" PRIu64, m->message_id);
    if (with_chat)
        fprintf(f, "  chat %" PRIu64, m->chat_id);
    fprintf(f, "  %s  ", print_time_ms(m->created_at_ms, when, sizeof when));
    print_text(f, m->sender_id);
    if (m->deleted) {
        fprintf(f, ": (deleted, v%" PRIu32 ")\n", m->version);
        return;
    }
    fputs(": ", f);
    print_text(f, m->body);
    if (m->version > 1)
        fprintf(f, "  (edited, v%" PRIu32 ")", m->version);
    fputc('\n', f);
}

const char *print_chat_kind(Chat__V1__ChatKind kind)
{
    switch (kind) {
    case CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT:
        return "direct";
    case CHAT__V1__CHAT_KIND__CHAT_KIND_GROUP:
        return "group";
    default:
        return "unspecified";
    }
}

void print_chat(FILE *f, const Chat__V1__Chat *chat, uint64_t newest_message_id)
{
    fprintf(f, "%" PRIu64 "  %s", chat->chat_id, print_chat_kind(chat->kind));
    if (chat->title != NULL && *chat->title != '\0') {
        fputs("  \"", f);
        print_text(f, chat->title);
        fputc('"', f);
    }
    fputs("  creator ", f);
    print_text(f, chat->creator_id);
    fprintf(f, "  %" PRIu32 " member%s", chat->member_count, chat->member_count == 1 ? "" : "s");
    if (chat->n_member_ids > 0) {
        fputs(":", f);
        for (size_t i = 0; i < chat->n_member_ids; i++) {
            fputc(' ', f);
            print_text(f, chat->member_ids[i]);
        }
    }
    if (newest_message_id != 0)
        fprintf(f, "  newest %" PRIu64, newest_message_id);
    fputc('\n', f);
}

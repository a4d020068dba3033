/*
 * verify.c: `verify <chat_id> <from> <to> [--buckets N]`. Downloads the messages of
 * [from, to) with GetHistory, computes the range hash locally (rangehash.c, the contract's
 * definition), asks the server with GetRangeHash, and compares; with buckets, says which
 * sub-ranges differ. --skip ID leaves one message out of the local side, to show what a client
 * missing a message sees.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chat/v1/chats.rpc-c.h"
#include "ctl.h"
#include "rangehash.h"

#define VERIFY_PAGE 200                    /* GetHistory page size (the contract's maximum) */
#define VERIFY_DEFAULT_MAX_MESSAGES 200000 /* --max-messages: a bound on the download */
#define VERIFY_PRINT_ALL_BUCKETS 32        /* up to this many buckets, print every one */

CTL_KEEP_FN(keep_history, Chat__V1__GetHistoryResponse)
CTL_KEEP_FN(keep_hash, Chat__V1__GetRangeHashResponse)

/* Pages [from, to) forward through GetHistory into |a|. Returns 0 or -1 (printed). */
static int fetch_local(ctl *c, rpc_channel *ch, uint64_t chat_id, rangehash_acc *a,
                       uint64_t max_messages, uint64_t skip)
{
    Chat__V1__ChatsService__GetHistory__RpcClientCallbacks cb = {NULL, keep_history,
                                                                 ctl_reply_on_close};
    rpc_call_opts o = ctl_call_opts(c);
    /* The anchor is exclusive: start just below |from| (ids are never 0, so 0 is "from the
     * first message" and loses nothing). */
    uint64_t anchor = a->total.from > 0 ? a->total.from - 1 : 0;
    uint64_t seen = 0;
    for (;;) {
        Chat__V1__GetHistoryRequest req = CHAT__V1__GET_HISTORY_REQUEST__INIT;
        req.chat_id = chat_id;
        req.anchor_message_id = anchor;
        req.direction = CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_FORWARD;
        req.page_size = VERIFY_PAGE;
        ctl_reply r = {0};
        int rv = chat__v1__chats_service__rpc_get_history(&r.call, ch, &req, &o, &cb, &r);
        if (ctl_reply_wait(c, &r, rv, "GetHistory") != 0) {
            ctl_reply_clear(&r);
            return -1;
        }
        const Chat__V1__GetHistoryResponse *resp = (const Chat__V1__GetHistoryResponse *)r.resp;
        bool past_end = false;
        for (size_t i = 0; i < resp->n_messages; i++) {
            const Chat__V1__Message *m = resp->messages[i];
            if (m->message_id >= a->total.to) {
                past_end = true;
                break;
            }
            /* Pages are ascending and anchored on the last id: anything at or below the anchor
             * would be a server bug, and counting it twice would cancel its hash. */
            if (m->message_id <= anchor && anchor != 0)
                continue;
            if (m->message_id != skip)
                rangehash_acc_add(a, m->message_id, m->version, m->deleted);
            anchor = m->message_id;
            seen++;
        }
        bool more = resp->has_more && resp->n_messages > 0;
        ctl_reply_clear(&r);
        if (past_end || !more || anchor >= a->total.to - 1)
            return 0;
        if (seen > max_messages) {
            ctl_errorf(c,
                       "verify: more than %" PRIu64 " messages in the range; narrow it or "
                       "raise --max-messages",
                       max_messages);
            return -1;
        }
    }
}

static void print_hash_line(const char *who, uint64_t count, uint64_t hash)
{
    printf("  %-8s count %-8" PRIu64 " hash 0x%016" PRIx64 " (%" PRIu64 ")\n", who, count, hash,
           hash);
}

int cmd_verify(ctl *c, int argc, char **argv)
{
    const char *buckets_s = NULL, *max_s = NULL, *skip_s = NULL;
    const args_opt opts[] = {{"--buckets", &buckets_s, NULL},
                             {"--skip", &skip_s, NULL},
                             {"--max-messages", &max_s, NULL},
                             {NULL, NULL, NULL}};
    int n = args_parse(c, "verify", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id, from, to, max_messages = VERIFY_DEFAULT_MAX_MESSAGES, skip = 0;
    uint32_t n_buckets = 0;
    if (n != 3 || args_parse_u64(argv[0], &chat_id) != 0 || args_parse_u64(argv[1], &from) != 0 ||
        args_parse_u64(argv[2], &to) != 0 ||
        (buckets_s != NULL &&
         args_parse_u32(buckets_s, 0, RANGEHASH_MAX_BUCKETS, &n_buckets) != 0) ||
        (skip_s != NULL && args_parse_u64(skip_s, &skip) != 0) ||
        (max_s != NULL && args_parse_u64(max_s, &max_messages) != 0)) {
        ctl_errorf(c, "verify: usage: verify <chat_id> <from> <to> [--buckets 0..256] [--skip ID] "
                      "[--max-messages N]  (the range is [from, to); 0 and max are the ends)");
        return CTL_EXIT_USAGE;
    }
    /* Large enough for one acc: 256 buckets of 32 bytes. */
    rangehash_acc *local = calloc(1, sizeof *local);
    if (local == NULL)
        abort();
    int rv = rangehash_acc_init(local, from, to, n_buckets);
    if (rv != 0) {
        ctl_errorf(c, "verify: %s", rangehash_strerror(rv));
        free(local);
        return CTL_EXIT_USAGE;
    }
    int ret = CTL_EXIT_FAIL;
    ctl_reply r = {0};
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        goto out;

    if (fetch_local(c, ch, chat_id, local, max_messages, skip) != 0)
        goto out;

    Chat__V1__GetRangeHashRequest req = CHAT__V1__GET_RANGE_HASH_REQUEST__INIT;
    req.chat_id = chat_id;
    req.from_message_id = from;
    req.to_message_id = to;
    req.bucket_count = n_buckets;
    Chat__V1__ChatsService__GetRangeHash__RpcClientCallbacks cb = {NULL, keep_hash,
                                                                   ctl_reply_on_close};
    rpc_call_opts o = ctl_call_opts(c);
    rv = chat__v1__chats_service__rpc_get_range_hash(&r.call, ch, &req, &o, &cb, &r);
    if (ctl_reply_wait(c, &r, rv, "GetRangeHash") != 0)
        goto out;
    const Chat__V1__GetRangeHashResponse *resp = (const Chat__V1__GetRangeHashResponse *)r.resp;
    Chat__V1__RangeHash zero = CHAT__V1__RANGE_HASH__INIT;
    const Chat__V1__RangeHash *st = resp->total != NULL ? resp->total : &zero;

    printf("chat %" PRIu64 " range [%" PRIu64 ", %" PRIu64 ")\n", chat_id, from, to);
    print_hash_line("local", local->total.count, local->total.hash);
    print_hash_line("server", st->count, st->hash);
    bool match = st->count == local->total.count && st->hash == local->total.hash;

    if (n_buckets > 0) {
        if (resp->n_buckets != n_buckets) {
            printf("  server returned %zu buckets, asked for %" PRIu32 "\n", resp->n_buckets,
                   n_buckets);
            match = false;
        }
        uint32_t differing = 0;
        for (uint32_t i = 0; i < n_buckets; i++) {
            const rangehash *lb = &local->buckets[i];
            const Chat__V1__RangeHash *sb = i < resp->n_buckets ? resp->buckets[i] : &zero;
            bool bounds_ok = sb->from_message_id == lb->from && sb->to_message_id == lb->to;
            bool same = bounds_ok && sb->count == lb->count && sb->hash == lb->hash;
            if (!same)
                differing++;
            if (n_buckets > VERIFY_PRINT_ALL_BUCKETS && same)
                continue;
            printf("  bucket %3" PRIu32 " [%" PRIu64 ", %" PRIu64 ")  local %" PRIu64
                   "/0x%016" PRIx64 "  server %" PRIu64 "/0x%016" PRIx64 "  %s\n",
                   i, lb->from, lb->to, lb->count, lb->hash, sb->count, sb->hash,
                   same ? "ok" : (bounds_ok ? "DIFFERS" : "DIFFERS (server bounds differ)"));
            if (!bounds_ok)
                printf("             server bounds [%" PRIu64 ", %" PRIu64 ")\n",
                       sb->from_message_id, sb->to_message_id);
        }
        printf("  %" PRIu32 " of %" PRIu32 " buckets differ\n", differing, n_buckets);
        if (differing > 0)
            match = false;
    }
    printf("%s\n", match ? "MATCH" : "MISMATCH");
    if (!match)
        fprintf(stderr, "(a message stored while this ran can also make the newest bucket "
                        "differ: verify ranges that end in the past, or run again)\n");
    ret = match ? CTL_EXIT_OK : CTL_EXIT_MISMATCH;
out:
    ctl_reply_clear(&r);
    free(local);
    return ret;
}

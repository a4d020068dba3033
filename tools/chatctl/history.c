/*
 * history.c: `history <chat_id> [--before ID | --after ID] [--limit N]`, one chat's messages
 * through GetHistory, keyset paged, printed oldest first.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chat/v1/chats.rpc-c.h"
#include "ctl.h"
#include "mem.h"

#define HISTORY_PAGE_MAX 200 /* the contract's page_size limit */

CTL_KEEP_FN(keep_history, Chat__V1__GetHistoryResponse)

int cmd_history(ctl *c, int argc, char **argv)
{
    const char *before_s = NULL, *after_s = NULL, *limit_s = NULL;
    const args_opt opts[] = {{"--before", &before_s, NULL},
                             {"--after", &after_s, NULL},
                             {"--limit", &limit_s, NULL},
                             {NULL, NULL, NULL}};
    int n = args_parse(c, "history", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id, anchor = 0;
    uint32_t limit = 50;
    if (n != 1 || args_parse_u64(argv[0], &chat_id) != 0 || (before_s && after_s) ||
        (before_s != NULL && args_parse_u64(before_s, &anchor) != 0) ||
        (after_s != NULL && args_parse_u64(after_s, &anchor) != 0) ||
        (limit_s != NULL && args_parse_u32(limit_s, 1, 1000000, &limit) != 0)) {
        ctl_errorf(c, "history: usage: history <chat_id> [--before ID | --after ID] "
                      "[--limit N (1..1000000, default 50)]");
        return CTL_EXIT_USAGE;
    }
    bool forward = after_s != NULL;
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;

    /* Pages arrive newest-first when reading backward (each page itself ascending), so keep
     * them all and print at the end in ascending order. */
    size_t n_pages = 0, cap = 0;
    ctl_reply *pages = NULL;
    uint32_t got = 0;
    bool more = false;
    int ret = CTL_EXIT_FAIL;
    Chat__V1__ChatsService__GetHistory__RpcClientCallbacks cb = {NULL, keep_history,
                                                                 ctl_reply_on_close};
    rpc_call_opts o = ctl_call_opts(c);
    for (;;) {
        Chat__V1__GetHistoryRequest req = CHAT__V1__GET_HISTORY_REQUEST__INIT;
        req.chat_id = chat_id;
        req.anchor_message_id = anchor;
        req.direction = forward ? CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_FORWARD
                                : CHAT__V1__HISTORY_DIRECTION__HISTORY_DIRECTION_BACKWARD;
        req.page_size = limit - got < HISTORY_PAGE_MAX ? limit - got : HISTORY_PAGE_MAX;
        if (n_pages == cap) {
            cap = cap ? cap * 2 : 4;
            pages = mem_realloc(pages, cap * sizeof *pages);
        }
        ctl_reply *r = &pages[n_pages++];
        memset(r, 0, sizeof *r);
        int rv = chat__v1__chats_service__rpc_get_history(&r->call, ch, &req, &o, &cb, r);
        if (ctl_reply_wait(c, r, rv, "GetHistory") != 0)
            goto out;
        const Chat__V1__GetHistoryResponse *resp = (const Chat__V1__GetHistoryResponse *)r->resp;
        got += (uint32_t)(resp->n_messages < req.page_size ? resp->n_messages : req.page_size);
        more = resp->has_more;
        if (resp->n_messages == 0 || !resp->has_more || got >= limit)
            break;
        uint64_t next = forward ? resp->messages[resp->n_messages - 1]->message_id
                                : resp->messages[0]->message_id;
        if (next == anchor) /* no progress: a broken server must not loop us */
            break;
        anchor = next;
    }

    uint64_t first = 0, last = 0;
    for (size_t k = 0; k < n_pages; k++) {
        const ctl_reply *r = &pages[forward ? k : n_pages - 1 - k];
        const Chat__V1__GetHistoryResponse *resp = (const Chat__V1__GetHistoryResponse *)r->resp;
        for (size_t i = 0; i < resp->n_messages; i++) {
            print_chat_message(stdout, resp->messages[i], false);
            if (first == 0)
                first = resp->messages[i]->message_id;
            last = resp->messages[i]->message_id;
        }
    }
    if (got == 0)
        fprintf(stderr, "(no messages)\n");
    else if (more && !forward)
        fprintf(stderr, "(older messages exist: %s history %" PRIu64 " --before %" PRIu64 ")\n",
                c->prog, chat_id, first);
    else if (more)
        fprintf(stderr, "(newer messages exist: %s history %" PRIu64 " --after %" PRIu64 ")\n",
                c->prog, chat_id, last);
    ret = CTL_EXIT_OK;
out:
    for (size_t k = 0; k < n_pages; k++)
        ctl_reply_clear(&pages[k]);
    free(pages);
    return ret;
}

/*
 * pull.c: `pull [--device D]`, catch-up through PullMessages: every message of the caller's
 * chats after this device's position, page by page.
 *
 * Asking for the next page acknowledges the previous one, so by default the tool asks once more
 * after the last page (an empty answer) and the next `pull` for the device starts after what
 * was printed. --no-ack leaves the last page unacknowledged: the next pull repeats it.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chat/v1/chats.rpc-c.h"
#include "ctl.h"
#include "mem.h"

CTL_KEEP_FN(keep_pull, Chat__V1__PullMessagesResponse)

int cmd_pull(ctl *c, int argc, char **argv)
{
    const char *device = CTL_DEFAULT_DEVICE, *after_s = NULL, *page_s = NULL;
    bool no_ack = false;
    const args_opt opts[] = {{"--device", &device, NULL},
                             {"--after", &after_s, NULL},
                             {"--page-size", &page_s, NULL},
                             {"--no-ack", NULL, &no_ack},
                             {NULL, NULL, NULL}};
    int n = args_parse(c, "pull", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t after = 0;
    uint32_t page_size = 0;
    if (n != 0 || (after_s != NULL && args_parse_u64(after_s, &after) != 0) ||
        (page_s != NULL && args_parse_u32(page_s, 1, 200, &page_size) != 0)) {
        ctl_errorf(c, "pull: usage: pull [--device D] [--after MESSAGE_ID] [--page-size 1..200] "
                      "[--no-ack]");
        return CTL_EXIT_USAGE;
    }
    if (!args_valid_device(device)) {
        ctl_errorf(c, "pull: --device wants 1..64 bytes of [A-Za-z0-9._-]");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;

    Chat__V1__ChatsService__PullMessages__RpcClientCallbacks cb = {NULL, keep_pull,
                                                                   ctl_reply_on_close};
    rpc_call_opts o = ctl_call_opts(c);
    char *token = mem_strdup("");
    uint64_t total = 0, pages = 0;
    bool acked = true;
    int ret = CTL_EXIT_FAIL;
    for (;;) {
        Chat__V1__PullMessagesRequest req = CHAT__V1__PULL_MESSAGES_REQUEST__INIT;
        req.device_id = (char *)device;
        req.page_token = token;
        req.start_after_message_id = *token == '\0' ? after : 0;
        req.page_size = page_size;
        ctl_reply r = {0};
        int rv = chat__v1__chats_service__rpc_pull_messages(&r.call, ch, &req, &o, &cb, &r);
        if (ctl_reply_wait(c, &r, rv, "PullMessages") != 0) {
            ctl_reply_clear(&r);
            goto out;
        }
        const Chat__V1__PullMessagesResponse *resp = (const Chat__V1__PullMessagesResponse *)r.resp;
        for (size_t i = 0; i < resp->n_messages; i++)
            print_chat_message(stdout, resp->messages[i], true);
        total += resp->n_messages;
        pages++;
        size_t n_messages = resp->n_messages;
        bool done = !resp->has_more && (n_messages == 0 || no_ack);
        acked = n_messages == 0;
        bool same_token = strcmp(token, resp->next_page_token ? resp->next_page_token : "") == 0;
        free(token);
        token = mem_strdup(resp->next_page_token ? resp->next_page_token : "");
        ctl_reply_clear(&r);
        if (done)
            break;
        if (*token == '\0' || (same_token && n_messages == 0)) {
            ctl_errorf(c, "PullMessages: the server returned no next_page_token; stopping");
            goto out;
        }
    }
    fprintf(stderr, "(%" PRIu64 " message%s in %" PRIu64 " page%s for device %s; %s)\n", total,
            total == 1 ? "" : "s", pages, pages == 1 ? "" : "s", device,
            acked ? "position acknowledged"
                  : "last page NOT acknowledged (--no-ack): the next pull repeats it");
    ret = CTL_EXIT_OK;
out:
    free(token);
    return ret;
}

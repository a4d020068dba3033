/*
 * edit.c: `edit <chat_id> <message_id> <text>` and `delete <chat_id> <message_id>`
 * (ChatsService.EditMessage / DeleteMessage; only the sender may).
 */
#include <inttypes.h>
#include <string.h>

#include "chat/v1/chats.rpc-c.h"
#include "ctl.h"

CTL_KEEP_FN(keep_edit, Chat__V1__EditMessageResponse)
CTL_KEEP_FN(keep_delete, Chat__V1__DeleteMessageResponse)

int cmd_edit(ctl *c, int argc, char **argv)
{
    const char *expect_s = NULL;
    const args_opt opts[] = {{"--expect-version", &expect_s, NULL}, {NULL, NULL, NULL}};
    int n = args_parse(c, "edit", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id, message_id;
    uint32_t expect = 0;
    if (n != 3 || args_parse_u64(argv[0], &chat_id) != 0 ||
        args_parse_u64(argv[1], &message_id) != 0 ||
        (expect_s != NULL && args_parse_u32(expect_s, 1, UINT32_MAX, &expect) != 0)) {
        ctl_errorf(c, "edit: usage: edit <chat_id> <message_id> <text> [--expect-version V]");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;
    Chat__V1__EditMessageRequest req = CHAT__V1__EDIT_MESSAGE_REQUEST__INIT;
    req.chat_id = chat_id;
    req.message_id = message_id;
    req.body = argv[2];
    req.expected_version = expect;
    Chat__V1__ChatsService__EditMessage__RpcClientCallbacks cb = {NULL, keep_edit,
                                                                  ctl_reply_on_close};
    ctl_reply r = {0};
    rpc_call_opts o = ctl_call_opts(c);
    int rv = chat__v1__chats_service__rpc_edit_message(&r.call, ch, &req, &o, &cb, &r);
    int ret = CTL_EXIT_FAIL;
    if (ctl_reply_wait(c, &r, rv, "EditMessage") != 0)
        goto out;
    const Chat__V1__EditMessageResponse *resp = (const Chat__V1__EditMessageResponse *)r.resp;
    if (resp->message != NULL)
        print_chat_message(stdout, resp->message, false);
    ret = CTL_EXIT_OK;
out:
    ctl_reply_clear(&r);
    return ret;
}

int cmd_delete(ctl *c, int argc, char **argv)
{
    const char *expect_s = NULL;
    const args_opt opts[] = {{"--expect-version", &expect_s, NULL}, {NULL, NULL, NULL}};
    int n = args_parse(c, "delete", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id, message_id;
    uint32_t expect = 0;
    if (n != 2 || args_parse_u64(argv[0], &chat_id) != 0 ||
        args_parse_u64(argv[1], &message_id) != 0 ||
        (expect_s != NULL && args_parse_u32(expect_s, 1, UINT32_MAX, &expect) != 0)) {
        ctl_errorf(c, "delete: usage: delete <chat_id> <message_id> [--expect-version V]");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;
    Chat__V1__DeleteMessageRequest req = CHAT__V1__DELETE_MESSAGE_REQUEST__INIT;
    req.chat_id = chat_id;
    req.message_id = message_id;
    req.expected_version = expect;
    Chat__V1__ChatsService__DeleteMessage__RpcClientCallbacks cb = {NULL, keep_delete,
                                                                    ctl_reply_on_close};
    ctl_reply r = {0};
    rpc_call_opts o = ctl_call_opts(c);
    int rv = chat__v1__chats_service__rpc_delete_message(&r.call, ch, &req, &o, &cb, &r);
    int ret = CTL_EXIT_FAIL;
    if (ctl_reply_wait(c, &r, rv, "DeleteMessage") != 0)
        goto out;
    const Chat__V1__DeleteMessageResponse *resp = (const Chat__V1__DeleteMessageResponse *)r.resp;
    if (resp->message != NULL)
        print_chat_message(stdout, resp->message, false);
    ret = CTL_EXIT_OK;
out:
    ctl_reply_clear(&r);
    return ret;
}

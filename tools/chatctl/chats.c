/*
 * chats.c: chats and members. `create-chat`, `add-members`, `remove-members`, `get-chat` and
 * `chats` (ListChats, every page).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "chat/v1/chats.rpc-c.h"
#include "ctl.h"

CTL_KEEP_FN(keep_create, Chat__V1__CreateChatResponse)
CTL_KEEP_FN(keep_add, Chat__V1__AddMembersResponse)
CTL_KEEP_FN(keep_remove, Chat__V1__RemoveMembersResponse)
CTL_KEEP_FN(keep_get, Chat__V1__GetChatResponse)
CTL_KEEP_FN(keep_list, Chat__V1__ListChatsResponse)

int cmd_create_chat(ctl *c, int argc, char **argv)
{
    bool group = false, direct = false;
    const char *title = NULL, *request_id = NULL;
    const args_opt opts[] = {{"--group", NULL, &group},
                             {"--direct", NULL, &direct},
                             {"--title", &title, NULL},
                             {"--request-id", &request_id, NULL},
                             {NULL, NULL, NULL}};
    int n = args_parse(c, "create-chat", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    if (group == direct) {
        ctl_errorf(c, "create-chat: say --group [--title T] <member>... or --direct <other>");
        return CTL_EXIT_USAGE;
    }
    if (direct && (n != 1 || title != NULL)) {
        ctl_errorf(c, "create-chat: --direct takes exactly one other user and no --title");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;

    Chat__V1__CreateChatRequest req = CHAT__V1__CREATE_CHAT_REQUEST__INIT;
    req.kind =
        direct ? CHAT__V1__CHAT_KIND__CHAT_KIND_DIRECT : CHAT__V1__CHAT_KIND__CHAT_KIND_GROUP;
    req.n_member_ids = (size_t)n;
    req.member_ids = argv;
    req.title = (char *)(title != NULL ? title : "");
    /* A request id makes the call safe to repeat; without one from the user, each run creates
     * a chat (the tool does not retry on its own). */
    req.request_id = (char *)(request_id != NULL ? request_id : "");

    Chat__V1__ChatsService__CreateChat__RpcClientCallbacks cb = {NULL, keep_create,
                                                                 ctl_reply_on_close};
    ctl_reply r = {0};
    rpc_call_opts o = ctl_call_opts(c);
    int rv = chat__v1__chats_service__rpc_create_chat(&r.call, ch, &req, &o, &cb, &r);
    int ret = CTL_EXIT_FAIL;
    if (ctl_reply_wait(c, &r, rv, "CreateChat") != 0)
        goto out;
    const Chat__V1__CreateChatResponse *resp = (const Chat__V1__CreateChatResponse *)r.resp;
    printf("%s ", resp->created ? "created" : "existing");
    if (resp->chat != NULL)
        print_chat(stdout, resp->chat, 0);
    else
        printf("(no chat in the response)\n");
    ret = CTL_EXIT_OK;
out:
    ctl_reply_clear(&r);
    return ret;
}

/* add-members and remove-members: <chat_id> <user>... */
static int members(ctl *c, int argc, char **argv, bool add)
{
    const char *cmd = add ? "add-members" : "remove-members";
    int n = args_parse(c, cmd, argc, argv, NULL);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id;
    if (n < 2 || args_parse_u64(argv[0], &chat_id) != 0) {
        ctl_errorf(c, "%s: usage: %s <chat_id> <user>...", cmd, cmd);
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;

    ctl_reply r = {0};
    rpc_call_opts o = ctl_call_opts(c);
    int rv, ret = CTL_EXIT_FAIL;
    if (add) {
        Chat__V1__AddMembersRequest req = CHAT__V1__ADD_MEMBERS_REQUEST__INIT;
        req.chat_id = chat_id;
        req.n_user_ids = (size_t)(n - 1);
        req.user_ids = argv + 1;
        Chat__V1__ChatsService__AddMembers__RpcClientCallbacks cb = {NULL, keep_add,
                                                                     ctl_reply_on_close};
        rv = chat__v1__chats_service__rpc_add_members(&r.call, ch, &req, &o, &cb, &r);
        if (ctl_reply_wait(c, &r, rv, "AddMembers") != 0)
            goto out;
        const Chat__V1__AddMembersResponse *resp = (const Chat__V1__AddMembersResponse *)r.resp;
        printf("added %zu to chat %" PRIu64 ":", resp->n_added_user_ids, chat_id);
        for (size_t i = 0; i < resp->n_added_user_ids; i++) {
            fputc(' ', stdout);
            print_text(stdout, resp->added_user_ids[i]);
        }
        printf("  (%" PRIu32 " members now)\n", resp->member_count);
    } else {
        Chat__V1__RemoveMembersRequest req = CHAT__V1__REMOVE_MEMBERS_REQUEST__INIT;
        req.chat_id = chat_id;
        req.n_user_ids = (size_t)(n - 1);
        req.user_ids = argv + 1;
        Chat__V1__ChatsService__RemoveMembers__RpcClientCallbacks cb = {NULL, keep_remove,
                                                                        ctl_reply_on_close};
        rv = chat__v1__chats_service__rpc_remove_members(&r.call, ch, &req, &o, &cb, &r);
        if (ctl_reply_wait(c, &r, rv, "RemoveMembers") != 0)
            goto out;
        const Chat__V1__RemoveMembersResponse *resp =
            (const Chat__V1__RemoveMembersResponse *)r.resp;
        printf("removed %zu from chat %" PRIu64 ":", resp->n_removed_user_ids, chat_id);
        for (size_t i = 0; i < resp->n_removed_user_ids; i++) {
            fputc(' ', stdout);
            print_text(stdout, resp->removed_user_ids[i]);
        }
        printf("  (%" PRIu32 " members now)\n", resp->member_count);
    }
    ret = CTL_EXIT_OK;
out:
    ctl_reply_clear(&r);
    return ret;
}

int cmd_add_members(ctl *c, int argc, char **argv)
{
    return members(c, argc, argv, true);
}

int cmd_remove_members(ctl *c, int argc, char **argv)
{
    return members(c, argc, argv, false);
}

int cmd_get_chat(ctl *c, int argc, char **argv)
{
    int n = args_parse(c, "get-chat", argc, argv, NULL);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id;
    if (n != 1 || args_parse_u64(argv[0], &chat_id) != 0) {
        ctl_errorf(c, "get-chat: usage: get-chat <chat_id>");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;
    Chat__V1__GetChatRequest req = CHAT__V1__GET_CHAT_REQUEST__INIT;
    req.chat_id = chat_id;
    Chat__V1__ChatsService__GetChat__RpcClientCallbacks cb = {NULL, keep_get, ctl_reply_on_close};
    ctl_reply r = {0};
    rpc_call_opts o = ctl_call_opts(c);
    int rv = chat__v1__chats_service__rpc_get_chat(&r.call, ch, &req, &o, &cb, &r);
    int ret = CTL_EXIT_FAIL;
    if (ctl_reply_wait(c, &r, rv, "GetChat") != 0)
        goto out;
    const Chat__V1__GetChatResponse *resp = (const Chat__V1__GetChatResponse *)r.resp;
    if (resp->chat != NULL)
        print_chat(stdout, resp->chat, resp->newest_message_id);
    ret = CTL_EXIT_OK;
out:
    ctl_reply_clear(&r);
    return ret;
}

int cmd_chats(ctl *c, int argc, char **argv)
{
    const char *limit_s = NULL;
    const args_opt opts[] = {{"--limit", &limit_s, NULL}, {NULL, NULL, NULL}};
    int n = args_parse(c, "chats", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint32_t limit = UINT32_MAX;
    if (n != 0 || (limit_s != NULL && args_parse_u32(limit_s, 1, UINT32_MAX, &limit) != 0)) {
        ctl_errorf(c, "chats: usage: chats [--limit N]");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_chats(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;

    Chat__V1__ChatsService__ListChats__RpcClientCallbacks cb = {NULL, keep_list,
                                                                ctl_reply_on_close};
    rpc_call_opts o = ctl_call_opts(c);
    uint64_t after = 0;
    uint32_t shown = 0;
    for (;;) {
        Chat__V1__ListChatsRequest req = CHAT__V1__LIST_CHATS_REQUEST__INIT;
        req.after_chat_id = after;
        req.page_size = limit - shown < 200 ? limit - shown : 200;
        ctl_reply r = {0};
        int rv = chat__v1__chats_service__rpc_list_chats(&r.call, ch, &req, &o, &cb, &r);
        if (ctl_reply_wait(c, &r, rv, "ListChats") != 0) {
            ctl_reply_clear(&r);
            return CTL_EXIT_FAIL;
        }
        const Chat__V1__ListChatsResponse *resp = (const Chat__V1__ListChatsResponse *)r.resp;
        for (size_t i = 0; i < resp->n_chats && shown < limit; i++, shown++) {
            if (resp->chats[i]->chat != NULL)
                print_chat(stdout, resp->chats[i]->chat, resp->chats[i]->newest_message_id);
        }
        /* A server that says has_more without moving forward would loop us forever. */
        bool more = resp->has_more && resp->n_chats > 0 && resp->next_after_chat_id > after;
        after = resp->next_after_chat_id;
        ctl_reply_clear(&r);
        if (!more || shown >= limit)
            break;
    }
    if (shown == 0)
        fprintf(stderr, "(no chats)\n");
    return CTL_EXIT_OK;
}

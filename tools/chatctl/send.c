/*
 * send.c: `send <chat_id> <text>`, one message through the unary MessagingService.Send.
 */
#include <inttypes.h>
#include <string.h>

#include "chat/v1/messaging.rpc-c.h"
#include "ctl.h"

CTL_KEEP_FN(keep_send, Chat__V1__SendResponse)

static const char *send_status_name(Chat__V1__SendStatus s)
{
    switch (s) {
    case CHAT__V1__SEND_STATUS__SEND_STATUS_OK:
        return "OK";
    case CHAT__V1__SEND_STATUS__SEND_STATUS_DUPLICATE:
        return "DUPLICATE";
    case CHAT__V1__SEND_STATUS__SEND_STATUS_REJECTED:
        return "REJECTED";
    case CHAT__V1__SEND_STATUS__SEND_STATUS_FAILED:
        return "FAILED";
    default:
        return "UNSPECIFIED";
    }
}

int cmd_send(ctl *c, int argc, char **argv)
{
    const char *client_id = NULL;
    const args_opt opts[] = {{"--client-id", &client_id, NULL}, {NULL, NULL, NULL}};
    int n = args_parse(c, "send", argc, argv, opts);
    if (n < 0)
        return CTL_EXIT_USAGE;
    uint64_t chat_id;
    if (n != 2 || args_parse_u64(argv[0], &chat_id) != 0) {
        ctl_errorf(c, "send: usage: send <chat_id> <text> [--client-id ID] (quote the text; "
                      "put -- before text that starts with '-')");
        return CTL_EXIT_USAGE;
    }
    rpc_channel *ch = ctl_messaging(c);
    if (ch == NULL)
        return CTL_EXIT_FAIL;

    char fresh[CTL_CLIENT_ID_LEN + 1];
    if (client_id == NULL) {
        ctl_new_client_id(fresh);
        client_id = fresh;
    }
    Chat__V1__SendRequest req = CHAT__V1__SEND_REQUEST__INIT;
    req.client_message_id = (char *)client_id;
    req.chat_id = chat_id;
    req.body = argv[1];

    Chat__V1__MessagingService__Send__RpcClientCallbacks cb = {NULL, keep_send, ctl_reply_on_close};
    ctl_reply r = {0};
    rpc_call_opts o = ctl_call_opts(c);
    int rv = chat__v1__messaging_service__rpc_send(&r.call, ch, &req, &o, &cb, &r);
    int ret = CTL_EXIT_FAIL;
    if (ctl_reply_wait(c, &r, rv, "Send") != 0) {
        /* After these the outcome is unknown; the contract says: retry with the same id. */
        if (r.code == RPC_STATUS_UNAVAILABLE || r.code == RPC_STATUS_DEADLINE_EXCEEDED || !r.done)
            fprintf(stderr,
                    "%s: the message may or may not be stored; to find out, send again "
                    "with --client-id %s\n",
                    c->prog, client_id);
        goto out;
    }
    const Chat__V1__SendResponse *resp = (const Chat__V1__SendResponse *)r.resp;
    char when[32];
    printf("%s message_id=%" PRIu64 " client_message_id=%s created=%s\n",
           send_status_name(resp->status), resp->message_id, client_id,
           print_time_ms(resp->created_at_ms, when, sizeof when));
    ret = CTL_EXIT_OK;
out:
    ctl_reply_clear(&r);
    return ret;
}

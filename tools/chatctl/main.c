/*
 * main.c: chatctl, a command-line client of the chat backend for people trying it.
 * Wiring only: shared options, subcommand dispatch, --help.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "log.h"

static const struct {
    const char *name;
    int (*fn)(ctl *c, int argc, char **argv);
} commands[] = {
    {"token", cmd_token},
    {"create-chat", cmd_create_chat},
    {"add-members", cmd_add_members},
    {"remove-members", cmd_remove_members},
    {"get-chat", cmd_get_chat},
    {"chats", cmd_chats},
    {"send", cmd_send},
    {"edit", cmd_edit},
    {"delete", cmd_delete},
    {"tail", cmd_tail},
    {"history", cmd_history},
    {"pull", cmd_pull},
    {"verify", cmd_verify},
};

void ctl_usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %1$s [options] <command> [arguments]\n"
            "\n"
            "A command-line client of the chat backend (chat.v1 over gRPC). Try it on the local\n"
            "stack: tools/stack.sh up; eval \"$(tools/stack.sh env)\"; %1$s --as alice chats\n"
            "\n"
            "Commands:\n"
            "  token <user> [--ttl 24h]           print a dev JWT (HS256 with $JWT_SECRET,\n"
            "                                     sub=<user>, exp=now+ttl)\n"
            "  create-chat --group [--title T] [<member>...]\n"
            "  create-chat --direct <other>       create a chat with you in it; prints its id.\n"
            "                                     --request-id ID makes a retry return the same\n"
            "                                     chat\n"
            "  add-members <chat_id> <user>...    add users to a group chat\n"
            "  remove-members <chat_id> <user>... remove users (yourself: leave; others: creator)\n"
            "  get-chat <chat_id>                 one chat with its members and newest message id\n"
            "  chats [--limit N]                  your chats (ListChats, every page)\n"
            "  send <chat_id> <text> [--client-id ID]\n"
            "                                     post a message (unary MessagingService.Send)\n"
            "                                     with a fresh client_message_id, or ID to retry\n"
            "                                     one (a repeat answers DUPLICATE, same id);\n"
            "                                     prints status and message_id\n"
            "  edit <chat_id> <message_id> <text> [--expect-version V]\n"
            "  delete <chat_id> <message_id> [--expect-version V]\n"
            "                                     edit or delete your own message\n"
            "  tail [--device D] [--send CHAT_ID] [--presence] [--for DURATION] [--no-ack]\n"
            "                                     a live session on MessagingService.Connect:\n"
            "                                     prints every delivery with its session_seq,\n"
            "                                     acks cumulatively, reports session_seq gaps\n"
            "                                     (frames the server dropped) and pings, until\n"
            "                                     Ctrl-C/SIGTERM or DURATION. --send sends each\n"
            "                                     line of stdin to CHAT_ID on the same stream.\n"
            "                                     --presence asks for partners' presence;\n"
            "                                     --no-ack never acks (watch resends and the\n"
            "                                     stuck-session close)\n"
            "  history <chat_id> [--before ID | --after ID] [--limit N]\n"
            "                                     one chat's messages, oldest first (GetHistory,\n"
            "                                     paged): the newest N (default 50), those\n"
            "                                     before ID, or the first N after ID\n"
            "  pull [--device D] [--after ID] [--page-size N] [--no-ack]\n"
            "                                     catch up: everything in your chats after the\n"
            "                                     device's pull position (PullMessages, every\n"
            "                                     page); the position moves past what is shown\n"
            "                                     unless --no-ack\n"
            "  verify <chat_id> <from> <to> [--buckets N] [--skip ID] [--max-messages N]\n"
            "                                     compute the range hash of [from, to) from\n"
            "                                     GetHistory locally, ask GetRangeHash, compare;\n"
            "                                     with N buckets (1..256) show which differ.\n"
            "                                     0 and max are the ends of the id space;\n"
            "                                     --skip ID leaves one message out locally, to\n"
            "                                     see a mismatch found\n"
            "\n"
            "Options (before or after the command):\n"
            "  --as <user>          act as <user>: mint a 24 h token with $JWT_SECRET\n"
            "  --token <jwt>        use this bearer token instead\n"
            "  --chats host:port    svc-chats address (default $CHATS_ADDR, else %2$s)\n"
            "  --messaging host:port\n"
            "                       svc-messaging address (default $MESSAGING_ADDR, else %3$s)\n"
            "  --timeout DURATION   deadline of each unary call (default 10s; ms, s, m, h, d)\n"
            "  -v, --verbose        runtime debug logs, pongs and resends\n"
            "  -h, --help           this text\n"
            "Put -- before a text that starts with '-'. --device defaults to \"%4$s\"; devices\n"
            "are 1..64 bytes of [A-Za-z0-9._-].\n"
            "\n"
            "Errors print the gRPC status name and message. Exit status: 0 success, 1 a call\n"
            "failed (or the tail stream ended by itself), 2 usage, 3 verify found a mismatch.\n",
            prog, CTL_DEFAULT_CHATS_ADDR, CTL_DEFAULT_MESSAGING_ADDR, CTL_DEFAULT_DEVICE);
}

static bool is_help(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "help") == 0;
}

int main(int argc, char **argv)
{
    const char *prog = strrchr(argv[0], '/') != NULL ? strrchr(argv[0], '/') + 1 : argv[0];
    /* Output goes to terminals and pipes alike (tail | grep): one line at a time. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    log_init(prog);
    /* The runtime's own logs are for debugging the tool (-v or LOG_LEVEL), not for its users. */
    if (getenv("LOG_LEVEL") == NULL)
        log_set_level(LOG_WARN);

    ctl c;
    ctl_init(&c, prog);
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (is_help(argv[i])) {
            ctl_usage(stdout, prog);
            return CTL_EXIT_OK;
        }
        int r = ctl_parse_common(&c, argc, argv, &i);
        if (r < 0)
            return CTL_EXIT_USAGE;
        if (r == 0) {
            ctl_errorf(&c, "unknown option %s (see %s --help)", argv[i], prog);
            return CTL_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        ctl_usage(stderr, prog);
        return CTL_EXIT_USAGE;
    }
    const char *name = argv[i];
    if (is_help(name)) {
        ctl_usage(stdout, prog);
        return CTL_EXIT_OK;
    }
    for (int k = i + 1; k < argc && strcmp(argv[k], "--") != 0; k++) {
        if (is_help(argv[k]) && strcmp(argv[k], "help") != 0) {
            ctl_usage(stdout, prog);
            return CTL_EXIT_OK;
        }
    }
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        if (strcmp(name, commands[k].name) != 0)
            continue;
        int ret = commands[k].fn(&c, argc - i, argv + i);
        ctl_cleanup(&c);
        return ret;
    }
    ctl_errorf(&c, "unknown command '%s' (see %s --help)", name, prog);
    return CTL_EXIT_USAGE;
}

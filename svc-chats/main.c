/* svc-chats: wiring only. The service's RPCs are registered in setup(). */
#include "service.h"

static int setup(rpc_server *srv, int argc, char **argv, void *user_data)
{
    (void)srv;
    (void)argc;
    (void)argv;
    (void)user_data;
    return 0;
}

int main(int argc, char **argv)
{
    const service_def def = {
        .name = "svc-chats",
        .default_port = 50051,
        .default_metrics_port = 9101,
        .setup = setup,
    };
    return service_main(&def, argc, argv);
}

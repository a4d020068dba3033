/* svc-presence: wiring only. The service's RPCs are registered in setup(). */
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
        .name = "svc-presence",
        .default_port = 50053,
        .default_metrics_port = 9103,
        .setup = setup,
    };
    return service_main(&def, argc, argv);
}

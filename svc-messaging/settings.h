/*
 * settings.h: svc-messaging configuration, from flags or the environment (config.h). Every
 * queue the service keeps has its limit here.
 *
 *   --site S                [SITE]                this site's name, default "a"
 *   --site-id N             [SITE_ID]             3-bit Snowflake site number, default 0
 *   --redis-url URL         [REDIS_URL]           dedupe keys and the Snowflake lease
 *   --kafka-brokers H:P,..  [KAFKA_BROKERS]       the log of record
 *   --chats-addr H:P        [CHATS_ADDR]          svc-chats, for membership cache misses;
 *                                                 unset: membership comes from the log only
 *   --jwt-secret S          [JWT_SECRET]          HS256 secret (>= 32 bytes)
 *   --topic T               [TOPIC]               default chat.events
 *   --queue-size N          [QUEUE_SIZE]          DeliveryFrames held per session (queued or
 *                                                 sent, unacked), default 1024
 *   --ack-timeout-ms N      [ACK_TIMEOUT_MS]      resend after, default 5000
 *   --max-resends N         [MAX_RESENDS]         then RESOURCE_EXHAUSTED, default 3
 *   --ping-interval-ms N    [PING_INTERVAL_MS]    silence limit is 3x, default 25000
 *   --hello-timeout-ms N    [HELLO_TIMEOUT_MS]    default 10000
 *   --max-inflight-sends N  [MAX_INFLIGHT_SENDS]  per session, default 64
 *   --max-pending-sends N   [MAX_PENDING_SENDS]   per worker (Connect + Send), default 10000
 *   --worker-inbox-size N   [WORKER_INBOX_SIZE]   events queued from the consumer to one
 *                                                 worker, default 8192
 *   --delivery-backlog N    [DELIVERY_BACKLOG]    consumed events not yet routed, default 4096
 *   --membership-cache-chats N                    chats kept in the membership cache, 200000
 *   --membership-max-loads N                      GetChat loads in flight per loop, 1024
 *   --send-timeout-ms N     [SEND_TIMEOUT_MS]     Kafka message.timeout.ms, default 10000
 *   --kafka-linger-ms N     [KAFKA_LINGER_MS]     producer linger.ms (0..10000, decimals
 *                                                 allowed: 0.5), default 1: at 2,000
 *                                                 msg/s one produce request per message (0)
 *                                                 cost the broker and this process twice the
 *                                                 CPU and gave a 5x longer p99
 *                                                 (bench/messaging/README.md)
 *   --dedupe-ttl-s N        [DEDUPE_TTL_S]        default 86400
 *   --redis-timeout-ms N    [REDIS_TIMEOUT_MS]    default 5000
 *   --presence-ttl-ms N     [PRESENCE_TTL_MS]     Connect-ed devices are heartbeated with this
 *                                                 TTL every ttl/3 (presence.h), default 30000
 *                                                 (svc-presence's default), 5000..120000
 *   --presence-addr H:P     [PRESENCE_ADDR]       svc-presence, for partner presence over
 *                                                 Connect (with --chats-addr); unset: none
 *   --metrics-host H        [METRICS_HOST]        default 0.0.0.0
 *   --metrics-port N        [METRICS_PORT]        0 = off, default 9102
 */
#ifndef MSG_SETTINGS_H
#define MSG_SETTINGS_H

#include <stdint.h>

#define MSG_MAX_BODY_BYTES 4096
#define MSG_MAX_CMID_BYTES 64
#define MSG_MAX_DEVICE_ID 64

typedef struct settings {
    const char *site;              /* site name, [a-z0-9-]{1,32} */
    unsigned site_id;              /* Snowflake site bits */
    const char *redis_url;         /* Redis */
    const char *kafka_brokers;     /* bootstrap servers */
    const char *chats_addr;        /* svc-chats or NULL */
    const char *jwt_secret;        /* HS256 secret */
    const char *topic;             /* produce topic */
    uint32_t queue_size;           /* per session */
    uint32_t ack_timeout_ms;       /* per frame */
    uint32_t max_resends;          /* per frame */
    uint32_t ping_interval_ms;     /* client ping period */
    uint32_t hello_timeout_ms;     /* first frame deadline */
    uint32_t max_inflight_sends;   /* per session */
    uint32_t max_pending_sends;    /* per worker */
    uint32_t worker_inbox_size;    /* per worker */
    uint32_t delivery_backlog;     /* consumer side */
    uint32_t membership_chats;     /* cache entries */
    uint32_t membership_max_loads; /* per loader */
    uint32_t send_timeout_ms;      /* Kafka message timeout */
    const char *linger_ms;         /* Kafka linger.ms, a decimal (validated) */
    uint32_t dedupe_ttl_s;         /* Redis dedupe TTL */
    uint32_t redis_timeout_ms;     /* Redis command timeout */
    uint32_t presence_ttl_ms;      /* heartbeat TTL of Connect-ed devices */
    const char *presence_addr;     /* svc-presence or NULL */
    const char *metrics_host;      /* metrics listen address */
    uint16_t metrics_port;         /* 0 = off */
    int workers;                   /* as service_main reads it */
} settings;

/* Reads every setting; logs and returns -1 on a missing or bad required one. */
int settings_load(settings *s);

#endif /* MSG_SETTINGS_H */

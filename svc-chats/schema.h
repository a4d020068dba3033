/*
 * schema.h: the PostgreSQL schema of svc-chats, as versioned migrations.
 *
 * The migrations are svc-chats/migrations/NNN_name.sql, compiled into the binary (see
 * CMakeLists.txt). schema_migrate() runs at start-up, before any loop exists: it takes a
 * session advisory lock (so several instances starting at once apply each migration once),
 * creates schema_migrations(version, name, applied_at) if needed, and applies, each in its own
 * transaction together with its schema_migrations row, every migration whose version is not
 * recorded yet, in version order. The SQL itself is idempotent too.
 */
#ifndef CHATS_SCHEMA_H
#define CHATS_SCHEMA_H

#include <stddef.h>

typedef struct schema_migration {
    int version;      /* NNN of the file name */
    const char *name; /* file name without .sql */
    const char *sql;  /* the whole file */
} schema_migration;

extern const schema_migration schema_migrations[];
extern const size_t schema_migrations_n;

/* Connects to |conninfo| (blocking; start-up only), applies what is missing and disconnects.
 * Retries the connection for up to |wait_ms| (the database may still be starting). Returns 0,
 * or -1 after logging why. */
int schema_migrate(const char *conninfo, int wait_ms);

#endif /* CHATS_SCHEMA_H */

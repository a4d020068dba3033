/* schema.c: applies the compiled-in migrations (see schema.h). */
#include "schema.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Arbitrary constant naming the lock (pg_advisory_lock takes a bigint). */
#define SCHEMA_LOCK_KEY "7383920041"

static int exec_ok(PGconn *pg, const char *sql, const char *what)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        log_error("schema: %s: %s", what, PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static int applied(PGconn *pg, int version)
{
    char v[16];
    snprintf(v, sizeof(v), "%d", version);
    const char *params[] = {v};
    PGresult *r = PQexecParams(pg, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL,
                               params, NULL, NULL, 0);
    int rv = PQresultStatus(r) != PGRES_TUPLES_OK ? -1 : PQntuples(r) > 0;
    if (rv < 0)
        log_error("schema: reading schema_migrations: %s", PQerrorMessage(pg));
    PQclear(r);
    return rv;
}

static int apply(PGconn *pg, const schema_migration *m)
{
    if (exec_ok(pg, "BEGIN", "begin") != 0)
        return -1;
    if (exec_ok(pg, m->sql, m->name) != 0) {
        exec_ok(pg, "ROLLBACK", "rollback");
        return -1;
    }
    char v[16];
    snprintf(v, sizeof(v), "%d", m->version);
    const char *params[] = {v, m->name};
    PGresult *r = PQexecParams(pg,
                               "INSERT INTO schema_migrations (version, name, applied_at) "
                               "VALUES ($1, $2, now()) ON CONFLICT (version) DO NOTHING",
                               2, NULL, params, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        log_error("schema: recording %s: %s", m->name, PQerrorMessage(pg));
    PQclear(r);
    if (!ok) {
        exec_ok(pg, "ROLLBACK", "rollback");
        return -1;
    }
    if (exec_ok(pg, "COMMIT", "commit") != 0)
        return -1;
    log_info("schema: applied migration %s", m->name);
    return 0;
}

int schema_migrate(const char *conninfo, int wait_ms)
{
    PGconn *pg = NULL;
    struct timespec pause = {0, 200 * 1000 * 1000};
    for (int waited = 0;; waited += 200) {
        pg = PQconnectdb(conninfo);
        if (PQstatus(pg) == CONNECTION_OK)
            break;
        if (waited >= wait_ms) {
            log_error("schema: cannot connect to PostgreSQL: %s", PQerrorMessage(pg));
            PQfinish(pg);
            return -1;
        }
        PQfinish(pg);
        nanosleep(&pause, NULL);
    }
    int rv = -1;
    PGresult *r = PQexec(pg, "SET client_min_messages = warning");
    PQclear(r);
    if (exec_ok(pg, "SELECT pg_advisory_lock(" SCHEMA_LOCK_KEY ")", "advisory lock") != 0)
        goto out;
    if (exec_ok(pg,
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)",
                "schema_migrations") != 0)
        goto unlock;
    for (size_t i = 0; i < schema_migrations_n; i++) {
        int a = applied(pg, schema_migrations[i].version);
        if (a < 0 || (a == 0 && apply(pg, &schema_migrations[i]) != 0))
            goto unlock;
    }
    rv = 0;
unlock:
    exec_ok(pg, "SELECT pg_advisory_unlock(" SCHEMA_LOCK_KEY ")", "advisory unlock");
out:
    PQfinish(pg);
    return rv;
}

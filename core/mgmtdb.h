/*
 * mgmtdb.h: where the management database is, and making it exist.
 *
 * With DATABASE_URL set, that server is used as it is. Without it, the engine runs its
 * own PostgreSQL 15 cluster (the "embedded" cluster): initialised under data_dir on first
 * use, started on 127.0.0.1 on a free port, its superuser password generated and kept in
 * data_dir/embedded-pg (mode 0600), stopped by `solobase db stop`. When the engine runs as
 * root and the `postgres` user cannot reach data_dir (say it is under /root), the cluster
 * files go to /var/lib/solobase/<hash of data_dir>/ instead and data_dir records where.
 */
#ifndef SB_MGMTDB_H
#define SB_MGMTDB_H

#include <stdbool.h>

#include "db.h"
#include "error.h"
#include "pgcluster.h"

/* The management database's connection string, starting the embedded cluster and
 * creating its database when needed. Caller frees. Holds a password: never log it. */
char *sb_mgmtdb_url(sb_error_t *err);
/* Connects to the management database (see sb_mgmtdb_url). */
sb_db_t *sb_mgmtdb_connect(const char *application_name, sb_error_t *err);
/* Creates the database named in conninfo when it does not exist. *created tells. */
int sb_mgmtdb_create_database(const char *conninfo, bool *created, sb_error_t *err);

/* The embedded cluster, without starting it; NULL with err when DATABASE_URL is set or
 * the cluster was never initialised (then *missing is set). */
sb_pgcluster_t *sb_embedded_open(bool *missing, sb_error_t *err);
int sb_embedded_stop(sb_error_t *err);
/* Directory under which the engine keeps PostgreSQL clusters (embedded and local fleet):
 * data_dir/clusters, or the /var/lib/solobase fallback above. Caller frees. */
char *sb_cluster_base_dir(sb_error_t *err);

#endif

'use strict';
/*
 * http-server.js: the Node.js baseline of the HTTP API benchmark
 * (tests/bench/run-events-bench, docs/benchmarks.md).
 *
 * `GET /v1/instances/:id` as docs/http-api.md describes it, the way a competent Node
 * developer would serve it with fastify and a pg Pool:
 *   - the bearer token's SHA-256 (hex) is looked up in api_tokens (not revoked, not
 *     expired); valid tokens are cached in memory for TOKEN_CACHE_MS (5 s), as an
 *     engine's token cache would, so most requests cost one query;
 *   - the instance is selected by id (and by the token's user for customer tokens), its
 *     JSON built by PostgreSQL (json_build_object, returned as text so neither pg nor
 *     fastify parses or re-serialises it) and wrapped as {"instance": ...};
 *   - errors as docs/http-api.md: 401 unauthorized, 404 not_found.
 *
 * One process: the engine is one process too, and on a 2-core machine the second core
 * is busy with PostgreSQL. Environment: DATABASE_URL, PORT (default 8091), HOST
 * (default 127.0.0.1), POOL_SIZE (default 10).
 */
const crypto = require('crypto');
const fastify = require('fastify');
const { Pool } = require('pg');

const TOKEN_CACHE_MS = 5000;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const TOKEN_SQL = `
SELECT t.user_id::text AS user_id, t.scope
  FROM api_tokens t
 WHERE t.token_sha256 = $1
   AND t.revoked_at IS NULL
   AND (t.expires_at IS NULL OR t.expires_at > now())`;

const UTC = (col) => `to_char(i.${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
const INSTANCE_JSON = `
json_build_object(
  'id', i.id, 'user_id', i.user_id, 'name', i.name, 'subdomain', i.subdomain,
  'status', i.status, 'status_reason', i.status_reason, 'plan', p.code,
  'database_tier', i.database_tier, 'compute_tier', i.compute_tier, 'region', i.region,
  'shared_rds_id', i.shared_rds_id, 'database_name', i.database_name,
  'database_host', i.database_host, 'database_port', i.database_port,
  'storage_used_bytes', i.storage_used_bytes, 'storage_quota_gb', i.storage_quota_gb,
  'api_requests_today', i.api_requests_today,
  'api_requests_quota_daily', i.api_requests_quota_daily, 'quota_status', i.quota_status,
  'created_at', ${UTC('created_at')}, 'updated_at', ${UTC('updated_at')},
  'provisioned_at', ${UTC('provisioned_at')}, 'suspended_at', ${UTC('suspended_at')},
  'deleted_at', ${UTC('deleted_at')}
)::text AS instance`;
const INSTANCE_SQL = `SELECT ${INSTANCE_JSON} FROM instances i LEFT JOIN plans p ON p.id = i.plan_id WHERE i.id = $1`;
const INSTANCE_OF_USER_SQL = `${INSTANCE_SQL} AND i.user_id = $2`;

function error(reply, status, code, message) {
  return reply.code(status).type('application/json').send(JSON.stringify({ error: { code, message } }));
}

async function main() {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set');
  const port = Number(process.env.PORT || 8091);
  const host = process.env.HOST || '127.0.0.1';
  const pool = new Pool({
    connectionString: url,
    max: Number(process.env.POOL_SIZE || 10),
    application_name: 'http-baseline',
  });

  const tokens = new Map(); // token -> {user_id, scope, until}

  async function authenticate(header) {
    if (!header || !header.startsWith('Bearer ')) return null;
    const token = header.slice(7);
    const now = Date.now();
    const hit = tokens.get(token);
    if (hit && hit.until > now) return hit;
    const digest = crypto.createHash('sha256').update(token).digest('hex');
    const res = await pool.query({ name: 'token', text: TOKEN_SQL, values: [digest] });
    if (res.rows.length === 0) {
      tokens.delete(token);
      return null;
    }
    const entry = { user_id: res.rows[0].user_id, scope: res.rows[0].scope, until: now + TOKEN_CACHE_MS };
    tokens.set(token, entry);
    return entry;
  }

  const app = fastify({ logger: false });

  app.get('/v1/instances/:id', async (request, reply) => {
    const who = await authenticate(request.headers.authorization);
    if (!who) return error(reply, 401, 'unauthorized', 'a valid API token is required');
    const id = request.params.id;
    if (!UUID_RE.test(id)) return error(reply, 404, 'not_found', `no instance ${id}`);
    const res = who.scope === 'operator'
      ? await pool.query({ name: 'instance', text: INSTANCE_SQL, values: [id] })
      : await pool.query({ name: 'instance_of_user', text: INSTANCE_OF_USER_SQL, values: [id, who.user_id] });
    if (res.rows.length === 0) return error(reply, 404, 'not_found', `no instance ${id}`);
    return reply.type('application/json').send(`{"instance":${res.rows[0].instance}}`);
  });

  await app.listen({ port, host });
  console.log(`http-server: http://${host}:${port}/ (one process, fastify ${require('fastify/package.json').version}, ` +
              `pg ${require('pg/package.json').version} pool ${pool.options.max}, node ${process.version})`);

  const stop = () => {
    app.close().then(() => pool.end()).finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error('http-server:', e.message);
  process.exit(1);
});

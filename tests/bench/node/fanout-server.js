'use strict';
/*
 * fanout-server.js: the Node.js baseline of the event stream benchmark
 * (tests/bench/events_bench.c, docs/benchmarks.md).
 *
 * What a competent Node developer would write for "push every event to every
 * websocket client": one pg connection LISTENs on sb_events (the NOTIFY the schema's
 * trigger sends at commit with the event's seq), another fetches the events after the
 * last one sent, in order, with the event JSON of docs/events.md built by PostgreSQL
 * (json_build_object, as the engine does), and each event is broadcast to every
 * connected `ws` client as one message. The serialized event is encoded once and the
 * same Buffer is sent to every client. Notifications that arrive during a fetch are
 * coalesced into one more fetch. No authentication, no filters, no backlog limit: the
 * baseline is the plain broadcast, nothing of the protocol.
 *
 * One process (the engine is one process too). Environment: DATABASE_URL, PORT
 * (default 8090), HOST (default 127.0.0.1).
 */
const http = require('http');
const { Client } = require('pg');
const { WebSocketServer, WebSocket } = require('ws');

const EVENTS_AFTER = `
SELECT seq,
       json_build_object(
         'id', seq,
         'event_id', id,
         'type', event_type,
         'instance_id', instance_id,
         'user_id', user_id,
         'shared_rds_id', shared_rds_id,
         'description', description,
         'payload', payload,
         'actor', actor,
         'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
       )::text AS event
  FROM instance_events
 WHERE seq > $1
 ORDER BY seq
 LIMIT 10000`;

async function main() {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set');
  const port = Number(process.env.PORT || 8090);
  const host = process.env.HOST || '127.0.0.1';

  const listener = new Client({ connectionString: url, application_name: 'fanout-listen' });
  const reader = new Client({ connectionString: url, application_name: 'fanout-read' });
  await listener.connect();
  await reader.connect();

  const start = await reader.query('SELECT coalesce(max(seq), 0)::text AS seq FROM instance_events');
  let lastSeq = start.rows[0].seq; // text: bigint stays exact
  let fetching = false;
  let again = false;
  let sent = 0;

  const server = http.createServer((req, res) => {
    res.writeHead(404);
    res.end();
  });
  const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: true });
  wss.on('connection', (ws) => {
    ws.on('error', () => {});
  });

  function broadcast(buf) {
    for (const ws of wss.clients) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(buf, { binary: false });
        sent++;
      }
    }
  }

  async function fetchNew() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      do {
        again = false;
        const res = await reader.query({ name: 'events_after', text: EVENTS_AFTER, values: [lastSeq] });
        for (const row of res.rows) {
          broadcast(Buffer.from(row.event));
          lastSeq = row.seq;
        }
        if (res.rows.length === 10000) again = true;
      } while (again);
    } catch (e) {
      console.error('fetch failed:', e.message);
    } finally {
      fetching = false;
    }
  }

  listener.on('notification', (msg) => {
    if (msg.channel === 'sb_events') fetchNew();
  });
  await listener.query('LISTEN sb_events');

  server.listen(port, host, () => {
    console.log(`fanout-server: ws://${host}:${port}/ (one process, ws ${require('ws/package.json').version}, ` +
                `pg ${require('pg/package.json').version}, node ${process.version}), from seq ${lastSeq}`);
  });

  const stop = () => {
    console.log(`fanout-server: ${sent} messages sent`);
    for (const ws of wss.clients) ws.terminate();
    server.close();
    Promise.allSettled([listener.end(), reader.end()]).then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e) => {
  console.error('fanout-server:', e.message);
  process.exit(1);
});

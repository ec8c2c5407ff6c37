#!/usr/bin/env node
/*
 * dashboard.test.js: the dashboard (examples/dashboard) end to end in headless Chromium.
 *
 *   node dashboard.test.js --url http://127.0.0.1:PORT/ --token sbt_... --screenshot FILE
 *
 * Signs in with an operator token; creates an instance through the HTTP API and waits
 * for its `created` and `active` events on the page, the instance listed as active and
 * the fleet's capacity bars matching GET /v1/servers; then cuts the page's websocket,
 * creates a second instance while it is down, and checks that the page resumed from the
 * last event it had (`subscribe` with `last_id`, then `replayed`) and shows every event
 * of both instances exactly once; creates one with the page's form and sees a refusal
 * (the plan's limit) explained. Saves a screenshot (also when a check fails) and exits
 * non-zero with the reason on failure. Run by tests/integration/browser.sh.
 */
'use strict';

const { chromium } = require('playwright-core');

const DEADLINE_MS = 90000;   // the whole run
const PROVISION_MS = 45000;  // one instance to active (the first may wait for a server)
const STEP_MS = 10000;       // anything else the page should show
const DROP_MS = 3000;        // how long the page's websocket stays down

function parseArgs(argv) {
  const args = { chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!['url', 'token', 'screenshot', 'chromium'].includes(key) || argv[i + 1] === undefined) {
      throw new Error(`usage: dashboard.test.js --url URL --token TOKEN --screenshot FILE [--chromium PATH] (bad argument ${argv[i]})`);
    }
    args[key] = argv[i + 1];
  }
  for (const k of ['url', 'token', 'screenshot']) if (!args[k]) throw new Error(`--${k} is required`);
  return args;
}

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}

// step(name, fn): runs fn, logging the step and its time; failures name the step.
async function step(name, fn) {
  const t0 = Date.now();
  try {
    const r = await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    return r;
  } catch (err) {
    err.message = `${name}: ${err.message}`;
    throw err;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const base = new URL(args.url);
  const suffix = `${Date.now().toString(36)}${process.pid}`;

  async function api(method, path, body) {
    const res = await fetch(new URL(path, base), {
      method,
      headers: { Authorization: `Bearer ${args.token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new Failure(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(data)}`);
    return data;
  }

  const browser = await chromium.launch({
    executablePath: args.chromium, headless: true, args: ['--no-sandbox'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  // Script errors and missing page files fail the test; API answers are the page's to
  // handle (the test provokes a refusal), so Chromium's console notes of them are not.
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) pageErrors.push(m.text());
  });
  page.on('response', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.status() >= 400 && !path.startsWith('/v1/')) pageErrors.push(`HTTP ${r.status()} for ${path}`);
  });

  const feedItem = (id, type) => `#feed li[data-instance-id="${id}"][data-type="${type}"]`;
  const connState = () => page.getAttribute('#conn', 'data-state');

  // Waits for an instance's `active` event on the page; fails at once on `failed`.
  async function waitActive(id) {
    const el = await page.waitForSelector(`${feedItem(id, 'active')}, ${feedItem(id, 'failed')}`,
      { state: 'attached', timeout: PROVISION_MS });
    const type = await el.getAttribute('data-type');
    if (type === 'failed') {
      const inst = await api('GET', `/v1/instances/${id}`);
      throw new Failure(`instance ${id} failed: ${inst.instance.status_reason}`);
    }
  }

  // Every event of the instance (by the API) is on the page exactly once, and nothing else
  // of it is; polls a moment, since the page may still be receiving.
  async function checkExactlyOnce(id) {
    let want, got;
    for (const until = Date.now() + STEP_MS; Date.now() < until;) {
      want = (await api('GET', `/v1/instances/${id}/events?limit=500`)).events.map((e) => e.id);
      got = await page.$$eval(`#feed li[data-instance-id="${id}"]`,
        (els) => els.map((e) => Number(e.dataset.eventId)).sort((a, b) => a - b));
      if (JSON.stringify(want) === JSON.stringify(got)) return want;
      await page.waitForTimeout(200);
    }
    throw new Failure(`events of ${id}: the API has [${want}], the page shows [${got}]`);
  }

  async function run() {
    await step('open the page and sign in', async () => {
      const res = await page.goto(args.url);
      check(res && res.ok(), `GET ${args.url}: HTTP ${res && res.status()}`);
      check(await page.isVisible('#sign-in-form'), 'no sign-in form');
      check(!(await page.isVisible('#app')), 'the dashboard shows before signing in');
      await page.fill('#token', args.token);
      await page.click('#sign-in-form button[type=submit]');
      await page.waitForSelector('#app', { state: 'visible', timeout: STEP_MS });
      await page.waitForSelector('#conn[data-state="live"]', { timeout: STEP_MS });
      await page.waitForSelector('#plan option[value="starter"]', { state: 'attached', timeout: STEP_MS });
      const stored = await page.evaluate(() => sessionStorage.getItem('solobase.token'));
      check(stored === args.token, 'the token is not kept in sessionStorage');
    });

    const first = await step('create an instance through the API; its events appear', async () => {
      const { instance } = await api('POST', '/v1/instances',
        { plan: 'starter', name: `Browser test ${suffix} a`, subdomain: `bt-${suffix}-a` });
      await page.waitForSelector(feedItem(instance.id, 'created'), { state: 'attached', timeout: STEP_MS });
      await waitActive(instance.id);
      return instance.id;
    });

    await step('the instances panel lists it as active', async () => {
      await page.waitForSelector(`#instance-rows tr[data-instance-id="${first}"][data-status="active"]`,
        { state: 'attached', timeout: STEP_MS });
      const active = (await api('GET', '/v1/instances?status=active&limit=200')).instances.length;
      await page.waitForSelector(`#status-counts li[data-status="active"][data-count="${active}"]`,
        { state: 'attached', timeout: STEP_MS });
    });

    await step('the fleet panel shows every server with its capacity', async () => {
      const inst = (await api('GET', `/v1/instances/${first}`)).instance;
      const { servers } = await api('GET', '/v1/servers');
      check(servers.some((s) => s.id === inst.shared_rds_id), `no server ${inst.shared_rds_id} in /v1/servers`);
      for (const s of servers) {
        const li = `#servers li[data-server-id="${s.id}"]`;
        await page.waitForFunction(([sel, text]) => {
          const e = document.querySelector(sel);
          return e && e.querySelector('.capacity').textContent === text;
        }, [li, `${s.current_databases} / ${s.max_databases} databases`], { timeout: STEP_MS });
        if (s.id === inst.shared_rds_id) {
          const width = await page.$eval(`${li} .bar .fill`, (e) => parseFloat(e.style.width));
          check(width > 0, `server ${s.rds_instance_id}: empty bar with ${s.current_databases} databases`);
        }
      }
    });

    const second = await step('cut the websocket, create an instance meanwhile; the page resumes', async () => {
      // The last id seen and the cut in one go: no event can slip in between.
      const before = await page.evaluate((ms) => {
        const last = window.sbDashboard.lastId;
        window.sbDashboard.dropConnection(ms);
        return last;
      }, DROP_MS);
      check(Number.isInteger(before), `no last event id on the page: ${before}`);
      await page.waitForSelector('#conn[data-state="reconnecting"]', { state: 'attached', timeout: STEP_MS });
      const { instance } = await api('POST', '/v1/instances',
        { plan: 'starter', name: `Browser test ${suffix} b`, subdomain: `bt-${suffix}-b` });
      check(await connState() === 'reconnecting',
        `the page reconnected before the instance was created (${await connState()}): nothing to resume`);
      await page.waitForSelector(feedItem(instance.id, 'created'), { state: 'attached', timeout: STEP_MS + DROP_MS });
      await waitActive(instance.id);
      await page.waitForSelector('#conn[data-state="live"]', { state: 'attached', timeout: STEP_MS });
      const stats = await page.evaluate(() => window.sbDashboard.stats);
      check(stats.connects >= 2, `the page did not reconnect: ${JSON.stringify(stats)}`);
      check(stats.resumes[stats.resumes.length - 1] === before,
        `the page resumed from ${JSON.stringify(stats.resumes)}, not from its last event ${before}`);
      check(stats.replayed >= 1, 'no `replayed` after resuming');
      check(await page.isVisible('#feed li.marker'), 'no reconnection note in the feed');
      return instance.id;
    });

    await step('every event shown exactly once', async () => {
      await checkExactlyOnce(first);
      await checkExactlyOnce(second);
      const ids = await page.$$eval('#feed li[data-event-id]', (els) => els.map((e) => e.dataset.eventId));
      check(new Set(ids).size === ids.length, `an event shown twice: ${ids}`);
      const stats = await page.evaluate(() => window.sbDashboard.stats);
      check(stats.duplicates === 0, `the server sent ${stats.duplicates} event(s) the page already had`);
      await page.waitForSelector(`#instance-rows tr[data-instance-id="${second}"][data-status="active"]`,
        { state: 'attached', timeout: STEP_MS });
    });
    await step('create an instance with the form; a refusal is shown', async () => {
      const name = `Form ${suffix}`;
      await page.selectOption('#plan', 'hobby');
      await page.fill('#name', name);
      const subdomain = await page.inputValue('#subdomain');
      check(subdomain === `form-${suffix}`, `the subdomain was not derived from the name: '${subdomain}'`);
      await page.click('#create-form button[type=submit]');
      await page.waitForFunction((n) => document.querySelector('#create-result').textContent.startsWith(n),
        name, { timeout: STEP_MS });
      const id = await page.$eval('#instance-rows tr[data-instance-id]',
        (tr) => tr.dataset.instanceId);
      const { instance } = await api('GET', `/v1/instances/${id}`);
      check(instance.name === name && instance.plan === 'hobby', `the newest instance is ${JSON.stringify(instance)}`);
      await waitActive(id);
      // Hobby allows one instance: the second is refused, and the page says why.
      await page.fill('#name', `${name} again`);
      await page.click('#create-form button[type=submit]');
      await page.waitForSelector('#create-result.error', { timeout: STEP_MS });
      const text = await page.textContent('#create-result');
      check(text.includes('(refused)'), `unexpected answer to a refused request: ${text}`);
    });
    check(pageErrors.length === 0, `errors in the page: ${pageErrors.join('; ')}`);
  }

  try {
    await run();
  } finally {
    await page.screenshot({ path: args.screenshot, fullPage: true })
      .then(() => console.log(`screenshot: ${args.screenshot}`))
      .catch((err) => console.error(`no screenshot: ${err.message}`));
    await browser.close();
  }
}

const timer = setTimeout(() => {
  console.error(`FAIL: the test did not finish within ${DEADLINE_MS / 1000} s`);
  process.exit(1);
}, DEADLINE_MS);
timer.unref();

main().then(() => {
  console.log('PASS: dashboard');
}, (err) => {
  console.error(`FAIL: ${err instanceof Failure ? err.message : err.stack || err}`);
  process.exitCode = 1;
});

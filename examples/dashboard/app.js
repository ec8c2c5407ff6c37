/*
 * app.js: the Solobase Cloud dashboard (docs/dashboard.md). Signs in with an API token,
 * shows the fleet (GET /v1/servers), instances counted by status (GET /v1/instances, every
 * page), a form to create one (POST /v1/instances), and the live event feed from the
 * /v1/events websocket (docs/events.md). After a reconnect the feed resumes from the id
 * of the last event it processed, so no event is missed or shown twice.
 *
 * Plain browser JavaScript, no framework, no build step. Every text that reaches the page
 * goes through textContent: names, descriptions and errors come from users and servers.
 * window.sbDashboard exposes the connection to tests (tests/browser/dashboard.test.js).
 */
'use strict';

(() => {
  const TOKEN_KEY = 'solobase.token';
  const FEED_MAX = 200;        // events kept on the page, newest first
  const ROWS_MAX = 100;        // instances listed; the counts cover every page
  const PAGE_LIMIT = 200;      // the API's largest page
  const MAX_PAGES = 50;        // counts over at most 10,000 instances
  const BACKOFF_MIN_MS = 500;  // first reconnect delay, doubled per failed attempt...
  const BACKOFF_MAX_MS = 30000; // ...up to this
  const REFRESH_DELAY_MS = 250; // a burst of events causes one refresh

  // The instance status an event announces; the refresh that follows has the last word.
  const STATUS_OF = {
    placed: 'provisioning', active: 'active', failed: 'failed', suspended: 'suspended',
    resumed: 'active', deleting: 'deleting', deleted: 'deleted',
  };

  const state = {
    token: null,
    ws: null,
    lastId: null,         // id of the last event processed; null until the first subscribe
    resuming: null,       // {from, count} between a resuming subscribe and `replayed`
    gapNote: '',          // said once events were lost (resume_too_old); stays on the page
    attempts: 0,          // reconnects since the stream was last live
    retryTimer: 0,
    holdUntil: 0,         // no reconnect before this time (sbDashboard.dropConnection)
    instances: new Map(), // id -> instance, newest first
    servers: new Map(),   // id -> server
    refreshTimer: 0,
    refreshing: null,     // the refresh in flight
    refreshAgain: false,
    stats: { connects: 0, resumes: [], replayed: 0, events: 0, duplicates: 0 },
  };

  const $ = (id) => document.getElementById(id);

  // el('li', {class: 'x', 'data-id': 1}, 'text', child...): an element; strings become
  // text nodes, never markup.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const shortId = (id) => (id ? String(id).slice(0, 8) : '');
  const timeOf = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour12: false }) : '');

  /* ---- HTTP API ------------------------------------------------------------------ */

  class ApiError extends Error {
    constructor(status, body) {
      const e = body && body.error;
      super(e ? `${e.message} (${e.code})` : `HTTP ${status}`);
      this.status = status;
      this.code = e ? e.code : null;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: `Bearer ${state.token}` } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      const err = new ApiError(res.status, data);
      if (res.status === 401 && state.token) signOut(`Signed out: ${err.message}`);
      throw err;
    }
    return data;
  }

  async function loadInstances() {
    const all = [];
    let cursor = null;
    let pages = 0;
    do {
      const q = new URLSearchParams({ limit: String(PAGE_LIMIT) });
      if (cursor) q.set('cursor', cursor);
      const page = await api('GET', `/v1/instances?${q}`);
      all.push(...page.instances);
      cursor = page.next_cursor;
    } while (cursor && ++pages < MAX_PAGES);
    state.instances = new Map(all.map((i) => [i.id, i]));
    $('instances-more').textContent = cursor ? `Counting the newest ${all.length} instances only.` : '';
    renderInstances();
  }

  async function loadServers() {
    try {
      const data = await api('GET', '/v1/servers');
      state.servers = new Map(data.servers.map((s) => [s.id, s]));
      $('fleet-note').textContent = state.servers.size ? '' : 'No servers yet.';
    } catch (err) {
      state.servers = new Map();
      $('fleet-note').textContent = err.status === 403 ? 'The fleet is shown to operator tokens only.'
        : `Cannot load the fleet: ${err.message}`;
    }
    renderServers();
  }

  async function loadPlans() {
    const { plans } = await api('GET', '/v1/plans');
    const select = $('plan');
    select.replaceChildren(...plans.map((p) => el('option', { value: p.code }, `${p.name} (${p.code})`)));
  }

  // Reloads servers and instances; calls during a refresh cause one more afterwards.
  function refresh() {
    if (state.refreshing) {
      state.refreshAgain = true;
      return state.refreshing;
    }
    state.refreshing = Promise.all([loadServers(), loadInstances()])
      .then(nameFeed)
      .catch((err) => { $('instances-more').textContent = `Cannot load instances: ${err.message}`; })
      .finally(() => {
        state.refreshing = null;
        if (state.refreshAgain && state.token) {
          state.refreshAgain = false;
          refresh();
        }
      });
    return state.refreshing;
  }

  function refreshSoon() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  /* ---- rendering ------------------------------------------------------------------- */

  function renderServers() {
    const items = [...state.servers.values()].map((s) => {
      const shared = s.max_databases !== null && s.max_databases !== undefined;
      const pct = shared ? Math.min(100, (100 * s.current_databases) / s.max_databases) : 0;
      const level = pct >= 100 ? 'full' : pct >= 80 ? 'high' : 'ok';
      return el('li', { 'data-server-id': s.id, 'data-status': s.status },
        el('div', { class: 'server-head' },
          el('strong', null, s.rds_instance_id),
          el('span', { class: `status s-${s.status}` }, s.status),
          el('span', { class: 'muted' }, `${s.tier} · ${s.host || '?'}:${s.port || '?'}`)),
        shared
          ? el('div', { class: `bar ${level}`, role: 'meter', 'aria-valuemin': 0,
            'aria-valuemax': s.max_databases, 'aria-valuenow': s.current_databases },
          el('div', { class: 'fill', style: `width: ${pct.toFixed(1)}%` }))
          : null,
        el('div', { class: 'muted capacity' },
          shared ? `${s.current_databases} / ${s.max_databases} databases` : 'dedicated'));
    });
    $('servers').replaceChildren(...items);
  }

  function renderInstances() {
    const counts = new Map();
    for (const i of state.instances.values()) counts.set(i.status, (counts.get(i.status) || 0) + 1);
    $('instance-total').textContent = String(state.instances.size);
    $('status-counts').replaceChildren(...[...counts.entries()].sort().map(([status, n]) =>
      el('li', { class: `status s-${status}`, 'data-status': status, 'data-count': n }, `${status} ${n}`)));
    const rows = [...state.instances.values()].slice(0, ROWS_MAX).map((i) =>
      el('tr', { 'data-instance-id': i.id, 'data-status': i.status },
        el('td', null, i.name),
        el('td', null, i.subdomain),
        el('td', null, i.plan),
        el('td', null, el('span', { class: `status s-${i.status}` }, i.status),
          i.status_reason ? el('span', { class: 'muted' }, ` ${i.status_reason}`) : null),
        el('td', { class: 'muted' }, timeOf(i.created_at))));
    $('instance-rows').replaceChildren(...rows);
  }

  function subjectOf(ev) {
    if (ev.instance_id) {
      const inst = state.instances.get(ev.instance_id);
      return inst ? inst.name : `instance ${shortId(ev.instance_id)}`;
    }
    if (ev.shared_rds_id) {
      const server = state.servers.get(ev.shared_rds_id);
      return server ? server.rds_instance_id : `server ${shortId(ev.shared_rds_id)}`;
    }
    return ev.actor || '';
  }

  function feedAppend(item) {
    const feed = $('feed');
    feed.prepend(item);
    while (feed.childElementCount > FEED_MAX) feed.lastElementChild.remove();
  }

  function showEvent(ev) {
    const kind = ev.type.split('.')[0];
    feedAppend(el('li', { 'data-event-id': ev.id, 'data-type': ev.type, 'data-instance-id': ev.instance_id,
      'data-server-id': ev.shared_rds_id },
    el('span', { class: 'muted id' }, `#${ev.id}`),
    el('time', { datetime: ev.created_at }, timeOf(ev.created_at)),
    el('span', { class: `type t-${kind}` }, ev.type),
    el('span', { class: 'subject' }, subjectOf(ev)),
    el('span', { class: 'muted desc', title: ev.description || '' }, ev.description || '')));
  }

  // Events often arrive before the lists know their instance or server: name them once
  // the lists are read.
  function nameFeed() {
    for (const item of $('feed').querySelectorAll('li[data-event-id]')) {
      const ev = { instance_id: item.dataset.instanceId, shared_rds_id: item.dataset.serverId };
      if (ev.instance_id || ev.shared_rds_id) item.querySelector('.subject').textContent = subjectOf(ev);
    }
  }

  function feedMarker(text) {
    feedAppend(el('li', { class: 'marker' }, text));
  }

  /* ---- the event stream ------------------------------------------------------------------ */

  function setConn(name, text) {
    const pill = $('conn');
    pill.dataset.state = name;
    pill.textContent = text || name;
  }

  function send(msg) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
  }

  function subscribe() {
    const msg = { type: 'subscribe', id: 'feed' };
    if (state.lastId !== null) {
      msg.last_id = state.lastId;
      state.resuming = { from: state.lastId, count: 0 };
      state.stats.resumes.push(state.lastId);
      setConn('resuming', `resuming after #${state.lastId}`);
    }
    send(msg);
  }

  function handleEvents(events) {
    let touched = false;
    for (const ev of events) {
      // The server promises no duplicates; this guard keeps the page right and counts
      // any breach of that promise for the tests.
      if (state.lastId !== null && ev.id <= state.lastId) {
        state.stats.duplicates++;
        continue;
      }
      state.lastId = ev.id;
      state.stats.events++;
      if (state.resuming) state.resuming.count++;
      const inst = ev.instance_id && state.instances.get(ev.instance_id);
      const status = ev.type === 'created' ? (ev.payload && ev.payload.status) : STATUS_OF[ev.type];
      if (inst && status) inst.status = status;
      showEvent(ev);
      touched = true;
    }
    if (touched) {
      renderInstances();
      refreshSoon(); // new instances, server counters, statuses the events do not carry
    }
  }

  function onMessage(msg) {
    switch (msg.type) {
      case 'authenticated':
        subscribe();
        break;
      case 'subscribed':
        if (state.lastId === null) state.lastId = msg.from; // the stream continues after it
        if (!state.resuming) live();
        break;
      case 'events':
        handleEvents(msg.events);
        break;
      case 'replayed':
        state.stats.replayed++;
        feedMarker(`Reconnected: resumed after #${state.resuming ? state.resuming.from : msg.last_id}, `
          + `${state.resuming ? state.resuming.count : 0} missed event(s) replayed`);
        state.resuming = null;
        live();
        refresh();
        break;
      case 'resume_too_old':
        // What happened before oldest_id is gone: say so, take what is kept, and let the
        // lists (read afresh) show the current state.
        state.gapNote = `Events #${msg.last_id + 1} to #${msg.oldest_id - 1} were no longer kept `
          + 'when the feed resumed: some are missing here (the lists are current).';
        feedMarker(state.gapNote);
        $('feed-note').textContent = state.gapNote;
        state.lastId = msg.oldest_id - 1;
        subscribe();
        refresh();
        break;
      case 'overflow':
        // The server closes the connection (4008); onclose resumes from our last id.
        feedMarker(`Fell behind the stream after #${msg.last_id}; reconnecting`);
        break;
      case 'error':
        onStreamError(msg);
        break;
      default:
        break; // pong, unsubscribed
    }
  }

  function onStreamError(msg) {
    if (msg.code === 'unauthorized') {
      signOut(`The event stream refused the token: ${msg.message}`);
    } else if (msg.code === 'unavailable') {
      $('feed-note').textContent = msg.message;
      if (state.ws) state.ws.close(); // try again later, with backoff
    } else {
      $('feed-note').textContent = `${msg.code}: ${msg.message}`;
    }
  }

  function live() {
    state.attempts = 0;
    $('feed-note').textContent = state.gapNote;
    setConn('live');
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (!state.token) return;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/v1/events`);
    state.ws = ws;
    state.resuming = null;
    state.stats.connects++;
    setConn('connecting');
    ws.onopen = () => {
      if (ws !== state.ws) return;
      setConn('authenticating');
      send({ type: 'auth', token: state.token }); // browsers cannot set headers here
    };
    ws.onmessage = (e) => {
      if (ws !== state.ws) return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      onMessage(msg);
    };
    ws.onclose = (e) => {
      if (ws !== state.ws) return;
      state.ws = null;
      // 4001: the token was revoked or expired (docs/events.md); retrying cannot help.
      if (e.code === 4001 && state.token) signOut(`Signed out: ${e.reason || 'token revoked'}`);
      else if (state.token) reconnectLater(e.code);
    };
  }

  function reconnectLater(code) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempts);
    const delay = Math.max(base / 2 + Math.random() * base / 2, state.holdUntil - Date.now());
    state.attempts++;
    setConn('reconnecting', `reconnecting in ${Math.ceil(delay / 1000)} s`);
    if (code === 4008) $('feed-note').textContent = 'The connection fell behind; resuming.';
    state.retryTimer = setTimeout(connect, delay);
  }

  /* ---- signing in and out ------------------------------------------------------------------ */

  async function signIn(token) {
    state.token = token;
    try {
      await loadPlans(); // checks the token
    } catch (err) {
      state.token = null;
      $('sign-in-error').textContent = err.status === 401 ? 'That token was refused.' : err.message;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $('sign-in-error').textContent = '';
    $('sign-in').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    connect();
    await refresh();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    clearTimeout(state.retryTimer);
    clearTimeout(state.refreshTimer);
    const ws = state.ws;
    state.ws = null;
    if (ws) ws.close();
    state.lastId = null;
    state.gapNote = '';
    state.instances = new Map();
    state.servers = new Map();
    $('feed').replaceChildren();
    $('app').hidden = true;
    $('sign-out').hidden = true;
    $('sign-in').hidden = false;
    $('sign-in-error').textContent = message || '';
    setConn('offline');
  }

  /* ---- the create form ------------------------------------------------------------------ */

  let subdomainEdited = false;

  $('name').addEventListener('input', () => {
    if (subdomainEdited) return;
    $('subdomain').value = $('name').value.toLowerCase().replace(/[^a-z0-9]+/g, '-')
      .replace(/^-+|-+$/g, '').slice(0, 63);
  });
  $('subdomain').addEventListener('input', () => { subdomainEdited = true; });

  $('create-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const out = $('create-result');
    out.className = '';
    out.textContent = 'Creating…';
    try {
      const { instance } = await api('POST', '/v1/instances', {
        plan: $('plan').value, name: $('name').value, subdomain: $('subdomain').value,
      });
      state.instances = new Map([[instance.id, instance], ...state.instances]);
      renderInstances();
      out.textContent = `${instance.name} is ${instance.status}; follow it in the live events.`;
      e.target.reset();
      subdomainEdited = false;
    } catch (err) {
      out.className = 'error';
      out.textContent = err.message;
    }
  });

  $('sign-in-form').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value.trim());
    $('token').value = '';
  });
  $('sign-out').addEventListener('click', () => signOut());

  // Tests and the curious: the stream's state, and a way to cut the connection as a
  // network would (the page reconnects no sooner than holdMs later, and resumes).
  window.sbDashboard = {
    get lastId() { return state.lastId; },
    get stats() { return state.stats; },
    dropConnection(holdMs = 0) {
      state.holdUntil = Date.now() + holdMs;
      if (state.ws) state.ws.close();
    },
  };

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
})();

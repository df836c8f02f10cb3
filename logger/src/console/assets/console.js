// The Herald console. Every value from the server is put into the page as
// text (textContent), never as HTML. The API key lives in sessionStorage
// only and travels in the authorization header, never in a URL.

const MAX_ROWS = 500;
const KEY = 'herald.key';
const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  cursor: '',
  paused: false,
  feed: null, // the AbortController of the open feed
  incoming: [], // rows waiting for the next frame
  frame: 0,
  statsTimer: 0,
  nextPage: null,
  recipient: null, // the user whose record is open
  optOuts: [], // its opt-outs as edited
  eraseTimer: 0,
};

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.code = body.code;
    this.field = body.field;
  }
}

function headers() {
  const key = sessionStorage.getItem(KEY);
  return key ? { authorization: `Bearer ${key}` } : {};
}

// GET `path`, or send `body` as JSON with `method`.
async function api(path, body, method = 'POST') {
  const init = { headers: headers() };
  if (body !== undefined) {
    init.method = method;
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

// An element with text children only: strings become text nodes.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === 'class') node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? '')));
  }
  return node;
}

function time(text) {
  if (!text) return '';
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : date.toLocaleTimeString([], { hour12: false }) + '.' + String(date.getMilliseconds()).padStart(3, '0');
}

function eventLink(id) {
  const link = el('a', { href: `#/event/${encodeURIComponent(id)}` }, `…${id.slice(-12)}`);
  link.title = id;
  return link;
}

function eventRow(event, when) {
  const row = el('tr', { 'data-event-id': event.event_id, 'data-status': event.status },
    el('td', {}, time(when)),
    el('td', { class: `status status-${event.status}` }, event.status),
    el('td', { class: 'user' }, event.user_id),
    el('td', {}, event.category),
    el('td', {}, event.type),
    el('td', { class: 'desc' }, event.description),
    el('td', { class: 'id' }, eventLink(event.event_id)));
  return row;
}

function notice(text) {
  $('notice').textContent = text || '';
  $('notice').hidden = !text;
}

// ---- signing in ----

async function start() {
  try {
    state.session = await api('/api/session');
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      if (sessionStorage.getItem(KEY)) $('login-error').textContent = err.message;
      sessionStorage.removeItem(KEY);
      show('login');
      return;
    }
    notice(`The logger does not answer: ${err.message}`);
    return;
  }
  const s = state.session;
  $('who').textContent = s.open ? 'open mode (no keys)' : `${s.client_id} · ${s.scopes.join(', ')}`;
  $('signout').hidden = s.open;
  $('nav').hidden = false;
  $('login').hidden = true;
  route();
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $('key').value.trim());
  $('key').value = '';
  $('login-error').textContent = '';
  start();
});

$('signout').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  stopFeed();
  state.session = null;
  $('nav').hidden = true;
  $('who').textContent = '';
  $('signout').hidden = true;
  show('login');
});

// ---- views ----

function show(view) {
  for (const section of document.querySelectorAll('.view')) section.hidden = section.id !== `view-${view}`;
  $('login').hidden = view !== 'login';
  for (const link of document.querySelectorAll('nav a')) link.classList.toggle('active', link.dataset.view === view);
  if (view !== 'live') {
    clearInterval(state.statsTimer);
    state.statsTimer = 0;
  }
}

function route() {
  if (!state.session) return;
  notice('');
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith('/event/')) {
    show('event');
    loadEvent(hash.slice('/event/'.length));
  } else if (hash === '/search') {
    show('search');
  } else if (hash === '/dead-letters') {
    show('dead');
    loadDeadLetters();
  } else if (hash === '/recipients' || hash.startsWith('/recipients/')) {
    show('recipients');
    loadRecipient(hash.slice('/recipients/'.length));
  } else {
    show('live');
    if (!state.feed && !state.paused) startFeed();
    if (!state.statsTimer) {
      loadStats();
      state.statsTimer = setInterval(loadStats, 2000);
    }
  }
}

window.addEventListener('hashchange', route);

// ---- the live feed ----

function feedQuery() {
  const params = new URLSearchParams();
  const put = (name, id) => { const v = $(id).value.trim(); if (v) params.set(name, v); };
  put('user_id', 'f-user');
  put('categories', 'f-categories');
  put('types', 'f-types');
  put('session_id', 'f-session');
  const statuses = [...document.querySelectorAll('input[name=status]:checked')].map((c) => c.value);
  if (statuses.length < document.querySelectorAll('input[name=status]').length) params.set('statuses', statuses.join(','));
  if (state.cursor) params.set('after', state.cursor);
  return params;
}

function feedState(text) {
  $('feed-state').textContent = text;
}

async function startFeed() {
  stopFeed();
  const controller = new AbortController();
  state.feed = controller;
  feedState('connecting');
  try {
    const response = await fetch(`/api/feed?${feedQuery()}`, { headers: headers(), signal: controller.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new ApiError(response.status, body);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      const lines = buffered.split('\n');
      buffered = lines.pop();
      for (const line of lines) if (line) receive(JSON.parse(line));
    }
    if (state.feed === controller) {
      feedState('reconnecting');
      state.feed = null;
      setTimeout(() => { if (!state.feed && !state.paused) startFeed(); }, 1000);
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    state.feed = null;
    feedState(`stopped: ${err.message}`);
    if (err.status === 401) start();
  }
}

function stopFeed() {
  if (state.feed) state.feed.abort();
  state.feed = null;
}

function receive(message) {
  if (message.cursor) state.cursor = message.cursor;
  switch (message.kind) {
    case 'open':
      feedState('live');
      break;
    case 'event':
      state.incoming.push(message.event);
      if (!state.frame) state.frame = requestAnimationFrame(flush);
      break;
    case 'gap':
      notice(`Some changes are no longer kept and were missed: ${message.reason}`);
      break;
    case 'error':
      feedState(`error: ${message.message}`);
      break;
    default:
      break;
  }
}

// Puts what arrived since the last frame on top, keeping MAX_ROWS rows.
function flush() {
  state.frame = 0;
  const batch = state.incoming.splice(0).slice(-MAX_ROWS);
  const fragment = document.createDocumentFragment();
  for (let i = batch.length - 1; i >= 0; i -= 1) fragment.append(eventRow(batch[i], batch[i].updated_at));
  const rows = $('feed-rows');
  rows.prepend(fragment);
  while (rows.childElementCount > MAX_ROWS) rows.lastElementChild.remove();
}

$('feed-filters').addEventListener('submit', (e) => {
  e.preventDefault();
  state.cursor = '';
  state.paused = false;
  $('feed-toggle').textContent = 'Pause';
  $('feed-rows').replaceChildren();
  startFeed();
});

$('feed-toggle').addEventListener('click', () => {
  state.paused = !state.paused;
  $('feed-toggle').textContent = state.paused ? 'Resume' : 'Pause';
  if (state.paused) {
    stopFeed();
    feedState('paused');
  } else {
    startFeed();
  }
});

// ---- counts and the rate chart ----

async function loadStats() {
  let stats;
  try {
    stats = await api('/api/stats');
  } catch (err) {
    $('rate-peak').textContent = `– (${err.message})`;
    return;
  }
  for (const name of ['total', 'pending', 'processed', 'opened', 'failed', 'scheduled']) $(`count-${name}`).textContent = stats[name].toLocaleString();
  const rate = stats.rate;
  const peak = Math.max(1, ...rate.map(([, r]) => r));
  const points = rate.map(([, r], i) => `${(i / Math.max(1, rate.length - 1)) * 300},${60 - (r / peak) * 56}`);
  $('rate-line').setAttribute('points', points.join(' '));
  $('rate-peak').textContent = Math.max(0, ...rate.map(([, r]) => r)).toFixed(1);
}

// ---- search ----

function searchQuery() {
  const params = new URLSearchParams({ page_size: '50' });
  const put = (name, value) => { if (value) params.set(name, value); };
  put('user_id', $('s-user').value.trim());
  put('session_id', $('s-session').value.trim());
  put('category', $('s-category').value.trim());
  put('type', $('s-type').value.trim());
  put('status', $('s-status').value);
  put('order', $('s-order').value);
  const when = (id) => ($(id).value ? new Date($(id).value).toISOString() : '');
  put('since', when('s-since'));
  put('until', when('s-until'));
  return params;
}

async function search(token) {
  const params = state.searchParams;
  if (token) params.set('page_token', token);
  $('search-error').textContent = '';
  try {
    const page = await api(`/api/events?${params}`);
    const rows = $('search-rows');
    if (!token) rows.replaceChildren();
    for (const event of page.events) rows.append(eventRow(event, event.occurred_at));
    if (!token && page.events.length === 0) $('search-error').textContent = 'No events match.';
    state.nextPage = page.next_page_token;
    $('search-more').hidden = !page.next_page_token;
  } catch (err) {
    $('search-error').textContent = err.message;
  }
}

$('search-form').addEventListener('submit', (e) => {
  e.preventDefault();
  state.searchParams = searchQuery();
  search(null);
});
$('search-more').addEventListener('click', () => search(state.nextPage));

// ---- dead letters ----

async function redrive(body, message) {
  try {
    const answer = await api('/api/redrive', body);
    const failed = answer.results.filter((r) => !r.ok).map((r) => r.error);
    notice(failed.length ? `Not redriven: ${failed.join('; ')}` : '');
    if (message) $('dead-note').textContent = message(answer.results.length - failed.length);
  } catch (err) {
    notice(err.message);
  }
}

async function loadDeadLetters() {
  const rows = $('dead-rows');
  rows.replaceChildren();
  $('redrive-all').hidden = true;
  let page;
  try {
    page = await api('/api/dead-letters');
  } catch (err) {
    $('dead-note').textContent = err.status === 403 ? `Dead letters need the events:process scope. (${err.message})` : err.message;
    return;
  }
  const process = state.session.process;
  $('dead-note').textContent = page.dead_letters.length ? `${page.dead_letters.length}${page.next_page_token ? '+' : ''} dead letters, oldest first.` : 'No dead letters.';
  $('redrive-all').hidden = !process || page.dead_letters.length === 0;
  for (const dead of page.dead_letters) {
    const action = el('td');
    if (process) {
      const button = el('button', { type: 'button', class: 'redrive' }, 'Redrive');
      button.addEventListener('click', async () => {
        button.disabled = true;
        await redrive({ event_ids: [dead.event.event_id] });
        loadDeadLetters();
      });
      action.append(button);
    }
    rows.append(el('tr', { 'data-event-id': dead.event.event_id },
      el('td', { class: 'id' }, eventLink(dead.event.event_id)),
      el('td', { class: 'user' }, dead.event.user_id),
      el('td', { class: 'desc' }, dead.event.description),
      el('td', {}, dead.deliveries),
      el('td', { class: 'reason' }, dead.reason),
      action));
  }
}

$('redrive-all').addEventListener('click', async () => {
  await redrive({ all: true }, (n) => `${n} events queued again.`);
  loadDeadLetters();
});

// ---- one event ----

async function loadEvent(id) {
  $('event-id').textContent = id;
  $('event-error').textContent = '';
  for (const part of ['event-fields', 'event-history', 'event-attempts']) $(part).replaceChildren();
  $('event-payload').textContent = '';
  $('event-history-note').textContent = '';
  $('event-redrive').hidden = true;
  $('event-cancel').hidden = true;
  let page;
  try {
    page = await api(`/api/events/${encodeURIComponent(id)}`);
  } catch (err) {
    $('event-error').textContent = err.message;
    return;
  }
  const event = page.event;
  const fields = $('event-fields');
  for (const name of ['event_id', 'status', 'user_id', 'description', 'category', 'type', 'session_id', 'occurred_at', 'created_at', 'updated_at', 'deliver_at', 'request_id', 'source']) {
    if (name === 'deliver_at' && !event.deliver_at) continue;
    const value = name === 'user_id' && state.session.recipients_read
      ? el('a', { href: `#/recipients/${encodeURIComponent(event.user_id)}`, title: 'the recipient' }, event.user_id)
      : event[name] ?? '';
    fields.append(el('dt', {}, name), el('dd', { 'data-field': name }, value));
  }
  $('event-payload').textContent = event.payload == null ? '(none)' : JSON.stringify(event.payload, null, 2);
  for (const change of page.history) {
    $('event-history').append(el('tr', {}, el('td', {}, change.at), el('td', { class: `status status-${change.status}` }, change.status)));
  }
  $('event-history-note').textContent = page.history_complete ? '' : 'Older changes are no longer in the notification log; this is what it keeps.';
  for (const a of page.attempts) {
    const outcome = a.skipped ? 'skipped' : a.succeeded ? 'delivered' : `failed${a.http_status ? ` (HTTP ${a.http_status})` : ''}`;
    const result = a.digest_id ? `${outcome} in digest ${a.digest_id}` : outcome;
    $('event-attempts').append(el('tr', {},
      el('td', {}, a.attempted_at), el('td', {}, `${a.channel} (${a.kind})`), el('td', {}, a.target),
      el('td', { class: a.succeeded ? 'status-PROCESSED' : 'status-FAILED' }, result),
      el('td', {}, `${a.latency_ms.toFixed(1)} ms`), el('td', { class: 'desc' }, a.error ?? '')));
  }
  if (page.attempts.length === 0) $('event-attempts').append(el('tr', {}, el('td', { colspan: '6', class: 'note' }, 'No attempts recorded (channels record them when a --channels file is in use).')));
  const button = $('event-redrive');
  button.hidden = !(state.session.process && event.status === 'FAILED');
  button.onclick = async () => {
    await redrive({ event_ids: [event.event_id] });
    loadEvent(id);
  };
  const cancel = $('event-cancel');
  cancel.hidden = !(state.session.write && event.status === 'SCHEDULED');
  cancel.onclick = async () => {
    cancel.disabled = true;
    try {
      await api(`/api/events/${encodeURIComponent(event.event_id)}/cancel`, {});
    } catch (err) {
      $('event-error').textContent = err.message;
    } finally {
      cancel.disabled = false;
    }
    if (!$('event-error').textContent) loadEvent(id);
  };
}

// ---- recipients ----

const CONTACT = ['email', 'name', 'locale', 'time_zone'];

function recipientMessage(note, error) {
  $('r-note').textContent = note || '';
  $('r-error').textContent = error || '';
}

function dirty(yes) {
  $('r-dirty').textContent = yes ? 'unsaved changes' : '';
}

// Marks the input of `field` as the server named it (`recipient.email`).
function markInvalid(field) {
  const name = (field || '').replace(/^recipient\./, '').split(/[.[]/)[0];
  for (const input of document.querySelectorAll('#r-form [data-field]')) {
    input.setAttribute('aria-invalid', String(name === input.dataset.field));
  }
}

async function loadRecipient(user) {
  $('r-form').hidden = true;
  recipientMessage('', '');
  $('r-user').value = user;
  if (!user) {
    recipientMessage('Look up a user to see how they are reached and what they opted out of.');
    return;
  }
  const write = state.session.recipients_write;
  let record;
  try {
    record = await api(`/api/recipients/${encodeURIComponent(user)}`);
  } catch (err) {
    if (err.status !== 404) {
      recipientMessage('', err.status === 403 ? `Recipients need the recipients:read scope. (${err.message})` : err.message);
      return;
    }
    record = { user_id: user, attributes: null, opt_outs: [], updated_at: '' };
    recipientMessage(write ? `No record for ${user} yet: fill it in and save to create one.` : `No record for ${user}.`);
  }
  fillRecipient(record);
}

function fillRecipient(record) {
  state.recipient = record.user_id;
  state.optOuts = record.opt_outs.map((o) => ({ channel: o.channel, category: o.category, type: o.type }));
  $('r-title').textContent = record.user_id;
  for (const name of CONTACT) $(`r-${name}`).value = record[name] ?? '';
  $('r-attributes').value = record.attributes == null ? '' : JSON.stringify(record.attributes, null, 2);
  $('r-updated').textContent = record.updated_at || 'never';
  const write = state.session.recipients_write;
  for (const input of document.querySelectorAll('#r-form input, #r-form textarea')) input.disabled = !write;
  for (const part of ['r-add', 'r-save', 'r-delete']) $(part).hidden = !write;
  disarm();
  markInvalid(null);
  dirty(false);
  renderOptOuts();
  $('r-form').hidden = false;
}

function renderOptOuts() {
  const rows = $('r-opt-outs');
  rows.replaceChildren();
  const write = state.session.recipients_write;
  state.optOuts.forEach((o, i) => {
    const action = el('td');
    if (write) {
      const button = el('button', { type: 'button', class: 'remove' }, 'Remove');
      button.addEventListener('click', () => {
        state.optOuts.splice(i, 1);
        renderOptOuts();
        dirty(true);
      });
      action.append(button);
    }
    rows.append(el('tr', { class: 'opt-out' }, el('td', {}, o.channel || 'any'), el('td', {}, o.category || 'any'), el('td', {}, o.type || 'any'), action));
  });
  if (state.optOuts.length === 0) rows.append(el('tr', {}, el('td', { colspan: '4', class: 'note' }, 'None: everything on.')));
}

$('r-find').addEventListener('submit', (e) => {
  e.preventDefault();
  const target = `#/recipients/${encodeURIComponent($('r-user').value.trim())}`;
  if (location.hash === target) route();
  else location.hash = target;
});

$('r-form').addEventListener('input', (e) => {
  if (e.target.dataset.field) e.target.setAttribute('aria-invalid', 'false');
  dirty(true);
});

$('r-oo-add').addEventListener('click', () => {
  const part = (name) => $(`r-oo-${name}`).value.trim();
  const optOut = { channel: part('channel'), category: part('category'), type: part('type') };
  if (!optOut.channel && !optOut.category && !optOut.type) {
    recipientMessage('', 'An opt-out names a channel, a category or a type.');
    return;
  }
  state.optOuts.push(optOut);
  for (const name of ['channel', 'category', 'type']) $(`r-oo-${name}`).value = '';
  recipientMessage('', '');
  renderOptOuts();
  dirty(true);
});

$('r-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const body = { opt_outs: state.optOuts };
  for (const name of CONTACT) body[name] = $(`r-${name}`).value.trim();
  const attributes = $('r-attributes').value.trim();
  if (attributes) {
    try {
      body.attributes = JSON.parse(attributes);
    } catch (err) {
      markInvalid('attributes');
      recipientMessage('', `attributes: is not JSON (${err.message})`);
      return;
    }
  }
  $('r-save').disabled = true;
  try {
    const stored = await api(`/api/recipients/${encodeURIComponent(state.recipient)}`, body, 'PUT');
    fillRecipient(stored);
    recipientMessage(`Saved ${stored.user_id}.`);
  } catch (err) {
    markInvalid(err.field);
    recipientMessage('', err.message);
  } finally {
    $('r-save').disabled = false;
  }
});

// Erasing asks twice: the first click arms the button for a few seconds.
function disarm() {
  clearTimeout(state.eraseTimer);
  state.eraseTimer = 0;
  $('r-delete').textContent = 'Erase recipient';
  delete $('r-delete').dataset.armed;
}

$('r-delete').addEventListener('click', async () => {
  const button = $('r-delete');
  if (!button.dataset.armed) {
    button.dataset.armed = 'yes';
    button.textContent = `Really erase ${state.recipient}?`;
    state.eraseTimer = setTimeout(disarm, 5000);
    return;
  }
  disarm();
  try {
    const user = state.recipient;
    const answer = await api(`/api/recipients/${encodeURIComponent(user)}`, {}, 'DELETE');
    $('r-form').hidden = true;
    recipientMessage(answer.deleted ? `Erased ${user}: contact data and preferences.` : `${user} had no record.`);
  } catch (err) {
    recipientMessage('', err.message);
  }
});

start();

// The live view: counters for today, attempts per second over the last
// five minutes, what locked and unlocked (revocations, suspensions,
// blocks and what lifted them), and the attempts feed, all from the
// audit stream.
import * as api from './api.js';
import { h, s, replace, clock, outcomeClass, badge, tokenLink, notice, recordHead, recordRow, field, filterZone } from './dom.js';

const KEEP = 1000; // attempts kept in memory for filtering
const SHOW = 50;   // rows shown
const CLASSES = ['valid', 'refused', 'blocked'];
const CHANGES = 12; // lock and unlock events shown
const FEED = ['clock', 'outcome', 'token', 'subject', 'source', 'request', 'latency', 'reason'];

// What an admin or detector action did, for its colour: locked, unlocked
// or neither.
const LOCKS = new Set(['token.revoke', 'token.suspend', 'source.blocked', 'token.leak_suspected', 'token.reuse', 'leak.reported', 'token.expire']);
const UNLOCKS = new Set(['token.resume', 'source.unblocked']);
function changeClass(action) {
  if (LOCKS.has(action)) return 'refused';
  if (UNLOCKS.has(action)) return 'valid';
  return 'warn';
}

// kept is what the view had when it was left: shown again at once when it
// comes back, and the stream resumes after the last record it had (if
// that was lately; after longer, it starts again from the audit log).
let kept = null;
const RESUME_WITHIN = 60_000; // ms

export function liveView(root) {
  const counters = {};
  const counterRow = h('div', { class: 'counters' }, CLASSES.map((c) => {
    counters[c] = h('span', { class: 'count', id: `count-${c}` }, '–');
    return h('div', { class: `counter ${c}` }, counters[c], h('span', { class: 'label' }, `${c} today`));
  }));
  const chart = h('div', { class: 'chart card', id: 'chart' });
  const changes = h('ul', { class: 'plain changes', id: 'changes' }, h('li', { class: 'muted' }, 'Nothing yet: revocations, suspensions, blocks and what lifts them appear here.'));
  const fresh = kept && Date.now() - kept.at < RESUME_WITHIN;
  const changed = fresh ? kept.changed : [];
  const state = { paused: false, events: fresh ? kept.events : [], pending: 0, outcome: '', token: '', source: '', lastSeq: fresh ? kept.lastSeq : 0 };

  const pauseBtn = h('button', { type: 'button', id: 'pause' }, 'Pause');
  const outcomeSel = h('select', { id: 'f-outcome' },
    h('option', { value: '' }, 'All outcomes'),
    h('option', { value: 'valid' }, 'Valid'),
    h('option', { value: 'refused' }, 'Refused (any)'),
    h('option', { value: 'blocked' }, 'Blocked'),
    ['NOT_FOUND', 'MALFORMED', 'REVOKED', 'SUSPENDED', 'EXPIRED', 'NOT_YET_VALID', 'IP_NOT_ALLOWED', 'FORBIDDEN',
      'INSUFFICIENT_SCOPE', 'RATE_LIMITED', 'USAGE_EXCEEDED'].map((o) => h('option', { value: o }, o)));
  const tokenIn = h('input', { id: 'f-token', placeholder: 'part of a token id' });
  const sourceIn = h('input', { id: 'f-source', placeholder: 'start of an address' });
  const status = h('span', { class: 'muted', id: 'stream-status' }, 'connecting…');
  const tbody = h('tbody', { id: 'feed' });
  const table = h('table', { class: 'feed', id: 'live-feed' },
    recordHead(FEED),
    tbody);

  // What a screen reader hears: a summary every ten seconds at most, and
  // the stream's state when it changes (never every attempt).
  const announce = h('p', { class: 'visually-hidden', role: 'status', 'aria-live': 'polite', id: 'live-announce' });
  const heard = { attempts: 0, refused: 0 };
  replace(root,
    announce,
    h('h1', null, 'Live'),
    counterRow,
    h('div', { class: 'live-grid' }, chart, h('div', { class: 'card' }, h('strong', null, 'Locks, unlocks and changes'), changes)),
    filterZone('div', 'live-filters', 'Filter the feed', pauseBtn, field('Outcome', outcomeSel), field('Token', tokenIn),
      field('Source', sourceIn), status),
    h('div', { class: 'scroll', id: 'live-feed-box' }, table));

  const matches = (ev) => {
    if (state.outcome) {
      const cls = outcomeClass(ev.outcome);
      if (CLASSES.includes(state.outcome) ? cls !== state.outcome : ev.outcome !== state.outcome) return false;
    }
    if (state.token && !(ev.token_id || '').includes(state.token)) return false;
    if (state.source && !(ev.client_ip || '').startsWith(state.source)) return false;
    return true;
  };

  const row = (ev) => recordRow(ev, FEED, { 'data-seq': ev.seq });
  const empty = () => h('tr', { class: 'empty' }, h('td', { colspan: FEED.length, class: 'muted' }, 'No attempts yet: they appear here as they happen.'));

  // The feed is drawn incrementally: new matching attempts are put on top
  // and the oldest rows dropped, so rows already shown (and a focused
  // link in one) stay; only a filter change draws it anew. Redraws come at
  // most ten times a second, and while they are expensive (a frame of
  // fifty new rows is ~45 ms on a slow machine) at most every twenty
  // times their cost: the page spends at most about 5 % of its time on
  // the feed, however busy the stream, and stays quick to answer.
  let frame = 0;
  let drawn = 0;   // state.events[:drawn] are reflected in the feed
  let shownRows = 0;
  let cost = 0;    // ms the last redraw and its frame took
  const label = () => {
    pauseBtn.textContent = state.paused ? (state.pending ? `Resume (${state.pending} new)` : 'Resume') : 'Pause';
    pauseBtn.setAttribute('aria-pressed', String(state.paused));
  };
  const redraw = () => {
    const shown = [];
    for (let i = state.events.length - 1; i >= 0 && shown.length < SHOW; i--) {
      if (matches(state.events[i])) shown.push(row(state.events[i]));
    }
    shownRows = shown.length;
    tbody.replaceChildren(...(shown.length ? shown : [empty()]));
    drawn = state.events.length;
  };
  const render = () => {
    frame = 0;
    const began = performance.now();
    const add = [];
    for (let i = state.events.length - 1; i >= drawn && add.length < SHOW; i--) {
      if (matches(state.events[i])) add.push(row(state.events[i]));
    }
    drawn = state.events.length;
    if (add.length) {
      if (shownRows === 0) tbody.replaceChildren();
      tbody.prepend(...add);
      shownRows += add.length;
      while (shownRows > SHOW) {
        tbody.lastElementChild.remove();
        shownRows--;
      }
    } else if (shownRows === 0 && !tbody.firstElementChild) {
      tbody.append(empty());
    }
    state.pending = 0;
    label();
    // What the redraw cost the page: its script, and the style, layout
    // and paint of the frame it made (measured at the next frame).
    requestAnimationFrame(() => { cost = performance.now() - began; });
  };
  const schedule = () => {
    if (state.paused) {
      label();
      return;
    }
    if (!frame) frame = setTimeout(() => requestAnimationFrame(render), Math.max(100, 20 * cost));
  };
  const refilter = () => { redraw(); label(); };

  pauseBtn.addEventListener('click', () => {
    state.paused = !state.paused;
    pauseBtn.classList.toggle('active', state.paused);
    // Resuming draws the feed anew: what came meanwhile, and any filter
    // changed while it held still.
    if (!state.paused) { state.pending = 0; refilter(); }
    else label();
  });
  // While paused the feed holds still: a filter applies when it resumes.
  const filterChanged = () => { if (!state.paused) refilter(); };
  outcomeSel.addEventListener('change', () => { state.outcome = outcomeSel.value; filterChanged(); });
  tokenIn.addEventListener('input', () => { state.token = tokenIn.value.trim(); filterChanged(); });
  sourceIn.addEventListener('input', () => { state.source = sourceIn.value.trim(); filterChanged(); });
  redraw();
  label();

  const drawChanges = () => {
    if (changed.length === 0) return;
    changes.replaceChildren(...changed.map((c) => h('li', { class: 'change' },
      h('span', { class: 'mono muted' }, clock(c.time)), ' ',
      badge(c.action, changeClass(c.action)), ' ',
      c.token_id ? tokenLink(c.token_id) : h('span', { class: 'mono' }, c.client_ip || ''),
      c.subject ? ` ${c.subject}` : '',
      c.reason ? h('span', { class: 'muted' }, ` — ${c.reason}`) : '')));
  };
  const change = (ev) => {
    changed.unshift(ev);
    changed.length = Math.min(changed.length, CHANGES);
    drawChanges();
  };
  drawChanges();
  // An agent's MCP request is an attempt like an HTTP one.
  const isAttempt = (ev) => ev.kind === 'verify' || ev.action === 'mcp.request';
  const take = (ev) => {
    if (ev.seq <= state.lastSeq) return; // a record the backfill or the last visit had
    state.lastSeq = ev.seq;
    if (!isAttempt(ev)) {
      change(ev);
      return;
    }
    heard.attempts++;
    if (outcomeClass(ev.outcome) !== 'valid') heard.refused++;
    state.events.push(ev);
    if (state.events.length >= 2 * KEEP) { // trimmed now and then, not per event
      const cut = state.events.length - KEEP;
      state.events.splice(0, cut);
      drawn = Math.max(0, drawn - cut);
    }
    state.pending++;
    schedule();
  };

  // The stream: attempts go to the feed, admin changes and the
  // detector's actions to "Locks and unlocks". It starts after what the
  // view already shows: the records it had when it was left a moment ago,
  // or the latest of the audit log (read first, so the view opens with
  // what happened before it was opened).
  let es = null;
  let stopped = false;
  const listen = () => {
    es = api.stream(state.lastSeq ? { after: state.lastSeq } : {});
    let down = false;
    es.addEventListener('open', () => {
      status.textContent = 'live';
      status.className = 'live';
      if (down) announce.textContent = 'The live stream is back.';
      down = false;
    });
    es.addEventListener('audit', (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      take(ev);
    });
    es.addEventListener('error', () => {
      status.textContent = 'reconnecting…';
      status.className = 'muted';
      if (!down) announce.textContent = 'The live stream was lost; reconnecting.';
      down = true;
      if (es.readyState === EventSource.CLOSED) api.checkSession();
    });
    // The server ends the stream when the session no longer holds.
    es.addEventListener('end', () => {
      es.close();
      status.textContent = 'ended';
      status.className = 'muted';
      api.checkSession();
    });
  };
  const backfill = async () => {
    const [attempts, admin, detect] = await Promise.all([
      api.v1('GET', '/audit' + api.query({ kind: 'verify', limit: SHOW })),
      api.v1('GET', '/audit' + api.query({ kind: 'admin', limit: CHANGES })),
      api.v1('GET', '/audit' + api.query({ kind: 'detect', limit: CHANGES })),
    ].map((p) => p.catch(() => ({ events: [] }))));
    if (stopped) return;
    const all = [...attempts.events, ...admin.events, ...detect.events].sort((a, b) => a.seq - b.seq);
    for (const ev of all) take(ev);
    render();
  };
  if (fresh) listen();
  else backfill().then(() => { if (!stopped) listen(); });

  const summary = setInterval(() => {
    if (heard.attempts === 0 || state.paused) return;
    announce.textContent = `${heard.attempts.toLocaleString()} attempt${heard.attempts === 1 ? '' : 's'} in the last 10 seconds, ${heard.refused.toLocaleString()} refused.`;
    heard.attempts = heard.refused = 0;
  }, 10_000);

  // Counters and chart: polled once a second.
  let timer = 0;
  const poll = async () => {
    try {
      const sum = await api.v1('GET', '/audit/summary');
      for (const c of CLASSES) counters[c].textContent = sum.today[c].toLocaleString();
      const nodes = sum.nodes && sum.nodes.length > 1 ? `${sum.nodes.length} nodes` : `node ${sum.node}`;
      drawChart(chart, sum.series, nodes);
    } catch (err) {
      if (err.status !== 401) replace(chart, notice(err.message));
    }
    if (!stopped) timer = setTimeout(poll, 1000);
  };
  poll();

  return () => {
    stopped = true;
    clearInterval(summary);
    clearTimeout(timer);
    clearTimeout(frame);
    if (es) es.close();
    kept = { at: Date.now(), events: state.events, changed, lastSeq: state.lastSeq };
  };
}

// drawChart draws attempts per second by class as lines over the window.
function drawChart(root, series, where) {
  const W = 900, H = 180, L = 44, B = 22, T = 10;
  const n = series.valid.length;
  let max = 1;
  for (let i = 0; i < n; i++) max = Math.max(max, series.valid[i], series.refused[i], series.blocked[i]);
  const nice = niceMax(max);
  const x = (i) => L + (i / (n - 1)) * (W - L - 4);
  const y = (v) => T + (1 - v / nice) * (H - T - B);
  const grid = [0, 0.5, 1].map((f) => [
    s('line', { x1: L, x2: W - 4, y1: y(nice * f), y2: y(nice * f), class: 'grid' }),
    s('text', { x: L - 6, y: y(nice * f) + 4, class: 'axis', 'text-anchor': 'end' }, fmtRate(nice * f)),
  ]);
  const ticks = [0, 60, 120, 180, 240, 299].map((i) =>
    s('text', { x: x(i), y: H - 6, class: 'axis', 'text-anchor': i === 0 ? 'start' : i === 299 ? 'end' : 'middle' },
      i === 299 ? 'now' : `-${Math.round((299 - i) / 60)}m`));
  const lines = CLASSES.map((c) => {
    const pts = series[c].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    return s('polyline', { points: pts, class: `line ${c}` });
  });
  const last = (c) => series[c].slice(-5).reduce((a, b) => a + b, 0) / 5;
  replace(root,
    h('div', { class: 'chart-head' },
      h('span', null, h('strong', null, 'Attempts per second, last 5 minutes'), h('span', { class: 'muted', id: 'chart-nodes' }, ` · ${where}`)),
      h('span', { class: 'legend' }, CLASSES.map((c) => h('span', { class: `key ${c}` }, `${c} ${fmtRate(last(c))}/s`)))),
    s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Attempts per second by outcome' },
      grid, ticks, lines));
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtRate(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

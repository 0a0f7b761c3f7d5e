// Building the page. Everything from the API goes in as text: h() turns
// strings into text nodes, and nothing here ever parses a string as markup.

const SVG = 'http://www.w3.org/2000/svg';

function build(el, attrs, kids) {
  // A box that scrolls on its own (a wide table on a phone) can be
  // reached and scrolled from the keyboard.
  if (attrs?.class === 'scroll' && attrs.tabindex === undefined) el.setAttribute('tabindex', '0');
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

// h('a', {href: '#/x', class: 'y'}, 'text', child, ...) makes an element.
export function h(tag, attrs, ...kids) {
  return build(document.createElement(tag), attrs, kids);
}

// s() is h() for SVG elements.
export function s(tag, attrs, ...kids) {
  return build(document.createElementNS(SVG, tag), attrs, kids);
}

// replace(el, ...kids) swaps el's children for kids.
export function replace(el, ...kids) {
  el.replaceChildren();
  return build(el, null, kids);
}

// Dates and durations, for people. Every date is written one way,
// 2026-11-29 12:47:39 UTC, in the zone the operator picked in the header:
// the browser's (with its offset, e.g. GMT+1) or UTC. The choice is kept
// in the page's address (?tz=utc), not in storage.
let utc = new URLSearchParams(location.search).get('tz') === 'utc';
let formats = null;

function makeFormats() {
  const timeZone = utc ? 'UTC' : undefined;
  const parts = { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZone };
  return {
    full: new Intl.DateTimeFormat('en-US', { ...parts, timeZoneName: 'shortOffset' }),
    // One formatter for every clock cell: toLocaleTimeString builds one
    // per call, which at a busy feed's rate was a tenth of the page's CPU.
    clock: new Intl.DateTimeFormat('en-US', { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZone }),
  };
}

// zoneName is the picked zone as the dates show it ("UTC", "GMT+1").
export function zoneName() {
  if (utc) return 'UTC';
  formats ||= makeFormats();
  return localZone(formats.full.formatToParts(new Date()).find((p) => p.type === 'timeZoneName')?.value);
}

// localZone is the browser's zone as its offset: GMT+1, GMT-5:30, GMT+0.
function localZone(name) {
  return !name || name === 'GMT' || name === 'UTC' ? 'GMT+0' : name;
}

export function usingUTC() { return utc; }

// setUTC switches the zone of every date drawn from now on, and records
// the choice in the address.
export function setUTC(on) {
  utc = !!on;
  formats = null;
  const u = new URL(location.href);
  if (utc) u.searchParams.set('tz', 'utc');
  else u.searchParams.delete('tz');
  history.replaceState(history.state, '', u);
}

// when is a date and time with its zone: 2026-11-29 12:47:39 UTC.
export function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  formats ||= makeFormats();
  const p = {};
  for (const x of formats.full.formatToParts(d)) p[x.type] = x.value;
  const zone = utc ? 'UTC' : localZone(p.timeZoneName);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${zone}`;
}

// clock is the time of day alone (the live feed's column, whose header
// names the zone).
export function clock(t) {
  const d = new Date(t);
  if (isNaN(d)) return String(t);
  formats ||= makeFormats();
  return formats.clock.format(d);
}

// field is a form control with its visible label.
export function field(label, control) {
  return h('label', null, h('span', null, label), control);
}

// filterZone is a labelled group of filters above a list (a search
// region when it is a form that asks the server).
export function filterZone(tag, id, name, ...kids) {
  const attrs = { class: 'filters card', id, 'aria-label': name, role: tag === 'form' ? 'search' : 'group' };
  return h(tag, attrs, ...kids);
}

// timeCell is a table cell for a moment: relative ("in 3 days"), with
// the date itself on hover and for assistive technology.
export function timeCell(t, none = 'never') {
  if (!t) return h('td', { class: 'nowrap' }, none);
  return h('td', { class: 'nowrap' }, h('time', { datetime: t, title: when(t) }, ago(t)));
}

export function ago(t) {
  if (!t) return 'never';
  const sec = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  const fmt = (n, u) => `${n} ${u}${n === 1 ? '' : 's'}`;
  const abs = Math.abs(sec);
  let out;
  if (abs < 60) out = fmt(abs, 'second');
  else if (abs < 3600) out = fmt(Math.round(abs / 60), 'minute');
  else if (abs < 86400) out = fmt(Math.round(abs / 3600), 'hour');
  else out = fmt(Math.round(abs / 86400), 'day');
  return sec >= 0 ? `${out} ago` : `in ${out}`;
}

export function latency(ns) {
  if (!ns) return '—';
  if (ns < 1e3) return `${ns} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${(ns / 1e6).toFixed(1)} ms`;
}

// outcomeClass maps a verification outcome to its colour class.
export function outcomeClass(o) {
  if (o === 'VALID' || o === 'OK') return 'valid';
  if (o === 'BLOCKED') return 'blocked';
  return 'refused';
}

export function badge(text, cls) {
  return h('span', { class: `badge ${cls}` }, text);
}

// tokenLink links to a token's page; the id goes in the URL encoded.
export function tokenLink(id) {
  if (!id) return '—';
  return h('a', { href: `#/tokens/${encodeURIComponent(id)}`, class: 'mono' }, id);
}

// request is what a record asked for: an agent's MCP method and tool
// (mcp gh tools/call delete_repo), else its HTTP method and path.
function request(ev) {
  const d = ev.detail || {};
  if ((ev.action === 'mcp' || ev.action === 'mcp.request') && d.server) {
    return ['mcp', d.server, d.method, d.tool || d.resource || d.prompt].filter(Boolean).join(' ');
  }
  return [ev.method, ev.path].filter(Boolean).join(' ') || '—';
}

// The columns an audit record can be shown with, by name: the live feed,
// a token's recent attempts and the audit view each pick theirs.
const COLUMNS = {
  seq: ['Seq', (ev) => h('td', { class: 'mono' }, String(ev.seq))],
  clock: ['Time', (ev) => h('td', { class: 'mono' }, clock(ev.time))],
  time: ['Time', (ev) => h('td', { class: 'mono nowrap' }, when(ev.time))],
  kind: ['Kind', (ev) => h('td', null, ev.kind)],
  action: ['Action', (ev) => h('td', { class: 'mono' }, ev.action)],
  outcome: ['Outcome', (ev) => h('td', null, badge(ev.outcome, outcomeClass(ev.outcome)))],
  token: ['Token', (ev) => h('td', null, tokenLink(ev.token_id))],
  subject: ['Subject', (ev) => h('td', null, ev.subject || '—')],
  actor: ['Actor', (ev) => h('td', { class: 'mono' }, ev.actor || '—')],
  source: ['Source', (ev) => h('td', { class: 'mono' }, ev.client_ip || '—')],
  request: ['Request', (ev) => h('td', { class: 'mono' }, request(ev))],
  latency: ['Latency', (ev) => h('td', { class: 'num' }, ev.kind === 'verify' || ev.action === 'mcp.request' ? latency(ev.latency_ns) : '—')],
  reason: ['Reason', (ev) => h('td', { class: 'muted' }, ev.reason || '')],
};

// heading is a column's header text; the clock column names its zone.
function heading(c) {
  return c === 'clock' ? `Time (${zoneName()})` : COLUMNS[c][0];
}

// recordHead is the header row for the named columns.
export function recordHead(cols) {
  return h('thead', null, h('tr', null, cols.map((c) => h('th', null, heading(c)))));
}

// recordRow is one audit record as a row of the named columns, coloured
// by its outcome, each cell labelled for the narrow screen's cards.
export function recordRow(ev, cols, attrs = {}) {
  return h('tr', { class: `ev ${outcomeClass(ev.outcome)}`, ...attrs }, cols.map((c) => {
    const td = COLUMNS[c][1](ev);
    td.dataset.label = COLUMNS[c][0];
    return td;
  }));
}

// labelCells gives every cell of the table rows in or at node the header
// text of its column (data-label): on a narrow screen the rows are drawn
// as cards, each value beside its label (style.css). Cells labelled
// already are left alone.
export function labelCells(node) {
  const rows = node.tagName === 'TR' ? [node] : node.querySelectorAll ? node.querySelectorAll('tbody tr') : [];
  for (const tr of rows) {
    const table = tr.closest('table');
    const heads = table?.tHead?.rows[0]?.cells;
    if (!heads) continue;
    for (let i = 0; i < tr.cells.length; i++) {
      const td = tr.cells[i];
      if (td.dataset.label === undefined && td.colSpan === 1 && heads[i]) td.dataset.label = heads[i].textContent;
    }
  }
}

// A message line for errors and notices.
export function notice(text, cls = 'error') {
  return h('p', { class: `notice ${cls}`, role: cls === 'error' ? 'alert' : 'status' }, text);
}

// confirmDialog asks before a change. fields are extra inputs
// ({name, label, type, value, options}); it resolves to their values, or
// null when cancelled.
export function confirmDialog(title, message, fields = [], action = 'Confirm', danger = false) {
  return new Promise((resolve) => {
    const inputs = {};
    const rows = fields.map((f) => {
      let input;
      if (f.options) {
        input = h('select', { name: f.name }, f.options.map(([v, l]) => h('option', { value: v, selected: v === f.value }, l)));
      } else {
        input = h('input', { name: f.name, type: f.type || 'text', value: f.value ?? '', placeholder: f.placeholder || '' });
      }
      inputs[f.name] = input;
      return h('label', null, h('span', null, f.label), input);
    });
    const dlg = h('dialog', { class: 'confirm', 'aria-label': title });
    const form = h('form', { method: 'dialog' },
      h('h2', null, title),
      h('p', null, message),
      rows,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'quiet', onclick: () => dlg.close('cancel') }, 'Cancel'),
        h('button', { type: 'submit', value: 'ok', class: danger ? 'danger' : 'primary', 'data-confirm': '' }, action)));
    dlg.append(form);
    dlg.addEventListener('close', () => {
      const ok = dlg.returnValue === 'ok';
      const values = {};
      for (const [k, el] of Object.entries(inputs)) values[k] = el.value;
      dlg.remove();
      resolve(ok ? values : null);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

// copyButton copies text to the clipboard, falling back to selecting the
// input where the Clipboard API is not available (plain HTTP).
export function copyButton(input) {
  const btn = h('button', { type: 'button', class: 'primary' }, 'Copy');
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(input.value);
      btn.textContent = 'Copied';
    } catch {
      input.select();
      btn.textContent = 'Selected: press Ctrl+C';
    }
  });
  return btn;
}

// splitList reads "a, b c" into ['a', 'b', 'c'].
export function splitList(v) {
  return String(v || '').split(/[\s,]+/).filter(Boolean);
}

// exportLinks are the CSV and JSON Lines downloads of a filtered list;
// set(url) points them at the current filter.
export function exportLinks(id, urlOf) {
  const csv = h('a', { id: `${id}-csv`, class: 'button', download: '' }, 'Export CSV');
  const jsonl = h('a', { id: `${id}-jsonl`, class: 'button', download: '' }, 'Export JSON Lines');
  const set = () => { csv.href = urlOf('csv'); jsonl.href = urlOf('jsonl'); };
  set();
  return { el: h('span', { class: 'exports' }, csv, ' ', jsonl), set };
}

// copyText is a small button that copies text (an id, an address), named
// for what it copies: "Copy token id".
export function copyText(text, what) {
  const btn = h('button', { type: 'button', class: 'quiet copy-text', 'aria-label': `Copy ${what}`, title: `Copy ${what}` }, 'Copy');
  btn.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = 'Copied';
    } catch {
      btn.textContent = 'Select and copy';
    }
    setTimeout(() => { btn.textContent = 'Copy'; }, 2000);
  });
  return btn;
}

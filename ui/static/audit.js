// Audit: the log searched by token, subject, client address (or CIDR
// prefix), outcome, kind, action and time, page by page, and its hash chain checked.
import * as api from './api.js';
import { h, replace, notice, recordHead, recordRow, exportLinks, field, filterZone, zoneName, usingUTC } from './dom.js';

const COLS = ['seq', 'time', 'kind', 'action', 'outcome', 'token', 'subject', 'actor', 'source', 'request', 'latency', 'reason'];
const OUTCOMES = ['VALID', 'OK', 'NOT_FOUND', 'MALFORMED', 'REVOKED', 'SUSPENDED', 'EXPIRED', 'NOT_YET_VALID', 'IP_NOT_ALLOWED',
  'FORBIDDEN', 'INSUFFICIENT_SCOPE', 'RATE_LIMITED', 'USAGE_EXCEEDED', 'BLOCKED', 'ERROR'];

// rfc3339 turns a datetime-local value (in the zone the dates are shown
// in: the browser's, or UTC) into the RFC 3339 time the API takes.
function rfc3339(v) {
  if (!v) return '';
  const d = new Date(usingUTC() ? v + 'Z' : v);
  return isNaN(d) ? '' : d.toISOString();
}

export function auditView(root, params = {}) {
  const input = (name, placeholder, value = '') => h('input', { name, id: `a-${name}`, placeholder, value });
  const token = input('token_id', 'token id', params.token_id);
  const subject = input('subject', 'exact subject');
  const source = input('client_ip', 'address or CIDR prefix', params.client_ip);
  const action = input('action', 'e.g. token.revoke');
  const kind = h('select', { name: 'kind', id: 'a-kind' },
    [['', 'All kinds'], ['verify', 'Attempts'], ['admin', 'Admin changes'], ['session', 'Sessions'], ['detect', 'Detector']].map(([v, l]) => h('option', { value: v }, l)));
  const outcome = h('select', { name: 'outcome', id: 'a-outcome' },
    h('option', { value: '' }, 'Any outcome'), OUTCOMES.map((o) => h('option', { value: o }, o)));
  const since = h('input', { type: 'datetime-local', name: 'since', id: 'a-since', step: 1 });
  const until = h('input', { type: 'datetime-local', name: 'until', id: 'a-until', step: 1 });
  const zone = zoneName();
  const form = filterZone('form', 'audit-filters', 'Search the audit log', field('Token', token), field('Subject', subject),
    field('Client', source), field('Kind', kind), field('Outcome', outcome), field('Action', action),
    field(`From (${zone})`, since), field(`To (${zone})`, until),
    h('button', { type: 'submit' }, 'Search'));
  const chainBtn = h('button', { type: 'button', id: 'verify-chain' }, 'Check the hash chain');
  const chain = h('div', { id: 'chain' });
  const msg = h('div');
  const tbody = h('tbody', { id: 'audit-rows' });
  const more = h('button', { type: 'button', hidden: true, id: 'audit-more' }, 'Older records');
  replace(root, h('h1', null, 'Audit log'),
    h('div', { class: 'actions left' }, chainBtn), chain, form, msg,
    h('div', { class: 'scroll' }, h('table', { class: 'feed' },
      recordHead(COLS),
      tbody)),
    more);

  let alive = true;
  let cursor = '';
  let filter = {};
  const exports = exportLinks('audit-export', (format) => api.exportURL('audit', filter, format));
  form.after(h('div', { class: 'actions left' }, exports.el));
  const row = (ev) => {
    const tr = recordRow(ev, COLS);
    if (!ev.detail) return [tr];
    return [tr, h('tr', { class: 'detail' }, h('td', { colspan: COLS.length }, h('pre', { class: 'evidence' }, JSON.stringify(ev.detail, null, 2))))];
  };
  const load = async (append) => {
    replace(msg);
    try {
      const page = await api.v1('GET', '/audit' + api.query({ ...filter, cursor: append ? cursor : '', limit: 100 }));
      if (!alive) return;
      const rows = page.events.flatMap(row);
      if (append) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      if (!append && rows.length === 0) tbody.append(h('tr', null, h('td', { colspan: COLS.length, class: 'muted' }, 'No records match.')));
      cursor = page.next_cursor || '';
      more.hidden = !cursor;
    } catch (err) {
      replace(msg, notice(err.message));
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    filter = { token_id: token.value.trim(), subject: subject.value.trim(), client_ip: source.value.trim(), kind: kind.value, outcome: outcome.value,
      action: action.value.trim(), since: rfc3339(since.value), until: rfc3339(until.value) };
    exports.set();
    load(false);
  });
  more.addEventListener('click', () => load(true));
  chainBtn.addEventListener('click', async () => {
    replace(chain, h('p', { class: 'muted' }, 'Checking…'));
    try {
      const rep = await api.v1('GET', '/audit/verify');
      replace(chain, rep.ok
        ? notice(`The chain is intact: ${rep.checked.toLocaleString()} records on ${rep.nodes.length} node(s).`, 'ok')
        : notice(`The chain is BROKEN at record ${rep.broken.seq} (node ${rep.broken.node}): ${rep.broken.reason}. ` +
          'A record was edited, deleted or inserted outside latchkey.'));
    } catch (err) {
      replace(chain, notice(err.message));
    }
  });
  filter = { token_id: token.value.trim(), client_ip: source.value.trim() };
  exports.set();
  load(false);
  return () => { alive = false; };
}

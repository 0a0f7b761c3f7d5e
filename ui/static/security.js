// Security: blocked sources, the detector's alerts and actions, leak
// reports from secret scanners, and the receipts of revocations that
// waited for every node.
import * as api from './api.js';
import { h, replace, when, ago, badge, tokenLink, notice, confirmDialog } from './dom.js';

function evidence(detail) {
  if (!detail || (typeof detail === 'object' && Object.keys(detail).length === 0)) return h('span', { class: 'muted' }, '—');
  return h('pre', { class: 'evidence' }, JSON.stringify(detail, null, 2));
}

function eventTable(id, events, empty) {
  return h('div', { class: 'scroll' }, h('table', null,
    h('thead', null, h('tr', null, ['Time', 'Event', 'Token', 'Source', 'Reason', 'Evidence'].map((x) => h('th', null, x)))),
    h('tbody', { id }, events.length ? events.map((ev) => h('tr', null,
      h('td', null, when(ev.time)),
      h('td', null, badge(ev.action, ev.action.includes('blocked') || ev.action.includes('leak') || ev.action === 'token.reuse' ? 'refused' : 'warn')),
      h('td', null, tokenLink(ev.token_id)),
      h('td', { class: 'mono' }, ev.client_ip || '—'),
      h('td', null, ev.reason || '—'),
      h('td', null, evidence(ev.detail))))
      : h('tr', null, h('td', { colspan: 6, class: 'muted' }, empty)))));
}

export function securityView(root) {
  let alive = true;
  const blocks = h('div', { id: 'blocks-box' });
  const alerts = h('div', { id: 'alerts-box' });
  const leaks = h('div', { id: 'leaks-box' });
  const receipts = h('div', { id: 'receipts-box' });
  replace(root, h('h1', null, 'Security'),
    h('h2', null, 'Blocked sources'), blocks,
    h('h2', null, 'Detector alerts and actions'), alerts,
    h('h2', null, 'Leak reports'), leaks,
    h('h2', null, 'Revocation receipts'),
    h('p', { class: 'muted' }, 'Revocations and suspensions asked to wait for every node (wait=all, latchkey token revoke --wait) on the node ' +
      'that serves this page: how many live nodes confirmed they dropped the token, and how long it took.'), receipts);

  const loadBlocks = async () => {
    try {
      const res = await api.v1('GET', '/blocks');
      if (!alive) return;
      replace(blocks, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, ['Source', 'Rule', 'Reason', 'Since', 'Until', ''].map((x) => h('th', null, x)))),
        h('tbody', { id: 'blocks' }, res.blocks.length ? res.blocks.map((b) => h('tr', null,
          h('td', { class: 'mono' }, b.source),
          h('td', null, b.rule),
          h('td', null, b.reason || '—'),
          h('td', null, when(b.created_at)),
          h('td', null, `${when(b.until)} (${ago(b.until)})`),
          h('td', null, h('button', { type: 'button', class: 'danger', 'data-action': 'unblock', onclick: () => unblock(b.source) }, 'Unblock'))))
          : h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'No source is blocked.'))))));
    } catch (err) {
      replace(blocks, notice(err.message));
    }
  };
  const unblock = async (source) => {
    const ok = await confirmDialog('Unblock this source?', `Requests from ${source} are judged again from now on, on every node.`, [], 'Unblock', true);
    if (!ok) return;
    try {
      await api.v1('DELETE', '/blocks/' + source.split('/').map(encodeURIComponent).join('/'));
    } catch (err) {
      replace(blocks, notice(err.message));
      return;
    }
    loadBlocks();
  };
  const loadEvents = async () => {
    const [det, lk] = await Promise.all([
      api.v1('GET', '/audit' + api.query({ kind: 'detect', limit: 50 })).catch((e) => e),
      api.v1('GET', '/audit' + api.query({ action: 'leak.reported', limit: 50 })).catch((e) => e),
    ]);
    if (!alive) return;
    replace(alerts, det instanceof Error ? notice(det.message)
      : eventTable('alerts', det.events.filter((e) => e.action !== 'leak.reported'), 'The detector has not acted.'));
    replace(leaks, lk instanceof Error ? notice(lk.message) : eventTable('leaks', lk.events, 'No leak reports.'));
  };
  const loadReceipts = async () => {
    try {
      const res = await api.v1('GET', '/receipts');
      if (!alive) return;
      replace(receipts, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, ['Time', 'Change', 'Token', 'Confirmed', 'Took', 'Not confirmed'].map((x) => h('th', null, x)))),
        h('tbody', { id: 'receipts' }, res.receipts.length ? res.receipts.map((r) => h('tr', null,
          h('td', null, when(r.at)),
          h('td', null, r.action === 'token.suspend' ? 'suspend' : (r.token_id ? 'revoke' : 'bulk revoke')),
          h('td', null, r.token_id ? tokenLink(r.token_id) : '—'),
          h('td', null, badge(`${r.confirmed} of ${r.nodes}`, r.confirmed === r.nodes ? 'valid' : 'refused')),
          h('td', { class: 'num' }, `${r.took_ms.toFixed(1)} ms`),
          h('td', { class: 'mono' }, (r.missing || []).join(', ') || '—')))
          : h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'No revocation has waited for a receipt on this node.'))))));
    } catch (err) {
      if (alive) replace(receipts, notice(err.message));
    }
  };
  loadBlocks();
  loadEvents();
  loadReceipts();
  const timer = setInterval(() => { loadBlocks(); loadEvents(); loadReceipts(); }, 5000);
  return () => { alive = false; clearInterval(timer); };
}

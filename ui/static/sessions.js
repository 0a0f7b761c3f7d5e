// Sessions: the database connections and MCP sessions open through this node's gateways,
// each with a button that ends it, and the sessions that ended lately
// (from the audit log, so every node's).
import * as api from './api.js';
import { h, replace, when, ago, badge, tokenLink, notice, confirmDialog } from './dom.js';

const HEAD = ['Token', 'Subject', 'Source', 'Resource', 'Role', 'Started', 'Statements / requests', 'Node', ''];

export function sessionsView(root) {
  let alive = true;
  const open = h('div', { id: 'sessions-box' });
  const msg = h('div');
  const recent = h('div', { id: 'ended-box' });
  replace(root, h('h1', null, 'Sessions'),
    h('p', { class: 'muted' }, 'Database connections and MCP (agent) sessions admitted by a token and open now on the node that serves this page. ' +
      'Ending one closes it at once; the token still works, so revoke the token to keep it out.'),
    msg, open,
    h('h2', null, 'Ended lately'), recent);

  const load = async () => {
    try {
      const res = await api.v1('GET', '/sessions');
      if (!alive) return;
      replace(open, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, HEAD.map((x) => h('th', null, x)))),
        h('tbody', { id: 'sessions' }, res.sessions.length ? res.sessions.map((s) => h('tr', { 'data-session': s.id },
          h('td', null, tokenLink(s.token_id)),
          h('td', null, s.subject || '—'),
          h('td', { class: 'mono' }, s.client_ip || '—'),
          h('td', { class: 'mono' }, s.door === 'mcp' ? `mcp ${s.resource}` : s.resource),
          h('td', { class: 'mono' }, s.role || '—'),
          h('td', { class: 'mono nowrap', title: ago(s.started) }, when(s.started)),
          h('td', { class: 'num' }, String(s.statements)),
          h('td', { class: 'mono' }, s.node || '—'),
          h('td', null, h('button', { type: 'button', class: 'danger', 'data-action': 'end-session', onclick: () => end(s) }, 'End'))))
          : h('tr', null, h('td', { colspan: HEAD.length, class: 'muted' }, 'No session is open on this node.'))))));
    } catch (err) {
      if (alive) replace(open, notice(err.message));
    }
  };
  const loadEnded = async () => {
    try {
      const res = await api.v1('GET', '/audit' + api.query({ action: 'db.session_end', limit: 20 }));
      if (!alive) return;
      replace(recent, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, ['Ended', 'Token', 'Subject', 'Source', 'Why', 'By', 'Statements'].map((x) => h('th', null, x)))),
        h('tbody', { id: 'ended' }, res.events.length ? res.events.map((ev) => h('tr', null,
          h('td', { class: 'mono nowrap' }, when(ev.time)),
          h('td', null, tokenLink(ev.token_id)),
          h('td', null, ev.subject || '—'),
          h('td', { class: 'mono' }, ev.client_ip || '—'),
          h('td', null, badge(ev.reason || 'ended', ev.reason === 'client_closed' ? 'valid' : 'refused')),
          h('td', { class: 'mono' }, ev.actor || '—'),
          h('td', { class: 'num' }, String(ev.detail?.statements ?? '—'))))
          : h('tr', null, h('td', { colspan: 7, class: 'muted' }, 'No session has ended yet.'))))));
    } catch (err) {
      if (alive) replace(recent, notice(err.message));
    }
  };
  const end = async (s) => {
    const ok = await confirmDialog('End this session?',
      `The connection of ${s.subject || s.token_id} to ${s.resource} closes now; its client is told an administrator ended it.`,
      [], 'End session', true);
    if (!ok) return;
    replace(msg);
    try {
      await api.v1('DELETE', '/sessions/' + encodeURIComponent(s.id));
      replace(msg, notice('Session ended.', 'ok'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
    load();
    loadEnded();
  };
  load();
  loadEnded();
  const timer = setInterval(() => { load(); loadEnded(); }, 2000);
  return () => { alive = false; clearInterval(timer); };
}

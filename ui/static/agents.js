// Agents: the MCP gateway's tool calls held for a person (approve or deny
// them here), the last decided, and the pinned tool definitions an
// upstream has changed (accept the new one here). On a cluster the held
// calls of every node are listed, and deciding one works from any node.
import * as api from './api.js';
import { h, replace, when, ago, badge, tokenLink, notice, confirmDialog } from './dom.js';

const HELD = ['Held since', 'Server', 'Tool', 'Arguments', 'Token', 'Subject', 'Source', 'Deadline', ''];

function args(a) {
  if (a === undefined || a === null) return h('span', { class: 'muted' }, 'not kept');
  const text = JSON.stringify(a);
  return h('code', { class: 'args', title: text }, text.length > 200 ? text.slice(0, 200) + '…' : text);
}

export function agentsView(root) {
  let alive = true;
  const msg = h('div', { id: 'agents-msg' });
  const held = h('div', { id: 'held-box' });
  const decided = h('div', { id: 'decided-box' });
  const tools = h('div', { id: 'tools-box' });
  const clients = h('div', { id: 'clients-box' });
  replace(root, h('h1', null, 'Agents'),
    h('p', { class: 'muted' }, 'Tool calls the MCP gateway holds until a person decides (on a cluster, every node\'s). ' +
      'Approving needs latchkey:mcp:approve, and never the token that made the call. A call nobody decides is denied at its deadline.'),
    msg,
    h('h2', null, 'Held now'), held,
    h('h2', null, 'Decided lately'), decided,
    h('h2', null, 'Tool definitions'),
    h('p', { class: 'muted' }, 'Each upstream tool is pinned when first seen. A changed definition is hidden from agents and its calls refused until accepted.'),
    tools,
    h('h2', null, 'OAuth clients'),
    h('p', { class: 'muted' }, 'Apps and agents that obtain tokens from this server (docs/oauth.md): registered ones, and those known by their metadata document. ' +
      'Revoking a client revokes every token issued to it.'),
    clients);

  const decide = async (c, approve) => {
    if (!approve) {
      const ok = await confirmDialog('Deny this call?', `${c.tool} on ${c.server} is refused; the agent is told a person denied it.`, [], 'Deny', true);
      if (!ok) return;
    }
    replace(msg);
    try {
      const res = await api.v1('POST', `/mcp/holds/${encodeURIComponent(c.id)}/${approve ? 'approve' : 'deny'}`, {});
      replace(msg, notice(`${res.tool}: ${res.state}.`, 'ok'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
    load();
  };
  const accept = async (p) => {
    const ok = await confirmDialog(`Accept the new definition of ${p.tool}?`,
      'Agents will see it and may call the tool again. Read it first: a changed description is how a tool is turned against its users.',
      [], 'Accept', true);
    if (!ok) return;
    replace(msg);
    try {
      await api.v1('POST', `/mcp/tools/${encodeURIComponent(p.server)}/${encodeURIComponent(p.tool)}/accept`, { fingerprint: p.pending.fingerprint });
      replace(msg, notice(`${p.tool}: the new definition is accepted.`, 'ok'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
    load();
  };

  const revokeClient = async (c) => {
    const ok = await confirmDialog(`Revoke ${c.client_name || c.client_id}?`,
      'It can no longer obtain tokens, and every token issued to it (and its secret) is revoked now.', [], 'Revoke', true);
    if (!ok) return;
    replace(msg);
    try {
      const res = await api.v1('POST', '/oauth/clients/revoke', { client_id: c.client_id });
      replace(msg, notice(`${c.client_id}: revoked, with ${res.tokens_revoked} token(s).`, 'ok'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
    load();
  };

  const load = async () => {
    const [holds, pins, oc] = await Promise.all([
      api.v1('GET', '/mcp/holds').catch((e) => e),
      api.v1('GET', '/mcp/tools').catch((e) => e),
      api.v1('GET', '/oauth/clients').catch((e) => e),
    ]);
    if (!alive) return;
    if (holds instanceof Error) {
      replace(held, notice(holds.message));
    } else {
      replace(held, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, HELD.map((x) => h('th', null, x)))),
        h('tbody', { id: 'held' }, holds.held.length ? holds.held.map((c) => h('tr', { 'data-hold': c.id },
          h('td', { class: 'mono nowrap', title: ago(c.created) }, when(c.created)),
          h('td', { class: 'mono' }, c.server),
          h('td', { class: 'mono' }, c.tool),
          h('td', null, args(c.arguments)),
          h('td', null, tokenLink(c.token_id)),
          h('td', null, c.subject || '—'),
          h('td', { class: 'mono' }, c.client_ip || '—'),
          h('td', { class: 'mono nowrap' }, ago(c.deadline)),
          h('td', { class: 'nowrap' },
            h('button', { type: 'button', class: 'primary', 'data-action': 'approve-hold', onclick: () => decide(c, true) }, 'Approve'), ' ',
            h('button', { type: 'button', class: 'danger', 'data-action': 'deny-hold', onclick: () => decide(c, false) }, 'Deny'))))
          : h('tr', null, h('td', { colspan: HELD.length, class: 'muted' }, 'No call is held.'))))));
      const done = holds.decided.slice().reverse();
      replace(decided, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, ['Decided', 'Server', 'Tool', 'Token', 'State', 'By'].map((x) => h('th', null, x)))),
        h('tbody', { id: 'decided' }, done.length ? done.map((c) => h('tr', null,
          h('td', { class: 'mono nowrap' }, when(c.decided_at)),
          h('td', { class: 'mono' }, c.server),
          h('td', { class: 'mono' }, c.tool),
          h('td', null, tokenLink(c.token_id)),
          h('td', null, badge(c.state, c.state === 'approved' ? 'valid' : 'refused')),
          h('td', { class: 'mono' }, c.decided_by || '—')))
          : h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'Nothing decided yet.'))))));
    }
    if (pins instanceof Error) {
      replace(tools, notice(pins.message));
    } else {
      replace(tools, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, ['Server', 'Tool', 'Pinned', 'State', 'Description', ''].map((x) => h('th', null, x)))),
        h('tbody', { id: 'pins' }, pins.tools.length ? pins.tools.map((p) => h('tr', { 'data-pin': `${p.server}/${p.tool}`, class: p.pending ? 'changed' : '' },
          h('td', { class: 'mono' }, p.server),
          h('td', { class: 'mono' }, p.tool),
          h('td', { class: 'mono nowrap', title: p.fingerprint }, when(p.pinned_at)),
          h('td', null, p.pending ? badge('changed', 'refused') : badge('pinned', 'valid')),
          h('td', null, p.pending
            ? h('div', null, h('div', { class: 'muted' }, 'was: ', p.definition?.description || ''), h('div', null, 'now: ', h('strong', null, p.pending.definition?.description || '')))
            : (p.definition?.description || '')),
          h('td', null, p.pending ? h('button', { type: 'button', 'data-action': 'accept-tool', onclick: () => accept(p) }, 'Accept') : '')))
          : h('tr', null, h('td', { colspan: 6, class: 'muted' }, 'No tool has been seen yet.'))))));
    }
    if (oc instanceof Error) {
      replace(clients, notice(oc.message));
    } else {
      replace(clients, h('div', { class: 'scroll' }, h('table', null,
        h('thead', null, h('tr', null, ['Client', 'Name', 'Kind', 'Redirect URIs', 'Since', 'State', ''].map((x) => h('th', null, x)))),
        h('tbody', { id: 'oauth-clients' }, oc.clients.length ? oc.clients.map((c) => h('tr', { 'data-client': c.client_id },
          h('td', { class: 'mono' }, c.client_id),
          h('td', null, c.client_name || '—'),
          h('td', null, c.kind === 'metadata_document' ? 'metadata document' : c.token_endpoint_auth_method === 'none' ? 'public' : 'confidential'),
          h('td', { class: 'mono' }, c.redirect_uris.map((u) => h('div', null, u))),
          h('td', { class: 'mono nowrap' }, when(c.created_at)),
          h('td', null, c.revoked_at ? badge('revoked', 'refused') : badge('active', 'valid')),
          h('td', null, c.revoked_at ? '' : h('button', { type: 'button', class: 'danger', 'data-action': 'revoke-client', onclick: () => revokeClient(c) }, 'Revoke'))))
          : h('tr', null, h('td', { colspan: 7, class: 'muted' }, 'No OAuth client yet.'))))));
    }
  };
  load();
  const timer = setInterval(load, 1000);
  return () => { alive = false; clearInterval(timer); };
}

// Access requests (docs/tenancy.md): ask for a token that approvers must
// agree to, decide the requests you may approve, and collect an approved
// token with its claim code. The lists refresh every second, so an
// approver sees a new request within a second of its making.
import * as api from './api.js';
import { h, replace, when, ago, badge, tokenLink, notice, confirmDialog, copyButton, splitList } from './dom.js';

const STATE = { pending: 'warn', approved: 'valid', claimed: 'valid', denied: 'refused', expired: 'refused' };

function field(id, label, attrs = {}) {
  const input = h('input', Object.assign({ id, autocomplete: 'off', spellcheck: 'false' }, attrs));
  return [h('label', { for: id }, h('span', null, label), input), input];
}

// once shows a secret the page will never see again.
function once(id, heading, value, warning) {
  const input = h('input', { id, class: 'mono secret', readonly: true, value, 'aria-label': heading });
  input.addEventListener('focus', () => input.select());
  return h('div', { class: 'card once' }, h('h2', null, heading),
    h('p', { class: 'warning', role: 'alert' }, warning),
    h('div', { class: 'copy' }, input, copyButton(input)));
}

export function requestsView(root, me) {
  let alive = true;
  const msg = h('div', { id: 'requests-msg' });
  const pending = h('div', { id: 'pending-box' });
  const others = h('div', { id: 'others-box' });
  const shown = h('div', { id: 'shown-box' });

  const [scopeLabel, scopes] = field('r-scopes', 'Scopes', { placeholder: 'prod.orders:write', required: true });
  const [ttlLabel, ttl] = field('r-ttl', 'For', { placeholder: '1h', required: true });
  const [ksLabel, ks] = field('r-keyspace', 'Keyspace', { placeholder: 'your token\'s' });
  const [reasonLabel, reason] = field('r-reason', 'Reason', { placeholder: 'incident 4411', required: true, maxlength: 500 });
  const ask = h('form', { id: 'request-form', class: 'card' }, h('h2', null, 'Ask for access'),
    h('p', { class: 'muted' }, 'Approvers of the keyspace see the request at once. You get a claim code, shown once: with it you collect the token when they agree.'),
    scopeLabel, ttlLabel, ksLabel, reasonLabel,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Request')));
  ask.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(msg);
    try {
      const body = { scopes: splitList(scopes.value), ttl: ttl.value.trim(), reason: reason.value };
      if (ks.value.trim()) body.keyspace = ks.value.trim();
      const res = await api.v1('POST', '/access-requests', body);
      replace(shown, once('claim-code', `Request ${res.id}: your claim code`, res.claim_code,
        'Keep this code: it is shown once, and it is what collects the token once the request is approved.'));
      ask.reset();
      load();
    } catch (err) {
      replace(msg, notice(err.message));
    }
  });

  const [claimIDLabel, claimID] = field('c-request', 'Request', { placeholder: 'request id', required: true });
  const [claimCodeLabel, claimCode] = field('c-code', 'Claim code', { type: 'password', placeholder: 'lkclaim_…', required: true });
  const claim = h('form', { id: 'claim-form', class: 'card' }, h('h2', null, 'Collect an approved token'),
    claimIDLabel, claimCodeLabel, h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Collect')));
  claim.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(msg);
    const code = claimCode.value.trim();
    claimCode.value = '';
    try {
      const res = await api.v1('POST', `/access-requests/${encodeURIComponent(claimID.value.trim())}/claim`, { code });
      replace(shown, once('plaintext', 'Your token', res.token, 'Copy this token now. It is shown once and cannot be shown again.'));
      claim.reset();
      load();
    } catch (err) {
      replace(msg, notice(err.message));
    }
  });

  const decide = async (q, approve) => {
    let comment = '';
    if (!approve) {
      const ok = await confirmDialog('Deny this request?', `${q.requester} asked for ${q.scopes.join(' ')}. One denial ends the request.`, [], 'Deny', true);
      if (!ok) return;
    }
    replace(msg);
    try {
      const res = await api.v1('POST', `/access-requests/${encodeURIComponent(q.id)}/${approve ? 'approve' : 'deny'}`, { comment });
      replace(msg, notice(`Request ${res.id}: ${res.status} (${res.approvals.length} of ${res.approvals_required} approvals).`, 'ok'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
    load();
  };

  const row = (q, actions) => h('tr', { 'data-request': q.id },
    h('td', { class: 'mono nowrap', title: ago(q.created_at) }, when(q.created_at)),
    h('td', { class: 'mono' }, q.id),
    h('td', { class: 'mono' }, q.keyspace),
    h('td', null, q.requester, ' ', h('span', { class: 'muted' }, '(', tokenLink(q.requested_by), ')')),
    h('td', { class: 'mono' }, q.scopes.join(' ')),
    h('td', { class: 'mono' }, q.ttl),
    h('td', null, q.reason),
    h('td', { class: 'nowrap' }, `${q.approvals.length} / ${q.approvals_required}`,
      q.approvals.length ? h('div', { class: 'muted' }, q.approvals.map((v) => v.subject).join(', ')) : ''),
    h('td', null, badge(q.status, STATE[q.status] || 'warn')),
    h('td', { class: 'nowrap' }, actions ? actions(q) : (q.token_id ? tokenLink(q.token_id) : '')));
  const head = ['Asked', 'Request', 'Keyspace', 'Requester', 'Scopes', 'For', 'Reason', 'Approvals', 'State', ''];
  const table = (id, list, actions, empty) => h('div', { class: 'scroll' }, h('table', null,
    h('thead', null, h('tr', null, head.map((x) => h('th', null, x)))),
    h('tbody', { id }, list.length ? list.map((q) => row(q, actions))
      : h('tr', null, h('td', { colspan: head.length, class: 'muted' }, empty)))));

  const mine = (q) => q.requested_by === me.token_id || (me.subject && q.requester === me.subject);
  const load = async () => {
    let res;
    try {
      res = await api.v1('GET', '/access-requests');
    } catch (err) {
      if (alive) replace(pending, notice(err.message));
      return;
    }
    if (!alive) return;
    const open = res.requests.filter((q) => q.status === 'pending');
    replace(pending, table('pending', open, (q) => mine(q)
      ? h('span', { class: 'muted' }, 'your request')
      : [h('button', { type: 'button', class: 'primary', 'data-action': 'approve-request', onclick: () => decide(q, true) }, 'Approve'), ' ',
         h('button', { type: 'button', class: 'danger', 'data-action': 'deny-request', onclick: () => decide(q, false) }, 'Deny')],
    'No request is waiting.'));
    replace(others, table('decided', res.requests.filter((q) => q.status !== 'pending').slice(0, 50), null, 'Nothing decided yet.'));
  };

  replace(root, h('h1', null, 'Access requests'),
    h('p', { class: 'muted' }, 'A keyspace\'s policy names the scopes that may be requested and how many approvers each needs. ' +
      'Approving needs latchkey:approve in the request\'s keyspace, and never the requester\'s own token or subject. A request nobody decides expires.'),
    msg, shown,
    h('h2', null, 'Waiting for a decision'), pending,
    h('h2', null, 'Decided'), others,
    h('div', { class: 'cards' }, ask, claim));
  load();
  const timer = setInterval(load, 1000);
  return () => { alive = false; clearInterval(timer); };
}

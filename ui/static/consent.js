// The OAuth consent page: a client (an agent, an app) asks to act for
// the signed-in person. The person sees who asks, for which resource and
// which scopes, may untick scopes, and approves or denies. What the
// client gets is a token derived from the person's own: never more than
// it holds, revoked with it.
import { h, replace, notice } from './dom.js';

async function call(method, id, body, csrf) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  const res = await fetch('/ui/api/oauth/requests/' + encodeURIComponent(id), {
    method, headers, credentials: 'same-origin', cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) throw new Error(data?.error?.message || res.statusText);
  return data;
}

function hostOf(uri) {
  try { return new URL(uri).host || uri; } catch { return uri; }
}

export function consentView(view, id, me) {
  let stopped = false;
  replace(view, h('p', { class: 'muted' }, 'Loading the request…'));
  (async () => {
    let req;
    try {
      req = await call('GET', id);
    } catch (err) {
      if (!stopped) replace(view, h('div', { class: 'card consent' }, h('h1', null, 'Authorization request'), notice(err.message)));
      return;
    }
    if (stopped) return;
    const boxes = [];
    const rows = req.scopes.map((sc) => {
      const box = h('input', { type: 'checkbox', value: sc.scope, checked: sc.held, disabled: !sc.held, 'aria-describedby': 'scope-' + boxes.length });
      boxes.push(box);
      const note = sc.held
        ? (sc.grants.length === 1 && sc.grants[0] === sc.scope ? '' : 'you hold: ' + sc.grants.join(', '))
        : 'your token does not hold this: it cannot be delegated';
      return h('li', null, h('label', null, box, ' ', h('span', { class: 'mono' }, sc.scope)),
        note ? h('div', { class: 'muted', id: 'scope-' + (boxes.length - 1) }, note) : null);
    });
    const status = h('div', { role: 'status', 'aria-live': 'polite' });
    const approve = h('button', { type: 'button', class: 'primary', id: 'consent-approve' }, 'Approve');
    const deny = h('button', { type: 'button', class: 'danger', id: 'consent-deny' }, 'Deny');
    const name = req.client_name || hostOf(req.client_id);
    const decide = async (yes) => {
      approve.disabled = deny.disabled = true;
      replace(status);
      try {
        const kept = boxes.filter((b) => b.checked && !b.disabled).map((b) => b.value);
        if (yes && kept.length === 0) throw new Error('Keep at least one scope, or deny the request.');
        const out = await call('POST', id, yes ? { approve: true, scopes: kept } : { approve: false }, me.csrf_token);
        replace(status, notice((yes ? 'Approved' : 'Denied') + ': returning to ' + hostOf(out.redirect_to) + '…', 'ok'));
        location.assign(out.redirect_to);
      } catch (err) {
        approve.disabled = deny.disabled = false;
        replace(status, notice(err.message));
      }
    };
    approve.addEventListener('click', () => decide(true));
    deny.addEventListener('click', () => decide(false));
    replace(view, h('div', { class: 'card consent', id: 'consent' },
      h('h1', null, 'Authorize ', h('span', { id: 'consent-client' }, name)),
      h('p', null, h('strong', null, name), ' wants to act for you (', h('span', { class: 'mono' }, me.subject || me.token_id), ').'),
      h('dl', null,
        h('dt', null, 'Client'), h('dd', { class: 'mono' }, req.client_id),
        req.client_uri ? [h('dt', null, 'Says it is'), h('dd', { class: 'mono' }, req.client_uri)] : null,
        h('dt', null, 'Answer goes to'), h('dd', { class: 'mono', id: 'consent-redirect' }, hostOf(req.redirect_uri)),
        h('dt', null, 'For'), h('dd', null, req.resources.map((r) => h('div', { class: 'mono' }, r))),
        h('dt', null, 'Token lasts'), h('dd', null, req.access_ttl + ', renewable until you revoke it or your own token ends')),
      h('fieldset', null, h('legend', null, 'Scopes (untick what you do not want to give)'), h('ul', { class: 'plain', id: 'consent-scopes' }, rows)),
      h('p', { class: 'muted' }, 'The client gets a token derived from yours: never more than yours holds, and revoked when yours is.'),
      status,
      h('div', { class: 'actions' }, approve, ' ', deny)));
    approve.focus();
  })();
  return () => { stopped = true; };
}

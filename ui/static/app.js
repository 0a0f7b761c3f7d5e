// The dashboard's shell: sign-in, navigation and the views.
import * as api from './api.js';
import { h, replace, notice, labelCells, usingUTC, setUTC, zoneName } from './dom.js';
import { liveView } from './live.js';
import { tokensView, tokenView, createView } from './tokens.js';
import { securityView } from './security.js';
import { sessionsView } from './sessions.js';
import { agentsView } from './agents.js';
import { auditView } from './audit.js';
import { consentView } from './consent.js';
import { requestsView } from './requests.js';

const main = document.getElementById('main');

// Every table row drawn in a view gets its cells labelled for the narrow
// screen's cards, however the view built it.
new MutationObserver((changes) => {
  for (const c of changes) for (const n of c.addedNodes) if (n.nodeType === 1) labelCells(n);
}).observe(main, { childList: true, subtree: true });

// The zone switch: every date is drawn in the browser's zone or in UTC;
// switching redraws the view.
const zoneBtn = document.getElementById('zone');
function showZone() {
  replace(zoneBtn, h('span', { class: 'wide' }, 'Times in '), usingUTC() ? 'UTC' : `local (${zoneName()})`);
}
zoneBtn.addEventListener('click', () => {
  setUTC(!usingUTC());
  showZone();
  if (me) route();
});
showZone();
const nav = document.getElementById('nav');
const who = document.getElementById('who');
const signoutBtn = document.getElementById('signout');
let cleanup = null;
let me = null;

function stopView() {
  if (cleanup) {
    try { cleanup(); } catch { /* the view is gone anyway */ }
    cleanup = null;
  }
}

// consentID is the OAuth request the page was opened for, if any.
function consentID() {
  const m = /^#\/consent\/([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  return m ? m[1] : '';
}

function showSignIn(message) {
  stopView();
  me = null;
  nav.hidden = true;
  signoutBtn.hidden = true;
  replace(who);
  const consent = consentID() !== '';
  const label = consent ? 'Your token' : 'Admin token';
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'off', spellcheck: 'false',
    required: true, placeholder: 'lk_…', 'aria-label': label });
  const status = h('div');
  const form = h('form', { class: 'signin card', id: 'signin' },
    h('h1', null, consent ? 'Sign in to answer an authorization request' : 'Sign in'),
    h('p', { class: 'muted' }, consent
      ? 'An application asks to act for you. Paste your own latchkey token: what you approve is delegated from it, never more. ' +
        'It is exchanged for a session cookie and never kept by this page.'
      : 'Paste an admin token: one holding latchkey:admin, latchkey:audit:read to watch without changing anything, ' +
        'or latchkey:approve (a keyspace\'s, too) to decide access requests. ' +
        'It is exchanged for a session cookie and never kept by this page.'),
    h('label', null, h('span', null, label), input),
    status,
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  if (message) status.append(notice(message));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    input.value = '';
    replace(status);
    try {
      me = await api.signIn(token, consent ? 'consent' : '');
      moved = true; // the form that had focus goes: focus the first view's heading
      signedIn();
    } catch (err) {
      replace(status, notice(err.message));
    }
  });
  replace(main, form);
  input.focus();
}

function signedIn() {
  nav.hidden = consentID() !== '';
  signoutBtn.hidden = false;
  replace(who, 'Signed in as ', h('span', { class: 'mono' }, me.token_id), me.subject ? ` (${me.subject})` : '');
  route();
}

signoutBtn.addEventListener('click', async () => {
  try {
    await api.signOut();
  } catch { /* the session is over either way */ }
  location.hash = '#/live';
  showSignIn('Signed out.');
});

api.setSignedOutHandler((err) => showSignIn(err.message || 'Your session has ended; sign in again.'));

// The skip link moves focus past the header to the view (the hash is the
// router's, so the link cannot simply point at #main).
document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

function route() {
  if (!me) return;
  stopView();
  const path = (location.hash || '#/live').slice(1);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const current = parts[0] === 'consent' ? '' : (parts[0] || 'live');
  for (const a of nav.querySelectorAll('a')) {
    a.classList.toggle('active', a.dataset.view === current);
    if (a.dataset.view === current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const name = nav.querySelector(`a[data-view="${current}"]`)?.textContent || (parts[0] === 'consent' ? 'Consent' : 'Live');
  document.title = `${name} · latchkey`;
  const view = h('section', { class: 'view' });
  replace(main, view);
  try {
    if (parts[0] === 'consent' && parts[1]) cleanup = consentView(view, parts[1], me);
    else if (parts[0] === 'tokens' && parts[1] === 'new') cleanup = createView(view);
    else if (parts[0] === 'tokens' && parts[1]) cleanup = tokenView(view, parts[1]);
    else if (parts[0] === 'tokens') cleanup = tokensView(view);
    else if (parts[0] === 'security') cleanup = securityView(view);
    else if (parts[0] === 'sessions') cleanup = sessionsView(view);
    else if (parts[0] === 'agents') cleanup = agentsView(view);
    else if (parts[0] === 'requests') cleanup = requestsView(view, me);
    else if (parts[0] === 'audit') cleanup = auditView(view, { token_id: parts[1] || '', client_ip: parts[2] || '' });
    else cleanup = liveView(view);
  } catch (err) {
    replace(view, notice(err.message));
  }
  if (moved) focusHeading(view);
}

// moved says the route changed because the operator went somewhere (not
// the first view after signing in): focus then goes to the new view's
// heading, so that a screen reader announces where they are and the
// keyboard starts from there, not from the top of the page.
let moved = false;

// focusHeading focuses view's heading once the view has drawn it (some
// views draw after a read), unless the operator has moved focus into the
// view meanwhile.
function focusHeading(view) {
  const began = performance.now();
  const tryFocus = () => {
    if (!view.isConnected || view.contains(document.activeElement)) return;
    const h1 = view.querySelector('h1');
    if (h1) {
      h1.setAttribute('tabindex', '-1');
      h1.focus({ preventScroll: true });
    } else if (performance.now() - began < 2000) {
      requestAnimationFrame(tryFocus);
    }
  };
  requestAnimationFrame(tryFocus);
}

window.addEventListener('hashchange', () => { moved = true; route(); });

(async () => {
  try {
    me = await api.session();
    signedIn();
  } catch (err) {
    showSignIn(err.status === 401 ? '' : err.message);
  }
})();

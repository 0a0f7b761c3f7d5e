// Tokens: the list, one token's page, creating and deriving, and the
// lifecycle actions.
import * as api from './api.js';
import { h, replace, when, ago, badge, tokenLink, notice, confirmDialog, copyButton, splitList, recordHead, recordRow, exportLinks, copyText, timeCell, field, filterZone } from './dom.js';

// The columns of a token's recent attempts.
const ATTEMPTS = ['time', 'outcome', 'source', 'request', 'latency', 'reason'];
// The columns of a token's tool calls through the MCP gateway.
const TOOL_CALLS = ['time', 'outcome', 'request', 'latency', 'reason'];

function statusBadge(t) {
  if (t.status === 'active' && t.expires_at && new Date(t.expires_at) <= new Date()) return badge('expired', 'refused');
  const cls = { active: 'valid', suspended: 'warn', revoked: 'refused' }[t.status] || 'refused';
  return badge(t.status, cls);
}

function scopesList(scopes) {
  if (!scopes || scopes.length === 0) return h('span', { class: 'muted' }, 'none');
  return h('span', { class: 'chips' }, scopes.map((sc) => h('code', { class: 'chip' }, sc)));
}

// The list's orders and usage filters, as the API names them.
const SORTS = [
  ['', 'Newest first', {}],
  ['oldest', 'Oldest first', { sort: 'created', order: 'asc' }],
  ['expires', 'Expiring soonest', { sort: 'expires' }],
  ['expires-last', 'Expiring last', { sort: 'expires', order: 'desc' }],
  ['used', 'Recently used', { sort: 'last_used' }],
  ['unused', 'Least recently used', { sort: 'last_used', order: 'asc' }],
];
const USAGE = [
  ['', 'Any', {}],
  ['exp7', 'Expiring within 7 days', { expires_within: '7d' }],
  ['exp30', 'Expiring within 30 days', { expires_within: '30d' }],
  ['idle30', 'Not used for 30 days', { unused_for: '30d' }],
  ['idle90', 'Not used for 90 days', { unused_for: '90d' }],
  ['never', 'Never used', { never_used: true }],
  ['due', 'Rotation due', { rotation_due: true }],
];

// A whole token pasted into the search: only its id is searched for (the
// secret never leaves the page).
const TOKEN = /^([a-z][a-z0-9]*(?:_[a-z][a-z0-9]*)*)_([0-9A-Za-z]{16})_[0-9A-Za-z]{49}$/;

export function tokensView(root) {
  let f = {};
  const search = h('input', { type: 'search', name: 'q', id: 'f-q', placeholder: 'name, subject, tag or id', maxlength: 200, autocomplete: 'off' });
  const status = h('select', { name: 'status', id: 'f-status' },
    ['', 'active', 'suspended', 'revoked', 'expired', 'rotated'].map((v) => h('option', { value: v }, v || 'Any')));
  const usage = h('select', { name: 'usage', id: 'f-usage' }, USAGE.map(([v, l]) => h('option', { value: v }, l)));
  const subject = h('input', { name: 'subject', id: 'f-subject', placeholder: 'exact subject' });
  const tag = h('input', { name: 'tag', id: 'f-tag', placeholder: 'exact tag' });
  const sort = h('select', { name: 'sort', id: 'f-sort' }, SORTS.map(([v, l]) => h('option', { value: v }, l)));
  const newLink = h('a', { href: '#/tokens/new', class: 'button primary', id: 'new-token' }, 'New token');
  const form = filterZone('form', 'token-filters', 'Find tokens',
    field('Search', search), field('Status', status), field('Usage', usage), field('Subject', subject), field('Tag', tag),
    field('Order', sort),
    h('button', { type: 'submit' }, 'Show'));
  const tbody = h('tbody', { id: 'tokens' });
  const more = h('button', { type: 'button', hidden: true }, 'Load more');
  const msg = h('div');
  const total = h('span', { class: 'count', id: 'tokens-total', role: 'status' });
  const exports = exportLinks('tokens-export', (format) => api.exportURL('tokens', f, format));
  replace(root, h('h1', null, 'Tokens', newLink), form, msg,
    h('div', { class: 'list-head' }, total, exports.el),
    h('div', { class: 'scroll' }, h('table', null,
      h('thead', null, h('tr', null, ['Name', 'Id', 'Subject', 'Status', 'Scopes', 'Created', 'Expires', 'Last used'].map((t) => h('th', null, t)))),
      tbody)),
    more);

  // Offboarding: revoke every token of the filtered subject or tag at
  // once (POST /v1/revocations), derived ones included.
  const bulk = h('button', { type: 'button', class: 'danger', id: 'revoke-matching', hidden: true }, 'Revoke all matching');
  bulk.addEventListener('click', async () => {
    const [field, value] = f.subject ? ['subject', f.subject] : ['tag', f.tag];
    const v = await confirmDialog(`Revoke every token with ${field} ${value}?`,
      `Every token whose ${field} is "${value}", and every token derived from them, stops working at once, on every node. This cannot be undone.`,
      [{ name: 'reason', label: 'Reason (recorded in the audit log)', placeholder: 'offboarding' }], 'Revoke all', true);
    if (!v) return;
    try {
      const res = await api.v1('POST', '/revocations', { [field]: value, reason: v.reason });
      await load(false);
      msg.prepend(notice(`Revoked ${res.revoked} token(s).`, 'ok'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
  });
  exports.el.append(bulk);
  let cursor = '';
  let alive = true;
  const load = async (append) => {
    replace(msg);
    try {
      const page = await api.v1('GET', '/tokens' + api.query({ ...f, cursor: append ? cursor : '', limit: 50, count: !append }));
      if (!alive) return;
      const rows = page.tokens.map((t) => h('tr', { 'data-id': t.id },
        h('td', null, h('a', { href: `#/tokens/${encodeURIComponent(t.id)}`, class: 'name' }, t.name || '(unnamed)')),
        h('td', { class: 'mono nowrap' }, t.id),
        h('td', null, t.subject || '—'),
        h('td', null, statusBadge(t)),
        h('td', null, scopesList(t.scopes)),
        timeCell(t.created_at),
        timeCell(t.expires_at),
        timeCell(t.last_used_at)));
      if (append) tbody.append(...rows);
      else tbody.replaceChildren(...rows);
      if (!append && rows.length === 0) tbody.append(h('tr', null, h('td', { colspan: 8, class: 'muted' }, 'No tokens match.')));
      if (!append && page.total !== undefined) {
        replace(total, `${page.total.toLocaleString('en-US')} token${page.total === 1 ? '' : 's'}`);
      }
      cursor = page.next_cursor || '';
      more.hidden = !cursor;
    } catch (err) {
      replace(msg, notice(err.message));
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    let q = search.value.trim();
    const m = TOKEN.exec(q);
    if (m) {
      q = m[2];
      search.value = q;
    }
    f = { q, status: status.value, subject: subject.value.trim(), tag: tag.value.trim(),
      ...USAGE.find(([v]) => v === usage.value)[2], ...SORTS.find(([v]) => v === sort.value)[2] };
    bulk.hidden = !f.subject === !f.tag; // the API revokes by exactly one of them
    exports.set();
    load(false).then(() => {
      if (m) msg.append(notice('That was a whole token, secret included: only its id was searched for. The secret was not sent.', 'ok'));
    });
  });
  more.addEventListener('click', () => load(true));
  load(false);
  return () => { alive = false; };
}

// grantFields are the inputs shared by create and derive.
function grantFields(prefill = {}) {
  const field = (name, label, attrs = {}, help = '') => {
    const input = h('input', { name, id: `c-${name}`, ...attrs });
    return [input, h('label', null, h('span', null, label), input, help ? h('small', { class: 'muted' }, help) : null)];
  };
  const parts = {
    name: field('name', 'Name', { required: true, maxlength: 200 }),
    subject: field('subject', 'Subject', { placeholder: 'user:42, service:billing…', value: prefill.subject || '', readonly: prefill.lockSubject },
      prefill.lockSubject ? 'A derived token keeps its parent\'s subject.' : ''),
    scopes: field('scopes', 'Scopes', { placeholder: 'billing.invoices:read orders:write', value: (prefill.scopes || []).join(' ') }, 'Separated by spaces or commas.'),
    ttl: field('ttl', 'Time to live', { placeholder: '30d, 12h' }, 'Empty: the server\'s default policy.'),
    tags: field('tags', 'Tags', { placeholder: 'ci, team-payments' }),
    idle_timeout: field('idle_timeout', 'Idle timeout', { placeholder: '7d' }, 'Expires when unused this long.'),
    allowed_cidrs: field('allowed_cidrs', 'Allowed networks', { placeholder: '10.0.0.0/8 2001:db8::/32' }),
    allowed_methods: field('allowed_methods', 'Allowed methods', { placeholder: 'GET HEAD' }),
    allowed_paths: field('allowed_paths', 'Allowed paths', { placeholder: '/v1/invoices/**' }),
    rate_limit: field('rate_limit', 'Rate limit', { placeholder: '100/1m' }, 'Requests per window, e.g. 100/1m.'),
    max_uses: field('max_uses', 'Usage limit', { type: 'number', min: 0, placeholder: 'unlimited' }),
  };
  const meta = h('textarea', { name: 'meta', id: 'c-meta', rows: 3, placeholder: '{"team": "payments"}' });
  const el = h('div', { class: 'grid-form' },
    h('fieldset', null, h('legend', null, 'Grant'), parts.name[1], parts.subject[1], parts.scopes[1], parts.ttl[1], parts.tags[1],
      h('label', null, h('span', null, 'Metadata (JSON object)'), meta)),
    h('fieldset', null, h('legend', null, 'Constraints'), parts.idle_timeout[1], parts.allowed_cidrs[1], parts.allowed_methods[1],
      parts.allowed_paths[1], parts.rate_limit[1], parts.max_uses[1]));
  const read = () => {
    const v = (k) => parts[k][0].value.trim();
    const body = { name: v('name'), subject: v('subject'), scopes: splitList(v('scopes')) };
    if (v('ttl')) body.ttl = v('ttl');
    if (v('tags')) body.tags = splitList(v('tags'));
    if (v('idle_timeout')) body.idle_timeout = v('idle_timeout');
    for (const k of ['allowed_cidrs', 'allowed_methods', 'allowed_paths']) if (v(k)) body[k] = splitList(v(k));
    if (v('rate_limit')) {
      const m = /^(\d+)\s*\/\s*(\S+)$/.exec(v('rate_limit'));
      if (!m) throw new Error('Rate limit: write it as requests/window, e.g. 100/1m.');
      body.rate_limit = { limit: Number(m[1]), window: m[2] };
    }
    if (v('max_uses')) body.max_uses = Number(v('max_uses'));
    if (meta.value.trim()) {
      try { body.meta = JSON.parse(meta.value); } catch { throw new Error('Metadata must be a JSON object.'); }
    }
    return body;
  };
  return { el, read };
}

// shownOnce displays a new token's plaintext, the only time it exists.
function shownOnce(token, plaintext, heading) {
  const input = h('input', { id: 'plaintext', class: 'mono secret', readonly: true, value: plaintext, 'aria-label': 'New token' });
  input.addEventListener('focus', () => input.select());
  return h('div', { class: 'card once', id: 'created' },
    h('h2', null, heading),
    h('p', { class: 'warning', role: 'alert' }, 'Copy this token now. It is shown once and cannot be shown again: latchkey keeps only a keyed hash of it.'),
    h('div', { class: 'copy' }, input, copyButton(input)),
    h('p', null, 'Token ', tokenLink(token.id), token.name ? ` (${token.name})` : '', '.'));
}

export function createView(root) {
  const grants = grantFields();
  const msg = h('div');
  const form = h('form', { id: 'create-form', class: 'card' }, grants.el, msg,
    h('div', { class: 'actions' }, h('a', { href: '#/tokens', class: 'button quiet' }, 'Cancel'), h('button', { type: 'submit', class: 'primary' }, 'Create token')));
  replace(root, h('h1', null, 'New token'), form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(msg);
    let body;
    try { body = grants.read(); } catch (err) { replace(msg, notice(err.message)); return; }
    try {
      const res = await api.v1('POST', '/tokens', body);
      replace(root, h('h1', null, 'Token created'), shownOnce(res, res.token, 'Your new token'),
        h('p', null, h('a', { href: '#/tokens', class: 'button' }, 'Back to tokens')));
    } catch (err) {
      replace(msg, notice(err.message));
    }
  });
  return () => {};
}

function dl(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

export function tokenView(root, id) {
  let alive = true;
  // load (re)draws the page; keep is a panel to show above the details
  // (a new plaintext, which must survive the redraw).
  const load = async (flash, keep) => {
    let t;
    try {
      t = await api.v1('GET', `/tokens/${encodeURIComponent(id)}`);
    } catch (err) {
      replace(root, h('h1', null, 'Token'), notice(err.message));
      return;
    }
    if (!alive) return;
    const [children, attempts, toolCalls] = await Promise.all([
      api.v1('GET', '/tokens' + api.query({ parent: id, limit: 50 })).catch((e) => e),
      api.v1('GET', '/audit' + api.query({ token_id: id, kind: 'verify', limit: 20 })).catch((e) => e),
      api.v1('GET', '/audit' + api.query({ token_id: id, action: 'mcp.request', limit: 20 })).catch((e) => e),
    ]);
    if (!alive) return;
    const c = t.constraints || t;
    const rate = c.rate_limit ? `${c.rate_limit.limit} per ${c.rate_limit.window}` : null;
    const actions = h('div', { class: 'actions left', id: 'actions' });
    const act = (label, cls, fn) => actions.append(h('button', { type: 'button', class: cls, 'data-action': label.toLowerCase(), onclick: fn }, label));
    const out = h('div', { id: 'action-result' });
    const run = async (f) => {
      replace(out);
      try { await f(); } catch (err) { replace(out, notice(err.message)); }
    };
    if (t.status !== 'revoked') {
      act('Revoke', 'danger', () => run(async () => {
        const v = await confirmDialog('Revoke this token?', `Revoking ${t.name || t.id} is final: it and every token derived from it stop working at once, on every node.`,
          [{ name: 'reason', label: 'Reason (recorded in the audit log)', placeholder: 'leaked in a log' }], 'Revoke', true);
        if (!v) return;
        await api.v1('POST', `/tokens/${encodeURIComponent(id)}/revoke`, { reason: v.reason });
        load('Revoked.');
      }));
    }
    if (t.status !== 'revoked') act('Edit', '', () => run(() => editForm(out, t, (flash) => load(flash))));
    if (t.status === 'active') {
      act('Suspend', 'warn', () => run(async () => {
        const v = await confirmDialog('Suspend this token?', 'It and its derived tokens are refused until resumed.',
          [{ name: 'reason', label: 'Reason', placeholder: 'investigating' }], 'Suspend', true);
        if (!v) return;
        await api.v1('POST', `/tokens/${encodeURIComponent(id)}/suspend`, { reason: v.reason });
        load('Suspended.');
      }));
      if (!t.successor_id) act('Rotate', '', () => run(async () => {
        const v = await confirmDialog('Rotate this token?', 'A successor is issued with the same grants. Choose how long the old token keeps working.',
          [{ name: 'grace', label: 'Grace period', value: '24h', options: [['0s', 'none: stop at once'], ['1h', '1 hour'], ['24h', '24 hours'], ['7d', '7 days']] }], 'Rotate');
        if (!v) return;
        const res = await api.v1('POST', `/tokens/${encodeURIComponent(id)}/rotate`, { grace: v.grace });
        load(`Rotated: this token now expires ${ago(res.predecessor?.expires_at)}.`, shownOnce(res, res.token, 'The successor'));
      }));
      act('Derive', '', () => run(() => deriveForm(out, t, (panel) => load('Derived.', panel))));
    }
    if (t.status === 'suspended') {
      act('Resume', 'primary', () => run(async () => {
        const v = await confirmDialog('Resume this token?', 'It works again (unless an ancestor is still suspended).', [], 'Resume');
        if (!v) return;
        await api.v1('POST', `/tokens/${encodeURIComponent(id)}/resume`, {});
        load('Resumed.');
      }));
    }
    const kids = children instanceof Error ? notice(children.message)
      : children.tokens.length ? h('ul', { class: 'plain' }, children.tokens.map((k) => h('li', null, tokenLink(k.id), ' ', k.name || '', ' ', statusBadge(k))))
        : h('span', { class: 'muted' }, 'none');
    const calls = toolCalls instanceof Error ? notice(toolCalls.message)
      : toolCalls.events.length ? h('div', { class: 'scroll' }, h('table', { class: 'feed' },
        recordHead(TOOL_CALLS),
        h('tbody', { id: 'tool-calls' }, toolCalls.events.map((ev) => recordRow(ev, TOOL_CALLS))))) : null;
    const recent = attempts instanceof Error ? notice(attempts.message)
      : h('div', { class: 'scroll' }, h('table', { class: 'feed' },
        recordHead(ATTEMPTS),
        h('tbody', { id: 'attempts' }, attempts.events.length ? attempts.events.map((ev) => recordRow(ev, ATTEMPTS))
          : h('tr', null, h('td', { colspan: ATTEMPTS.length, class: 'muted' }, 'No attempts on record.')))));
    // A redraw after an action (revoke, suspend...) replaces the button
    // that had focus: focus goes to the page's heading, not to <body>.
    const hadFocus = root.contains(document.activeElement) || document.activeElement === document.body;
    replace(root,
      h('p', null, h('a', { href: '#/tokens' }, '← Tokens')),
      h('h1', null, h('span', { id: 'token-name' }, t.name || '(unnamed)'), ' ', statusBadge(t)),
      flash ? notice(flash, 'ok') : null,
      actions, keep ? build(out, keep) : out,
      h('div', { class: 'columns' },
        h('div', { class: 'card' }, h('h2', null, 'Token'), dl([
          ['Id', [h('span', { class: 'mono', id: 'token-id' }, t.id), ' ', copyText(t.id, 'token id')]],
          ['Prefix', h('span', { class: 'mono' }, t.prefix)],
          ['Subject', t.subject || '—'],
          ['Created', `${when(t.created_at)} by ${t.created_by || '—'}`],
          ['Expires', t.expires_at ? `${when(t.expires_at)} (${ago(t.expires_at)})` : 'never'],
          t.not_before && ['Not before', when(t.not_before)],
          ['Last used', t.last_used_at ? `${when(t.last_used_at)} (${ago(t.last_used_at)})` : 'never'],
          t.uses != null && ['Uses', String(t.uses)],
          t.revoked_at && ['Revoked', `${when(t.revoked_at)} by ${t.revoked_by || '—'}: ${t.revoked_reason || 'no reason given'}`],
          t.suspended_at && ['Suspended', `${when(t.suspended_at)} by ${t.suspended_by || '—'}: ${t.suspended_reason || 'no reason given'}` +
            (t.suspended_via && t.suspended_via !== t.id ? ` (via ${t.suspended_via})` : '')],
          ['Tags', t.tags && t.tags.length ? t.tags.join(', ') : '—'],
          ['Metadata', h('code', null, JSON.stringify(t.meta ?? {}))],
        ])),
        h('div', { class: 'card' }, h('h2', null, 'Grants'), scopesList(t.scopes),
          h('h2', null, 'Constraints'), dl([
            ['Idle timeout', c.idle_timeout || '—'],
            ['Networks', c.allowed_cidrs?.length ? c.allowed_cidrs.join(', ') : 'any'],
            ['Methods', c.allowed_methods?.length ? c.allowed_methods.join(', ') : 'any'],
            ['Paths', c.allowed_paths?.length ? c.allowed_paths.join(', ') : 'any'],
            ['Audience', c.audience?.length ? c.audience.join(', ') : 'any resource'],
            ['Rate limit', rate || 'none'],
            ['Usage limit', c.max_uses ? String(c.max_uses) : 'none'],
          ])),
        h('div', { class: 'card' }, h('h2', null, 'Lineage'), dl([
          ['Parent', tokenLink(t.parent_id)],
          t.ancestors?.length && ['Ancestors', h('span', null, t.ancestors.map((a) => [tokenLink(a), ' ']))],
          ['Predecessor', tokenLink(t.predecessor_id)],
          ['Successor', tokenLink(t.successor_id)],
          t.rotated_at && ['Rotated', when(t.rotated_at)],
          ['Children', kids],
        ]))),
      h('h2', null, 'Recent attempts ', h('a', { href: `#/audit/${encodeURIComponent(id)}`, class: 'quiet-link', id: 'all-records' }, '(all records)')), recent,
      sources,
      calls ? h('h2', null, 'Tool calls (MCP)') : null, calls);
    sourcesPanel(sources, id);
    if (flash && hadFocus && !root.contains(document.activeElement)) {
      const h1 = root.querySelector('h1');
      h1.setAttribute('tabindex', '-1');
      h1.focus();
    }
  };
  const sources = h('section', { id: 'sources', 'aria-labelledby': 'sources-heading' });
  load();
  return () => { alive = false; };
}

// The windows a token's sources can be counted over.
const WINDOWS = [['1h', 'the last hour', 3600], ['24h', 'the last 24 hours', 86400], ['7d', 'the last 7 days', 7 * 86400], ['30d', 'the last 30 days', 30 * 86400]];
// The outcomes a source's counts are shown for, in this order; the rest
// are summed as "other refusals".
const SOURCE_OUTCOMES = ['VALID', 'OK'];

// sourcesPanel fills el with who used token id from where: its records
// over a chosen window tallied by client address on the server
// (GET /v1/audit/sources), each address a link to its records.
function sourcesPanel(el, id, win = '24h') {
  const pick = h('select', { id: 'sources-window', 'aria-label': 'Window' },
    WINDOWS.map(([v, label]) => h('option', { value: v, selected: v === win }, label)));
  const body = h('div', { id: 'sources-body' }, h('p', { class: 'muted' }, 'Counting…'));
  replace(el, h('h2', { id: 'sources-heading' }, 'Sources'), h('div', { class: 'toolbar' }, h('label', { class: 'inline' }, 'over ', pick)), body);
  pick.addEventListener('change', () => sourcesPanel(el, id, pick.value));
  const secs = WINDOWS.find(([v]) => v === win)[2];
  api.v1('GET', '/audit/sources' + api.query({ token_id: id, since: new Date(Date.now() - secs * 1000).toISOString() })).then((rep) => {
    if (!el.isConnected) return;
    if (rep.sources.length === 0) {
      replace(body, h('p', { class: 'muted' }, 'No records in this window.'));
      return;
    }
    const refused = (u) => Object.entries(u.outcomes).filter(([o]) => !SOURCE_OUTCOMES.includes(o)).reduce((n, [, c]) => n + c, 0);
    const detail = (u) => Object.entries(u.outcomes).sort().map(([o, c]) => `${o} ${c}`).join(', ');
    replace(body,
      h('p', { class: 'muted', id: 'sources-summary' }, `${rep.records.toLocaleString()} records from ${rep.total_sources.toLocaleString()} address(es)` +
        (rep.truncated ? `; the busiest ${rep.sources.length.toLocaleString()} are shown` : '') + '.'),
      h('div', { class: 'scroll' }, h('table', { class: 'feed', id: 'sources-table' },
        h('thead', null, h('tr', null, ['Address', 'Attempts', 'Allowed', 'Refused', 'First seen', 'Last seen', 'Outcomes'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, rep.sources.map((u) => h('tr', null,
          h('td', { class: 'mono' }, u.address
            ? [h('a', { href: `#/audit/${encodeURIComponent(id)}/${encodeURIComponent(u.address)}` }, u.address), ' ', copyText(u.address, `address ${u.address}`)]
            : h('span', { class: 'muted' }, '(none)')),
          h('td', null, u.attempts.toLocaleString()),
          h('td', null, SOURCE_OUTCOMES.reduce((n, o) => n + (u.outcomes[o] || 0), 0).toLocaleString()),
          h('td', null, refused(u).toLocaleString()),
          h('td', { title: u.first_seen }, when(u.first_seen)),
          h('td', { title: u.last_seen }, when(u.last_seen)),
          h('td', null, detail(u))))))));
  }).catch((err) => { if (el.isConnected) replace(body, notice(err.message)); });
}

// editForm changes a token's name, tags or metadata, or narrows its
// scopes (PATCH sends only what changed).
function editForm(out, t, done) {
  const name = h('input', { id: 'e-name', value: t.name || '', maxlength: 200 });
  const tags = h('input', { id: 'e-tags', value: (t.tags || []).join(', ') });
  const scopes = h('input', { id: 'e-scopes', value: (t.scopes || []).join(' ') });
  const meta = h('textarea', { id: 'e-meta', rows: 3 });
  meta.value = JSON.stringify(t.meta ?? {}, null, 1);
  const msg = h('div');
  const form = h('form', { class: 'card', id: 'edit-form' },
    h('h2', null, 'Edit'),
    h('label', null, h('span', null, 'Name'), name),
    h('label', null, h('span', null, 'Tags'), tags),
    h('label', null, h('span', null, 'Scopes'), scopes, h('small', { class: 'muted' }, 'Scopes can only be narrowed here; a wider grant needs a new token.')),
    h('label', null, h('span', null, 'Metadata (JSON object)'), meta),
    msg,
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'quiet', onclick: () => replace(out) }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, 'Save')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(msg);
    const body = {};
    if (name.value.trim() !== (t.name || '')) body.name = name.value.trim();
    const newTags = splitList(tags.value);
    if (newTags.join(',') !== (t.tags || []).join(',')) body.tags = newTags;
    const newScopes = splitList(scopes.value);
    if (newScopes.join(' ') !== (t.scopes || []).join(' ')) body.scopes = newScopes;
    try {
      const m = JSON.parse(meta.value || '{}');
      if (JSON.stringify(m) !== JSON.stringify(t.meta ?? {})) body.meta = m;
    } catch {
      replace(msg, notice('Metadata must be a JSON object.'));
      return;
    }
    if (Object.keys(body).length === 0) {
      replace(msg, notice('Nothing changed.', 'ok'));
      return;
    }
    const ok = await confirmDialog('Save these changes?', `Changing ${Object.keys(body).join(', ')} of ${t.name || t.id}. The change is recorded in the audit log.`, [], 'Save');
    if (!ok) return;
    try {
      await api.v1('PATCH', `/tokens/${encodeURIComponent(t.id)}`, body);
      done('Updated.');
    } catch (err) {
      replace(msg, notice(err.message));
    }
  });
  replace(out, form);
}

function build(el, child) {
  el.append(child);
  return el;
}

// deriveForm shows the derive form in out; done gets the new token's
// shown-once panel.
function deriveForm(out, parent, done) {
  const grants = grantFields({ subject: parent.subject, scopes: parent.scopes, lockSubject: true });
  const msg = h('div');
  const form = h('form', { class: 'card', id: 'derive-form' },
    h('h2', null, 'Derive a narrower token'),
    h('p', { class: 'muted' }, 'The child can only narrow its parent: fewer scopes, tighter constraints, an earlier expiry. Revoking the parent revokes it.'),
    grants.el, msg,
    h('div', { class: 'actions' }, h('button', { type: 'button', class: 'quiet', onclick: () => replace(out) }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, 'Derive')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    replace(msg);
    let body;
    try { body = grants.read(); } catch (err) { replace(msg, notice(err.message)); return; }
    const ok = await confirmDialog('Derive this token?', `A child of ${parent.name || parent.id} is issued with the grants in the form.`, [], 'Derive');
    if (!ok) return;
    try {
      const res = await api.v1('POST', `/tokens/${encodeURIComponent(parent.id)}/derive`, body);
      done(shownOnce(res, res.token, 'The derived token'));
    } catch (err) {
      replace(msg, notice(err.message));
    }
  });
  replace(out, form);
}

// Talking to latchkey. The session cookie is HttpOnly, so this script
// never sees the admin token; the CSRF token lives in this module's memory
// only (never in the browser's web storage) and is fetched again from
// GET /ui/api/session after a reload.

let csrf = '';
let onSignedOut = () => {};

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setSignedOutHandler(fn) {
  onSignedOut = fn;
}

async function call(method, path, body) {
  const headers = {};
  const opts = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new APIError(0, 'network', 'latchkey cannot be reached: ' + e.message);
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = new APIError(res.status, data?.error?.code || 'error', data?.error?.message || res.statusText);
    if (res.status === 401 && !path.endsWith('/ui/api/session')) {
      csrf = '';
      onSignedOut(err);
    }
    throw err;
  }
  return data;
}

// v1(method, '/tokens', body) calls the admin API through the session.
export function v1(method, path, body) {
  return call(method, '/ui/api/v1' + path, body);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '' && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

// exportURL is the address of a download of an export (GET
// /v1/export/...) through the session: a plain link, since a GET needs
// no CSRF token and the cookie goes with it.
export function exportURL(what, params, format) {
  return '/ui/api/v1/export/' + what + query({ ...params, format });
}

export async function session() {
  const info = await call('GET', '/ui/api/session');
  csrf = info.csrf_token;
  return info;
}

// checkSession asks whether the session still holds; when it does not,
// the sign-in page is shown.
export async function checkSession() {
  try {
    return await session();
  } catch (err) {
    if (err.status === 401) onSignedOut(err);
    return null;
  }
}

export async function signIn(token, purpose) {
  const info = await call('POST', '/ui/api/session', purpose ? { token, purpose } : { token });
  csrf = info.csrf_token;
  return info;
}

export async function signOut() {
  try {
    await call('DELETE', '/ui/api/session');
  } finally {
    csrf = '';
  }
}

// stream opens the audit stream (server-sent events) through the session.
export function stream(params) {
  return new EventSource('/ui/api/v1/audit/stream' + query(params));
}

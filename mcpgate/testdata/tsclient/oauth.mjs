// The official TypeScript MCP SDK's OAuth client against latchkey:
//   node oauth.mjs mcp URL PERSON_TOKEN
// connects to the MCP gateway without a token, follows the 401 to the
// protected resource metadata and the authorization server's metadata,
// registers itself (RFC 7591), and sends the person through authorization
// code + PKCE. The person's part (the browser: sign in, approve) is done
// here with fetch against the dashboard's consent API; everything OAuth
// is the SDK's. It then calls a tool with the token it obtained.
//
//   node oauth.mjs oidc ISSUER CLIENT_ID CLIENT_SECRET TOKEN
// introspects TOKEN and then revokes it with openid-client, the client
// authenticating with client_secret_basic.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import * as oidc from "openid-client";

const [mode, ...args] = process.argv.slice(2);

if (mode === "oidc") {
  const [issuer, clientId, clientSecret, token] = args;
  const config = await oidc.discovery(new URL(issuer), clientId, undefined, oidc.ClientSecretBasic(clientSecret),
    { execute: [oidc.allowInsecureRequests] });
  const before = await oidc.tokenIntrospection(config, token);
  await oidc.tokenRevocation(config, token);
  const after = await oidc.tokenIntrospection(config, token);
  console.log(JSON.stringify({ before, after, introspection_endpoint: config.serverMetadata().introspection_endpoint }));
  process.exit(0);
}

const [url, personToken] = args;
const seen = { redirected: null, registered: null };

// The browser: the person signs in to the consent page with their own
// token and approves; the answer (a redirect to the client) holds the code.
async function consent(authorizationUrl) {
  const res = await fetch(authorizationUrl, { redirect: "manual" });
  const loc = res.headers.get("location");
  if (res.status !== 303 || !loc) throw new Error(`authorize answered ${res.status}: ${await res.text()}`);
  const page = new URL(loc, authorizationUrl);
  const id = page.hash.replace("#/consent/", "");
  const origin = page.origin;
  const signIn = await fetch(origin + "/ui/api/session", {
    method: "POST", headers: { "Content-Type": "application/json", Origin: origin },
    body: JSON.stringify({ token: personToken, purpose: "consent" }),
  });
  if (!signIn.ok) throw new Error(`sign in: ${signIn.status} ${await signIn.text()}`);
  const cookie = signIn.headers.get("set-cookie").split(";")[0];
  const { csrf_token } = await signIn.json();
  const shown = await (await fetch(`${origin}/ui/api/oauth/requests/${id}`, { headers: { Cookie: cookie } })).json();
  const decided = await fetch(`${origin}/ui/api/oauth/requests/${id}`, {
    method: "POST", headers: { "Content-Type": "application/json", Cookie: cookie, "X-CSRF-Token": csrf_token, Origin: origin },
    body: JSON.stringify({ approve: true }),
  });
  if (!decided.ok) throw new Error(`approve: ${decided.status} ${await decided.text()}`);
  const { redirect_to } = await decided.json();
  seen.consent = { client: shown.client_id, resources: shown.resources, scopes: shown.scopes.map((s) => s.scope) };
  return new URL(redirect_to);
}

let saved = {};
const provider = {
  get redirectUrl() { return "http://127.0.0.1:9/callback"; },
  get clientMetadata() {
    return { client_name: "latchkey TS SDK test", redirect_uris: ["http://127.0.0.1:9/callback"],
      grant_types: ["authorization_code", "refresh_token"], response_types: ["code"], token_endpoint_auth_method: "none" };
  },
  state() { return "st-" + Math.random().toString(36).slice(2); },
  clientInformation() { return saved.client; },
  saveClientInformation(c) { saved.client = c; seen.registered = c.client_id; },
  tokens() { return saved.tokens; },
  saveTokens(t) { saved.tokens = t; },
  async redirectToAuthorization(u) { seen.redirected = await consent(u); },
  saveCodeVerifier(v) { saved.verifier = v; },
  codeVerifier() { return saved.verifier; },
};

const client = new Client({ name: "latchkey-ts-oauth-test", version: "1.0.0" });
let transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
try {
  await client.connect(transport);
  throw new Error("connected without authorizing");
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
}
const code = seen.redirected.searchParams.get("code");
const iss = seen.redirected.searchParams.get("iss");
await transport.finishAuth(code);
transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const echo = await client.callTool({ name: "echo", arguments: { text: "via oauth" } });
console.log(JSON.stringify({ registered: seen.registered, iss, consent: seen.consent, tools, echo: echo.content[0].text,
  access_token: saved.tokens.access_token, refresh: !!saved.tokens.refresh_token, scope: saved.tokens.scope }));
await client.close();

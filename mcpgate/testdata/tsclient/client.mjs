// The official TypeScript SDK's client through the latchkey MCP gateway:
// node client.mjs URL TOKEN prints what it saw as one JSON line.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "latchkey-ts-test", version: "1.0.0" });
await client.connect(transport);
const tools = (await client.listTools()).tools.map((t) => t.name).sort();
const echo = await client.callTool({ name: "echo", arguments: { text: "from ts" } });
let refused = null;
try {
  const r = await client.callTool({ name: "noop", arguments: {} });
  refused = r.isError ? "isError: " + JSON.stringify(r.content) : null;
} catch (e) {
  refused = String(e && e.message ? e.message : e);
}
let after = null;
try {
  after = (await client.callTool({ name: "search", arguments: { text: "y" } })).content[0].text;
} catch (e) {
  after = "error: " + String(e && e.message ? e.message : e);
}
console.log(JSON.stringify({ tools, echo: echo.content[0].text, refused, after }));
await client.close();

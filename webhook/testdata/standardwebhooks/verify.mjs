// Reads deliveries (JSON lines: {"secret","headers","body"}) on standard
// input and verifies each with the Standard Webhooks library, printing
// "ok <webhook-id>" or "fail <webhook-id> <error>" per line.
import { Webhook } from 'standardwebhooks';
import { createInterface } from 'node:readline';

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const d = JSON.parse(line);
  const headers = Object.fromEntries(Object.entries(d.headers).map(([k, v]) => [k.toLowerCase(), v]));
  try {
    const msg = new Webhook(d.secret).verify(d.body, headers);
    console.log('ok', headers['webhook-id'], msg.type);
  } catch (e) {
    console.log('fail', headers['webhook-id'], String(e.message || e).replace(/\s+/g, ' '));
  }
}

// Package security holds latchkey's standing adversarial suite (issue 12):
// tests written as an attacker who has read the README, against the real
// binary behind real nginx and Caddy configured with the README's own
// snippets, and against every door that takes a token. It has no code of
// its own; run it with go test ./security/.
package security

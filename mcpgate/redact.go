package mcpgate

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/latchkeyhq/latchkey/secret"
)

// redactJSON is a copy of v with every string that looks like a secret
// redacted, cut to at most n bytes (then it is a JSON string saying so).
func redactJSON(v json.RawMessage, n int) json.RawMessage {
	if len(v) == 0 {
		return nil
	}
	var x any
	if json.Unmarshal(v, &x) != nil {
		return nil
	}
	x = redactValue(x)
	b, _ := json.Marshal(x)
	if len(b) > n {
		b, _ = json.Marshal(fmt.Sprintf("[%d bytes, not kept]", len(b)))
	}
	return b
}

func redactValue(x any) any {
	switch v := x.(type) {
	case string:
		return secret.Redact(v)
	case map[string]any:
		for k, e := range v {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "password") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") || strings.Contains(lk, "key") {
				v[k] = "[redacted]"
				continue
			}
			v[k] = redactValue(e)
		}
	case []any:
		for i, e := range v {
			v[i] = redactValue(e)
		}
	}
	return x
}

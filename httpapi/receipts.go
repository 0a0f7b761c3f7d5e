package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Revocation receipts (docs/architecture.md §4): POST /v1/tokens/{id}/revoke,
// /suspend and /v1/revocations take ?wait=all (and wait_timeout, default
// 5s, at most latchkey.MaxReceiptWait), and then answer only once every
// live node has confirmed the change, or the bound ran out; the answer
// carries the receipt. GET /v1/receipts lists this node's last receipts.

// DefaultReceiptWait is the wait when wait_timeout is not given.
const DefaultReceiptWait = 5 * time.Second

// receiptsKept is how many receipts GET /v1/receipts remembers.
const receiptsKept = 50

// receiptLog keeps a node's last receipts, newest last.
type receiptLog struct {
	mu   sync.Mutex
	list []latchkey.Receipt
}

func (l *receiptLog) add(r latchkey.Receipt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.list) == receiptsKept {
		copy(l.list, l.list[1:])
		l.list = l.list[:receiptsKept-1]
	}
	l.list = append(l.list, r)
}

// newest returns the receipts, newest first.
func (l *receiptLog) newest() []latchkey.Receipt {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]latchkey.Receipt, len(l.list))
	for i, r := range l.list {
		out[len(out)-1-i] = r
	}
	return out
}

// receiptWait reads ?wait and ?wait_timeout: ok is false when no receipt
// is asked for. Any other query parameter is refused.
func receiptWait(q url.Values) (timeout time.Duration, ok bool, err error) {
	if err := onlyParams(q, "wait", "wait_timeout"); err != nil {
		return 0, false, err
	}
	switch q.Get("wait") {
	case "":
		if q.Has("wait_timeout") {
			return 0, false, latchkey.Errorf(latchkey.EInvalid, "wait_timeout needs wait=all")
		}
		return 0, false, nil
	case "all":
	default:
		return 0, false, latchkey.Errorf(latchkey.EInvalid, `wait must be "all"`)
	}
	timeout = DefaultReceiptWait
	if v := q.Get("wait_timeout"); v != "" {
		d, err := latchkey.ParseDuration(v)
		if err != nil || d <= 0 || d > latchkey.MaxReceiptWait {
			return 0, false, latchkey.Errorf(latchkey.EInvalid, "wait_timeout must be a duration above 0 and at most %s", latchkey.MaxReceiptWait)
		}
		timeout = d
	}
	return timeout, true, nil
}

// receipt waits for the other nodes to apply a change this node made (it
// applied it itself before answering) and records the receipt. Without a
// Receipter (one node) this node is the whole receipt.
func (s *Server) receipt(ctx context.Context, timeout time.Duration, action, tokenID string) (latchkey.Receipt, error) {
	r := latchkey.Receipt{Nodes: 1, Confirmed: 1, At: time.Now().UTC()}
	if s.Receipts != nil {
		var err error
		if r, err = s.Receipts.Receipt(ctx, timeout); err != nil {
			return r, err
		}
	}
	r.Action, r.TokenID = action, tokenID
	s.receiptLog.add(r)
	return r, nil
}

// withReceipt is a token answered with its receipt.
type withReceipt struct {
	*latchkey.Token
	Receipt latchkey.Receipt `json:"receipt"`
}

// receiptsPage is GET /v1/receipts.
type receiptsPage struct {
	Receipts []latchkey.Receipt `json:"receipts"`
}

func (s *Server) listReceipts(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, receiptsPage{Receipts: s.receiptLog.newest()})
	return nil
}

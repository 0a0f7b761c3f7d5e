package detect

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Shared counts the detector's windows for every node of a cluster at
// once (Redis), so that an attacker who spreads requests over the nodes
// is caught as if they all went to one. *redis.Client satisfies it.
// Each method reports the cluster-wide count and whether this caller is
// the one that should act (exactly one caller per window is).
type Shared interface {
	AddFailures(ctx context.Context, source string, n int64, w time.Duration, threshold int) (total int64, fire bool, err error)
	AddNetworks(ctx context.Context, token string, nets []string, w time.Duration, threshold int) (distinct int64, fire bool, err error)
	Networks(ctx context.Context, token string) ([]string, error)
}

// sharedHit is one event for the shared windows: a failure from a source,
// or a token used from a network.
type sharedHit struct {
	src   netip.Addr // source key (failure), or invalid
	token string     // token id (network use)
	net   netip.Prefix
}

// sharedBatch bounds how many events are summed into one round of calls,
// and sharedEvery how long an event waits for its round.
const (
	sharedBatch = 4096
	sharedEvery = 10 * time.Millisecond
)

// sharedCallTimeout bounds the shared window's round trip on a refusal
// (RefusedNow): a Redis that hangs costs a refused attempt at most this,
// and then the client's own retry pause.
const sharedCallTimeout = time.Second

// share queues e for the shared windows without waiting: the node's own
// windows have already counted it, so a full queue (Redis far behind)
// costs cluster-wide precision, counted in Stats.Overflow, never latency.
func (d *Detector) share(e sharedHit) {
	select {
	case d.shared <- e:
	default:
		d.nOverflow.Add(1)
	}
}

// runShared sums queued events per source and per token and adds them to
// the shared windows, one call per source and token per round.
func (d *Detector) runShared() {
	defer close(d.sharedDone)
	fails := map[netip.Addr]int64{}
	nets := map[string]map[netip.Prefix]struct{}{}
	t := time.NewTicker(sharedEvery)
	defer t.Stop()
	n := 0
	flush := func() {
		if n == 0 {
			return
		}
		d.flushShared(fails, nets)
		clear(fails)
		clear(nets)
		n = 0
	}
	add := func(e sharedHit) {
		if e.src.IsValid() {
			fails[e.src]++
		} else {
			if nets[e.token] == nil {
				nets[e.token] = map[netip.Prefix]struct{}{}
			}
			nets[e.token][e.net] = struct{}{}
		}
		if n++; n >= sharedBatch {
			flush()
		}
	}
	for {
		select {
		case e := <-d.shared:
			add(e)
		case <-t.C:
			flush()
		case <-d.stop:
			for {
				select {
				case e := <-d.shared:
					add(e)
				default:
					flush()
					return
				}
			}
		}
	}
}

func (d *Detector) flushShared(fails map[netip.Addr]int64, nets map[string]map[netip.Prefix]struct{}) {
	sh := d.cfg.Shared
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := d.cfg.Now().UnixNano()
	r := d.cfg.SourceFailures
	for k, n := range fails {
		total, fire, err := sh.AddFailures(ctx, SourceString(k), n, r.Window, r.Count)
		if err != nil {
			d.sharedFailed(err)
			continue
		}
		if fire {
			d.fireBlock(k, int(total), now)
		}
	}
	r = d.cfg.NetworkSpread
	for id, set := range nets {
		ns := make([]string, 0, len(set))
		for p := range set {
			ns = append(ns, p.String())
		}
		count, fire, err := sh.AddNetworks(ctx, id, ns, r.Window, r.Count)
		if err != nil {
			d.sharedFailed(err)
			continue
		}
		if fire {
			all, err := sh.Networks(ctx, id)
			if err != nil {
				all = ns
			}
			slices.Sort(all)
			d.emit(Finding{Rule: RuleNetworkSpread, Action: d.cfg.NetworkSpreadAction, TokenID: id, At: time.Unix(0, now), Evidence: map[string]any{
				"networks": all, "count": count, "window": latchkey.Duration(r.Window).String(), "counted": "cluster"}})
		}
	}
}

// sharedFailed counts a failed call and logs it at most once a minute:
// the node's own windows keep counting meanwhile.
func (d *Detector) sharedFailed(err error) {
	d.nSharedFailed.Add(1)
	now := time.Now().UnixNano()
	if last := d.sharedLogged.Load(); now-last >= int64(time.Minute) && d.sharedLogged.CompareAndSwap(last, now) {
		d.cfg.Logger.Warn("detector: shared windows unavailable; counting on this node only", "err", err)
	}
}

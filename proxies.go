package latchkey

import (
	"net/netip"
	"strings"
)

// TrustedProxies lists the networks whose X-Forwarded-For header is
// believed. Anyone else can write any address into that header, so from an
// untrusted peer the header is ignored and the peer itself is the client.
type TrustedProxies []netip.Prefix

// LoopbackProxies trusts only this machine: a proxy on the same host.
var LoopbackProxies = TrustedProxies{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// ParseTrustedProxies parses networks or addresses (see ParseCIDR).
func ParseTrustedProxies(list []string) (TrustedProxies, error) {
	var out TrustedProxies
	for _, s := range list {
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			p, err := ParseCIDR(f)
			if err != nil {
				return nil, Errorf(EInvalid, "trusted proxy %.50q is not an IP address or network", f)
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// Trusts reports whether a is a trusted proxy.
func (tp TrustedProxies) Trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range tp {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP resolves the end client's address from the connection's peer
// and the X-Forwarded-For header values (in order of appearance). It walks
// the chain from the right, the hop nearest to us: while the current hop
// is a trusted proxy, the address it reports is believed. The first
// untrusted hop is the client. A malformed entry stops the walk at the
// hop that reported it. The zero Addr means the peer address was invalid.
func (tp TrustedProxies) ClientIP(peer netip.Addr, xff []string) netip.Addr {
	client := peer.Unmap()
	if !client.IsValid() {
		return client
	}
	for i := len(xff) - 1; i >= 0; i-- {
		hops := xff[i]
		for hops != "" && tp.Trusts(client) {
			var hop string
			if j := strings.LastIndexByte(hops, ','); j >= 0 {
				hop, hops = hops[j+1:], hops[:j]
			} else {
				hop, hops = hops, ""
			}
			a, err := netip.ParseAddr(strings.TrimSpace(hop))
			if err != nil {
				return client
			}
			client = a.Unmap()
		}
		if !tp.Trusts(client) {
			break
		}
	}
	return client
}

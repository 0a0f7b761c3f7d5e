package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/latchkeyhq/latchkey/client"
)

// The token list in the browser: search, order and usage filters with a
// total; a whole token pasted into the search sends only its id; one
// date format with its zone, and the Local/UTC switch kept in the
// address; on a phone a compact header and rows as cards, nothing off
// to the side.
func TestDashboardTokenList(t *testing.T) {
	t.Parallel()
	b := newBrowser(t)
	ts := startServer(t, t.TempDir())
	rc := ts.client(ts.root)
	var secret string
	for i, c := range []struct{ name, ttl string }{{"ledger-prod", "20d"}, {"ledger-staging", "3d"}, {"mailer-prod", "5d"}, {"ledger-dev", ""}} {
		tok, err := rc.CreateToken(ctx, client.CreateRequest{Name: c.name, Subject: fmt.Sprintf("svc-%d", i), TTL: c.ttl, Scopes: []string{"a:b"}})
		if err != nil {
			t.Fatal(err)
		}
		if c.name == "mailer-prod" {
			secret = tok.Plaintext
		}
	}
	rows := `[...document.querySelectorAll('#tokens tr[data-id] .name')].map((a) => a.textContent).join(',')`
	b.do(t, "sign in", chromedp.Navigate(ts.url+"/ui/"), chromedp.WaitVisible("#token"), chromedp.SendKeys("#token", ts.root),
		chromedp.Click("#signin button[type=submit]"), chromedp.WaitVisible("#stream-status.live"))
	b.do(t, "the tokens", chromedp.Navigate(ts.url+"/ui/#/tokens"), chromedp.WaitVisible("#tokens tr[data-id]"))
	b.waitFor(t, "the total", `document.querySelector('#tokens-total').textContent === '5 tokens'`, 3*time.Second)

	b.do(t, "search, soonest expiry first", chromedp.SendKeys("#f-q", "ledger"), setValue("#f-sort", "expires"),
		chromedp.Click("#token-filters button[type=submit]"))
	b.waitFor(t, "ledger tokens, soonest expiry first", rows+` === 'ledger-staging,ledger-prod,ledger-dev'`, 3*time.Second)
	b.waitFor(t, "the total of the search", `document.querySelector('#tokens-total').textContent === '3 tokens'`, 3*time.Second)
	b.do(t, "expiring within 7 days", setValue("#f-q", ""), setValue("#f-usage", "exp7"),
		chromedp.Click("#token-filters button[type=submit]"))
	b.waitFor(t, "two expiring within 7 days", rows+` === 'ledger-staging,mailer-prod'`, 3*time.Second)
	b.screenshot(t, "tokens-wide")
	// The export follows the list's filters and order.
	if href := b.eval(t, `document.querySelector('#tokens-export-csv').href`); !strings.Contains(href, "expires_within=7d") || !strings.Contains(href, "sort=expires") {
		t.Errorf("the export link %s", href)
	}

	// A whole token in the search: the page searches for its id, and says so.
	b.do(t, "paste a token", setValue("#f-usage", ""), setValue("#f-q", secret),
		chromedp.Click("#token-filters button[type=submit]"))
	b.waitFor(t, "found by its id", rows+` === 'mailer-prod'`, 3*time.Second)
	if v := b.eval(t, `document.querySelector('#f-q').value + ' | ' + document.querySelector('main').textContent.includes('The secret was not sent')`); v != secret[3:19]+" | true" {
		t.Errorf("after pasting a token: %q", v)
	}
	if strings.Contains(ts.out.String(), secret) {
		t.Error("the pasted secret reached the server's output")
	}

	// Dates: one format, with the zone; the switch to UTC and back.
	iso := `^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} `
	title := `(document.querySelector('#tokens tr[data-id] time')?.title ?? '')`
	if v := b.eval(t, `String(new RegExp('`+strings.ReplaceAll(iso, `\`, `\\`)+`(UTC|GMT[+-][0-9:]+)$').test(`+title+`))`); v != "true" {
		t.Errorf("a date reads %q", b.eval(t, title))
	}
	b.do(t, "switch to UTC", chromedp.Click("#zone"))
	b.waitFor(t, "dates in UTC", title+`.endsWith(' UTC') && location.search === '?tz=utc' && document.querySelector('#zone').textContent.endsWith('UTC')`, 3*time.Second)
	b.do(t, "reload", chromedp.Reload(), chromedp.WaitVisible("#tokens tr[data-id]"))
	b.waitFor(t, "still UTC after a reload", title+`.endsWith(' UTC')`, 3*time.Second)
	b.do(t, "back to local", chromedp.Click("#zone"))
	b.waitFor(t, "local again", `location.search === '' && document.querySelector('#zone').textContent.includes('local')`, 3*time.Second)

	// A phone: the header is compact, the rows are cards, and no status,
	// expiry or action starts off-screen.
	b.do(t, "a phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(ts.url+"/ui/#/tokens"), chromedp.WaitVisible("#tokens tr[data-id]"))
	v, _ := strconv.Atoi(b.eval(t, `String(Math.round(document.querySelector('header.top').getBoundingClientRect().height))`))
	t.Logf("the header on a 390 px screen: %d px", v)
	if v > 90 || v == 0 {
		t.Errorf("the header is %d px high on a phone", v)
	}
	b.screenshot(t, "tokens-phone")
	if v := b.eval(t, `JSON.stringify([document.documentElement.scrollWidth <= innerWidth,
		[...document.querySelectorAll('#tokens td')].every((td) => td.getBoundingClientRect().right <= innerWidth + 1),
		getComputedStyle(document.querySelector('#tokens tr')).display,
		document.querySelector('#tokens td:nth-child(4)').dataset.label])`); v != `[true,true,"block","Status"]` {
		t.Errorf("the token list on a phone: %s", v)
	}
	b.do(t, "the live view on a phone", chromedp.Navigate(ts.url+"/ui/#/live"), chromedp.WaitVisible("#stream-status.live"))
	if v := b.eval(t, `String(document.documentElement.scrollWidth <= innerWidth)`); v != "true" {
		t.Error("the live view scrolls sideways on a phone")
	}
	if p := b.problems(); len(p) > 0 {
		t.Errorf("console: %v", p)
	}
}

// setValue sets a form control's value, as a choice or typing would.
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	ev := chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q).value = %q`, sel, v))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := ev(ctx, t)
		return chromedp.Void{}, err
	}
}

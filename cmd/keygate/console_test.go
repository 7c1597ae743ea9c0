package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/console"
)

// chromium returns Debian's Chromium, or skips the test without it (fails in CI).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("Chromium is not installed (scripts/install-deps.sh installs Debian's chromium)")
	}
	t.Skip("Chromium is not installed: the console's browser test needs Debian's chromium package")
	return ""
}

// artifacts returns the directory for the console's screenshots:
// $KEYGATE_ARTIFACTS/console, by default bin/artifacts/console.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KEYGATE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "bin", "artifacts")
	}
	dir = filepath.Join(dir, "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConsole drives the operator console in headless Chromium against a real Vault, a
// real admin listener with the SQLite usage store, and checks made over gRPC: every page
// and action, the session's end, CSRF refusals, the CSP, no key in the browser's
// storage, the keyboard, and a 375 px wide screen. Screenshots go to artifacts(t); with
// KEYGATE_DOCS_IMG set, the documentation's screenshots are written there too.
func TestConsole(t *testing.T) {
	chrome := chromium(t)
	base := useVault(t)
	dir := t.TempDir()
	auditFile := filepath.Join(dir, "audit.log")
	cfgFile := writeConfig(t, fmt.Sprintf(`vault:
  path: %s
audit_log: %s
usage_flush: 1s
usage:
  store: sqlite
  sqlite_path: %s
  flush: 1s
policy:
  routes:
  - {name: chat, methods: [POST], path: /v1/chat/completions, scope: chat, models: true}
  - {name: models, methods: [GET], prefix: /v1/models, scope: models:read}
`, base, auditFile, filepath.Join(dir, "usage.db")))
	mk := func(owner, name string, extra ...string) createdKey {
		t.Helper()
		return cliKey(t, base, owner, name, extra...)
	}
	ops := mk("acct_ops", "Operations", "--scopes", "admin")
	self := mk("acct_a", "Team A self-service", "--scopes", "api-keys,chat,models:read")
	app := mk("acct_a", "Production app", "--scopes", "chat,models:read", "--models", "gpt-4o*")
	idle := mk("acct_a", "Forgotten batch job", "--scopes", "models:read")
	idleCreated := time.Now()
	// Attacker-chosen text in a name: shown as text, never run.
	mk("acct_a", `<img src=x onerror="document.title='pwned'">`, "--scopes", "models:read")
	keys := []createdKey{ops, self, app, idle}

	adminAddr := freeAddr(t)
	grpcAddr, _, logs := startServe(t, "--config", cfgFile, "--admin-addr", adminAddr)
	origin := "http://" + adminAddr

	// Checks over gRPC, so the usage charts have counts.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	authz := authv3.NewAuthorizationClient(conn)
	check := func(key, method, path, model string) int {
		t.Helper()
		h := map[string]string{"authorization": "Bearer " + key}
		body := ""
		if model != "" {
			h["content-type"] = "application/json"
			body = fmt.Sprintf(`{"model":%q}`, model)
		}
		resp, err := authz.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: method, Path: path, Host: "api.example.com", Headers: h, Body: body}}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			return 200
		}
		return int(resp.GetDeniedResponse().GetStatus().GetCode())
	}
	for range 5 {
		check(app.Key, "POST", "/v1/chat/completions", "gpt-4o")
	}
	for range 2 {
		check(app.Key, "POST", "/v1/chat/completions", "o1")
	}
	for range 3 {
		check(app.Key, "GET", "/v1/models", "")
	}

	// The admin API, called as a CLI would: the figures the pages must show.
	apiCall := func(method, path string, hdr map[string]string, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, origin+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	asOps := map[string]string{"Authorization": "Bearer " + ops.Key}
	getView := func(id string) admin.View {
		t.Helper()
		code, raw := apiCall("GET", "/api-keys/"+id, asOps, "")
		var v admin.View
		if code != 200 || json.Unmarshal([]byte(raw), &v) != nil {
			t.Fatalf("GET /api-keys/%s: %d %s", id, code, raw)
		}
		return v
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, raw := apiCall("GET", "/api-keys/"+app.ID+"/usage", asOps, "")
		var u admin.UsageResponse
		if json.Unmarshal([]byte(raw), &u) == nil && u.Total == 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the usage store holds %s, want 10 checks\n%s", raw, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The headers on every answer of the listener.
	for _, p := range []string{"/console/", "/console/app.js", "/api-keys"} {
		resp, err := http.Get(origin + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for k, v := range map[string]string{"Content-Security-Policy": console.CSP, "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s %q, want %q", p, k, got, v)
			}
		}
	}

	// The browser.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 800))
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	defer cancelCtx()
	// Everything the page writes to its console: a CSP violation is an error entry.
	var consoleMu sync.Mutex
	var consoleLines []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			consoleMu.Lock()
			consoleLines = append(consoleLines, fmt.Sprintf("%s: %s", m.Type, m.Text))
			consoleMu.Unlock()
		}
	}()
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(actx, actions...); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, logs)
		}
	}
	eval := func(js string, v any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		if v != nil {
			if err := json.Unmarshal(raw, v); err != nil {
				t.Fatalf("%s: %s: %v", js, raw, err)
			}
		}
	}
	// waitFor polls a JavaScript condition until it holds.
	waitFor := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			var ok bool
			raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte]("!!("+js+")"))
			if err == nil && json.Unmarshal(raw, &ok) == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				var body string
				eval(`document.body.innerText`, &body)
				t.Fatalf("waiting for %s (%s): %v\npage:\n%s\nlogs:\n%s", what, js, err, body, logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	text := func(sel string) string {
		t.Helper()
		var s string
		eval(fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||""`, sel), &s)
		return s
	}
	click := func(sel string) {
		t.Helper()
		waitFor(sel, fmt.Sprintf(`document.querySelector(%q)`, sel))
		do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
	}
	typeInto := func(sel, value string) {
		t.Helper()
		waitFor(sel, fmt.Sprintf(`document.querySelector(%q)`, sel))
		eval(fmt.Sprintf(`(function(){var e=document.querySelector(%q); e.focus(); e.value=''; return true})()`, sel), nil)
		do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), value))
	}
	art := artifacts(t)
	docs := os.Getenv("KEYGATE_DOCS_IMG")
	shot := func(name string, forDocs bool) {
		t.Helper()
		if forDocs {
			eval(`document.getElementById('status').textContent = ''`, nil) // a passing notice
		}
		time.Sleep(100 * time.Millisecond) // let the focus ring and layout settle
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(art, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
		if forDocs && docs != "" {
			if err := os.WriteFile(filepath.Join(docs, "console-"+name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// noHorizontalScroll checks the page fits the viewport's width.
	noHorizontalScroll := func(page string) {
		t.Helper()
		var w struct{ Scroll, Inner int }
		eval(`({Scroll: document.documentElement.scrollWidth, Inner: window.innerWidth})`, &w)
		if w.Scroll > w.Inner {
			t.Errorf("%s: %d px wide in a %d px viewport", page, w.Scroll, w.Inner)
		}
	}
	// browserHolds returns everything the browser keeps for the site: storage, the
	// cookies (HttpOnly ones too), the URL and the history's length.
	browserHolds := func() string {
		t.Helper()
		var s string
		eval(`JSON.stringify([localStorage, sessionStorage, document.cookie, location.href, history.length,
			performance.getEntriesByType('resource').map(function(e){return e.name})])`, &s)
		cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{origin}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cookies.Cookies {
			s += "\n" + c.Name + "=" + c.Value
		}
		return s
	}
	sessionCookie := func() *network.Cookie {
		t.Helper()
		cookies, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{origin}})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cookies.Cookies {
			if c.Name == "keygate-console" {
				return c
			}
		}
		return nil
	}
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "clipboard-read"}, Setting: browser.PermissionSettingGranted, Origin: origin}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.CallBrowser(ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission: &browser.PermissionDescriptor{Name: "clipboard-write", AllowWithoutSanitization: true},
		Setting:    browser.PermissionSettingGranted, Origin: origin}); err != nil {
		t.Fatal(err)
	}

	// Sign in: a wrong key is refused, as the admin API refuses it.
	do("open the console", chromedp.EmulateViewport(1200, 800), chromedp.Navigate(origin+"/console"))
	waitFor("the sign-in form", `document.querySelector('#key')`)
	var attrs []string
	eval(`[document.querySelector('#key').type, document.querySelector('#key').autocomplete, document.querySelector('#signin').autocomplete]`, &attrs)
	if fmt.Sprint(attrs) != "[password off off]" {
		t.Errorf("the key field: type, autocomplete, form autocomplete = %v", attrs)
	}
	shot("signin", true)
	refusedSignIn := func(key string) string {
		t.Helper()
		eval(`document.querySelector('#signin-error').textContent = ''`, nil)
		typeInto("#key", key)
		click("#signin-key")
		waitFor("the refusal", `document.querySelector('#signin-error').textContent.indexOf('Sign-in refused') === 0`)
		var v string
		eval(`document.querySelector('#key').value`, &v)
		if v != "" {
			t.Error("the key field kept the key after the sign-in")
		}
		return text("#signin-error")
	}
	// A wrong key, something that is no key, and a valid key without the admin or
	// api-keys scope: each refused as the admin API refuses it.
	for _, tc := range []struct{ key, want string }{
		{"mgx-sk-" + strings.Repeat("x", 32), "(AUTH_KEY_INVALID)"},
		{"not a key at all", "(AUTH_INVALID_FORMAT)"},
		{app.Key, "(AUTH_INSUFFICIENT_SCOPE)"},
	} {
		if got := refusedSignIn(tc.key); !strings.Contains(got, tc.want) {
			t.Errorf("sign-in refused: %q, want %s", got, tc.want)
		}
	}
	shot("signin-refused", false)

	// Sign in with the admin key.
	typeInto("#key", ops.Key)
	click("#signin-key")
	waitFor("the key list", `document.querySelector('#keys tbody tr[data-id]')`)
	if c := sessionCookie(); c == nil || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" || len(c.Value) != 43 {
		t.Fatalf("the session cookie: %+v", c)
	}
	for _, k := range keys {
		if strings.Contains(browserHolds(), k.Key) {
			t.Fatal("a key in the browser's storage, cookies or URL after the sign-in")
		}
	}
	var title string
	eval(`document.title`, &title)
	if strings.Contains(title, "pwned") {
		t.Fatal("a key name ran as HTML")
	}
	if !strings.Contains(text("#keys"), `<img src=x onerror=`) {
		t.Error("the key name with markup is not shown as text")
	}

	// Keys of one owner.
	do("choose acct_a", chromedp.Navigate(origin+"/console/#/keys/acct_a"))
	waitFor("acct_a's keys", `document.querySelector('#keys caption').textContent === 'Keys of acct_a' && document.querySelector('#keys tr[data-id="`+app.ID+`"]')`)
	if strings.Contains(text("#keys"), ops.ID) {
		t.Error("acct_a's list shows acct_ops's key")
	}
	var row []string
	eval(`Array.from(document.querySelectorAll('#keys tr[data-id="`+app.ID+`"] td')).slice(0, 4).map(function(td){return td.textContent})`, &row)
	if want := []string{"Production app", app.Hint, "chat, models:read", "active"}; !slices.Equal(row, want) {
		t.Errorf("the app key's row: %q, want %q", row, want)
	}
	shot("keys", true)

	// Create: the key is shown once, with a copy button.
	typeInto("#create-name", "Console-made key")
	typeInto("#create-scopes", "models:read")
	typeInto("#create-owner", "acct_a")
	eval(`document.querySelector('#create-expires').value = '30d'`, nil)
	click("#create-submit")
	waitFor("the revealed key", `document.querySelector('#revealed-key')`)
	created := text("#revealed-key")
	if !strings.HasPrefix(created, "mgx-sk-") {
		t.Fatalf("the revealed key: %q", created)
	}
	if code := check(created, "GET", "/v1/models", ""); code != 200 {
		t.Fatalf("the console-made key: %d", code)
	}
	var createdID string
	waitFor("the new key's row", `Array.from(document.querySelectorAll('#keys tr[data-id]')).some(function(r){return r.querySelector('.name').textContent === 'Console-made key'})`)
	eval(`Array.from(document.querySelectorAll('#keys tr[data-id]')).filter(function(r){return r.querySelector('.name').textContent === 'Console-made key'})[0].getAttribute('data-id')`, &createdID)
	if v := getView(createdID); v.Owner != "acct_a" || v.ExpiresAt == nil || v.CreatedBy != ops.ID || !slices.Equal(v.Scopes, []string{"models:read"}) {
		t.Errorf("the console-made key's record: %+v", v)
	}
	click("#copy-key")
	waitFor("the copy", `document.querySelector('#reveal').textContent.indexOf('Copied.') >= 0`)
	var clip string
	eval(`navigator.clipboard.readText()`, &clip)
	if clip != created {
		t.Errorf("the clipboard holds %q, want the revealed key", clip)
	}
	eval(`navigator.clipboard.writeText('')`, nil)
	shot("reveal", false)
	if strings.Contains(browserHolds(), created) {
		t.Fatal("the revealed key is in the browser's storage, cookies, URL or history")
	}
	// Leaving the page takes the key away.
	do("leave", chromedp.Navigate(origin+"/console/#/audit"))
	waitFor("the audit page", `document.querySelector('h1').textContent === 'Audit log'`)
	do("come back", chromedp.Navigate(origin+"/console/#/keys/acct_a"))
	waitFor("the keys page", `document.querySelector('#keys tr[data-id]')`)
	var pageHTML string
	eval(`document.documentElement.outerHTML`, &pageHTML)
	if strings.Contains(pageHTML, created) || strings.Contains(browserHolds(), created) {
		t.Fatal("the revealed key outlived its page")
	}

	// Rotate with a grace period: the successor is shown once.
	click(`tr[data-id="` + createdID + `"] button[data-action=rotate]`)
	waitFor("the rotate dialog", `document.querySelector('dialog[open] #rotate-grace')`)
	typeInto("#rotate-grace", "1h")
	shot("rotate", false)
	click("#dialog-ok")
	waitFor("the successor", `document.querySelector('#revealed-key') && document.querySelector('#reveal-title').textContent.indexOf('Successor') === 0`)
	successor := text("#revealed-key")
	if successor == created || !strings.HasPrefix(successor, "mgx-sk-") {
		t.Fatalf("the successor: %q", successor)
	}
	old := getView(createdID)
	if old.Status != "rotating" || old.ReplacedBy == "" {
		t.Fatalf("after the rotation the old key is %+v", old)
	}
	if code := check(successor, "GET", "/v1/models", ""); code != 200 {
		t.Fatalf("the successor: %d", code)
	}
	waitFor("the old key rotating", `document.querySelector('tr[data-id="`+createdID+`"] .status').textContent === 'rotating'`)
	newID := old.ReplacedBy
	// Done takes the key off the page.
	click("#dismiss-key")
	waitFor("the reveal gone", `!document.querySelector('#revealed-key')`)
	eval(`document.documentElement.outerHTML`, &pageHTML)
	if strings.Contains(pageHTML, successor) {
		t.Fatal("the successor stayed in the page after Done")
	}

	// Change scopes (admin).
	click(`tr[data-id="` + newID + `"] button[data-action=scopes]`)
	waitFor("the scopes dialog", `document.querySelector('dialog[open] #scopes-input')`)
	typeInto("#scopes-input", "models:read, chat")
	click("#dialog-ok")
	waitFor("the new scopes", `document.querySelector('tr[data-id="`+newID+`"] .scopes').textContent === 'chat, models:read'`)
	if v := getView(newID); !slices.Equal(v.Scopes, []string{"chat", "models:read"}) {
		t.Errorf("scopes after the change: %v", v.Scopes)
	}

	// Revoke: cancel first, then confirm; the list refreshes.
	click(`tr[data-id="` + newID + `"] button[data-action=revoke]`)
	waitFor("the confirmation", `document.querySelector('dialog[open]')`)
	shot("revoke-confirm", true)
	click("#dialog-cancel")
	waitFor("the dialog closed", `!document.querySelector('dialog')`)
	if v := getView(newID); v.Status != "active" {
		t.Fatalf("a cancelled revoke revoked: %s", v.Status)
	}
	click(`tr[data-id="` + newID + `"] button[data-action=revoke]`)
	click("#dialog-ok")
	waitFor("the revoked row", `document.querySelector('tr[data-id="`+newID+`"] .status').textContent === 'revoked'`)
	if v := getView(newID); v.Status != "revoked" {
		t.Fatalf("after the revoke: %s", v.Status)
	}
	if code := check(successor, "GET", "/v1/models", ""); code != 401 {
		t.Fatalf("the revoked key: %d", code)
	}

	// Usage charts: the numbers shown are the API's.
	do("usage", chromedp.Navigate(origin+"/console/#/usage/"+app.ID))
	waitFor("the usage charts", `document.querySelector('#usage-total') && document.querySelector('#usage-outcome table')`)
	waitFor("the key's name", `document.querySelector('h1').textContent === 'Usage of Production app'`)
	if got := text("#usage-total"); got != "10" {
		t.Errorf("the usage page's total: %s, want 10", got)
	}
	if got := text("#usage-errors"); got != "2" {
		t.Errorf("the usage page's denials: %s, want 2", got)
	}
	for _, by := range []string{"route", "model", "outcome"} {
		_, raw := apiCall("GET", "/api-keys/"+app.ID+"/usage?by="+by, asOps, "")
		var u admin.UsageResponse
		if err := json.Unmarshal([]byte(raw), &u); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		for _, p := range u.Points {
			var n int64
			fmt.Sscan(want[p.Value], &n)
			want[p.Value] = fmt.Sprint(n + p.Count)
		}
		var shown map[string]string
		eval(`(function(){var m={}; document.querySelectorAll('#usage-`+by+` tbody tr').forEach(function(r){
			m[r.getAttribute('data-value')] = r.children[1].textContent}); return m})()`, &shown)
		if fmt.Sprint(shown) != fmt.Sprint(want) {
			t.Errorf("usage by %s: the page shows %v, the API %v", by, shown, want)
		}
		var bars int
		eval(`document.querySelectorAll('#usage-`+by+` svg rect.bar').length`, &bars)
		if bars != len(want) {
			t.Errorf("usage by %s: %d bars for %d values", by, bars, len(want))
		}
	}
	var volume int
	eval(`Array.from(document.querySelectorAll('#usage-volume svg rect.bar')).reduce(function(a, r){return a + +r.getAttribute('data-count')}, 0)`, &volume)
	if volume != 10 {
		t.Errorf("the volume chart's bars add up to %d, want 10", volume)
	}
	shot("usage", true)
	// The API answer behind the model chart, for the documentation: fetched with the
	// session, shown as text.
	eval(`fetch('/console/session').then(function(r){return r.json()}).then(function(s){
		return fetch('/api-keys/`+app.ID+`/usage?by=model', {headers: {'X-CSRF-Token': s.csrf_token}})}).then(function(r){return r.json()}).then(function(u){
		var m = document.getElementById('main'); m.textContent = '';
		var h = document.createElement('h1'); h.textContent = 'GET /api-keys/' + u.key_id + '/usage?by=model';
		var p = document.createElement('pre'); p.textContent = JSON.stringify(u, null, 2);
		m.appendChild(h); m.appendChild(p); return true})`, nil)
	waitFor("the usage answer", `document.querySelector('pre')`)
	if got := text("pre"); !strings.Contains(got, `"total": 10`) || !strings.Contains(got, `"model": "gpt-4o"`) {
		t.Errorf("the usage answer: %s", got)
	}
	shot("usage-api", true)

	// The unused-keys report, and a revoke from it: with a window shorter than the idle
	// key's age and longer than the app key's last use (flushed every second).
	check(app.Key, "GET", "/v1/models", "")
	if d := 5*time.Second - time.Since(idleCreated); d > 0 {
		time.Sleep(d)
	}
	time.Sleep(1500 * time.Millisecond)
	window := (time.Since(idleCreated) - time.Second).Truncate(time.Second)
	do("unused", chromedp.Navigate(origin+"/console/#/unused"))
	typeInto("#unused-for", fmt.Sprintf("%ds", int(window.Seconds())))
	click("#unused-apply")
	waitFor("the unused keys", `document.querySelector('#unused tr[data-id="`+idle.ID+`"]')`)
	if has(t, ctx, `#unused tr[data-id="`+app.ID+`"]`) {
		t.Error("the unused report lists a key used a moment ago")
	}
	shot("unused", true)
	click(`#unused tr[data-id="` + idle.ID + `"] button[data-action=revoke]`)
	click("#dialog-ok")
	waitFor("the refreshed report", `!document.querySelector('#unused tr[data-id="`+idle.ID+`"]')`)
	if v := getView(idle.ID); v.Status != "revoked" {
		t.Fatalf("the unused key after its revoke: %s", v.Status)
	}

	// The audit log, filtered.
	do("audit", chromedp.Navigate(origin+"/console/#/audit"))
	waitFor("the audit table", `document.querySelector('#audit tbody tr[data-event]')`)
	eval(`document.querySelector('#audit-event').value = 'key.revoked'`, nil)
	typeInto("#audit-key", idle.ID)
	click("#audit-apply")
	waitFor("the filtered events", `document.querySelectorAll('#audit tbody tr').length === 1 && document.querySelector('#audit tbody tr').getAttribute('data-event') === 'key.revoked'`)
	if !strings.Contains(text("#audit tbody tr"), ops.ID) {
		t.Error("the key.revoked event does not name the console's caller as its actor")
	}
	eval(`document.querySelector('#audit-event').value = 'admin.call'`, nil)
	typeInto("#audit-key", "")
	typeInto("#audit-reason", "insufficient_scope")
	click("#audit-apply")
	waitFor("the failed sign-ins", `document.querySelector('#audit tbody tr[data-event="admin.call"] .reason') && document.querySelector('#audit caption').textContent.indexOf('events') > 0`)
	var reasons []string
	eval(`Array.from(document.querySelectorAll('#audit tbody tr .reason')).map(function(td){return td.textContent})`, &reasons)
	if len(reasons) == 0 || slices.ContainsFunc(reasons, func(r string) bool { return r != "insufficient_scope" }) {
		t.Errorf("the audit filter on reason shows %v", reasons)
	}
	eval(`document.querySelector('#audit-event').value = ''`, nil)
	typeInto("#audit-reason", "")
	click("#audit-apply")
	waitFor("every event", `document.querySelectorAll('#audit tbody tr[data-event]').length > 5`)
	shot("audit", true)

	// CSRF: the cookie alone does nothing; another origin does nothing.
	var refused struct {
		Status int
		Code   string
	}
	eval(`fetch('/api-keys', {credentials: 'same-origin'}).then(function(r){return r.json().then(function(b){return {Status: r.status, Code: b.error.code}})})`, &refused)
	if refused.Status != 403 || refused.Code != "CSRF_REJECTED" {
		t.Errorf("a fetch without the CSRF token: %+v", refused)
	}
	cookie := sessionCookie()
	var csrf string
	eval(`fetch('/console/session').then(function(r){return r.json()}).then(function(s){return s.csrf_token})`, &csrf)
	withSession := map[string]string{"Cookie": "keygate-console=" + cookie.Value, "X-CSRF-Token": csrf}
	if code, raw := apiCall("GET", "/api-keys/"+app.ID, withSession, ""); code != 200 {
		t.Fatalf("the session with its token: %d %s", code, raw)
	}
	for name, hdr := range map[string]map[string]string{
		"cookie only":      {"Cookie": withSession["Cookie"]},
		"wrong token":      {"Cookie": withSession["Cookie"], "X-CSRF-Token": strings.Repeat("A", 43)},
		"other origin":     {"Cookie": withSession["Cookie"], "X-CSRF-Token": csrf, "Origin": "http://evil.example"},
		"cross-site fetch": {"Cookie": withSession["Cookie"], "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
	} {
		if code, raw := apiCall("POST", "/api-keys", hdr, `{"name":"csrf `+name+`","owner":"acct_ops","scopes":["admin"]}`); code != 403 || !strings.Contains(raw, "CSRF_REJECTED") {
			t.Errorf("%s: %d %s", name, code, raw)
		}
	}
	// A page on another origin (same site: 127.0.0.1, so the SameSite=Strict cookie goes
	// with it) posts a JSON-looking form body, which needs no preflight.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><form id=f method=post enctype=text/plain action="%s/api-keys">
<input name='{"name":"evil","owner":"acct_ops","scopes":["admin"],"plan":"' value='"}'></form>
<script>fetch(%q, {method: 'POST', mode: 'no-cors', credentials: 'include', body: '{"name":"evil2","owner":"acct_ops","scopes":["admin"]}'})
.finally(function(){ document.getElementById('f').submit() })</script>`, origin, origin+"/api-keys")
	}))
	defer evil.Close()
	do("the attacker's page", chromedp.Navigate(evil.URL))
	time.Sleep(500 * time.Millisecond)
	_, raw := apiCall("GET", "/api-keys", asOps, "")
	if strings.Contains(raw, `"evil`) {
		t.Fatal("a page on another origin created a key with the operator's session")
	}
	auditLog, _ := os.ReadFile(auditFile)
	if !strings.Contains(string(auditLog), `"reason":"csrf_rejected"`) {
		t.Error("no csrf_rejected admin.call in the audit log")
	}

	// The keyboard: Tab walks the controls in order with a visible focus; Enter and
	// Space act.
	do("keys page", chromedp.Navigate(origin+"/console/#/keys/acct_a"))
	waitFor("the keys page", `document.querySelector('#keys tr[data-id]')`)
	// The page puts the focus on its heading; Tab goes on from there, Shift+Tab back to
	// the navigation.
	waitFor("the focus on the heading", `document.activeElement === document.querySelector('h1')`)
	focusedOn := func() string {
		t.Helper()
		var f struct {
			Name    string
			Outline string
		}
		eval(`(function(){var e=document.activeElement; var s=getComputedStyle(e);
			return {Name: e.id || e.getAttribute('data-action') || e.textContent.trim(), Outline: s.outlineStyle + ' ' + s.outlineWidth}})()`, &f)
		if strings.HasPrefix(f.Outline, "none") || strings.HasSuffix(f.Outline, " 0px") {
			t.Errorf("the focus on %q is not visible (outline %s)", f.Name, f.Outline)
		}
		return f.Name
	}
	var order []string
	for range 9 {
		do("Tab", chromedp.KeyEvent(kb.Tab))
		order = append(order, focusedOn())
	}
	if want := []string{"owner", "create-name", "create-owner", "create-expires", "create-scopes", "create-models",
		"create-plan", "create-submit", "Usage"}; !slices.Equal(order, want) {
		t.Errorf("Tab order: %q, want %q", order, want)
	}
	eval(`document.querySelector('h1').focus()`, nil)
	order = nil
	for range 4 {
		do("Shift+Tab", chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
		order = append(order, focusedOn())
	}
	if want := []string{"logout", "Audit log", "Unused keys", "Keys"}; !slices.Equal(order, want) {
		t.Errorf("Shift+Tab order: %q, want %q", order, want)
	}
	shot("keyboard-focus", false)
	// Enter on a focused link follows it; Space on a focused button opens its dialog,
	// Escape closes it and gives the focus back.
	eval(`document.querySelector('tr[data-id="`+app.ID+`"] button[data-action=revoke]').focus()`, nil)
	do("Space", chromedp.KeyEvent(" "))
	waitFor("the dialog from the keyboard", `document.querySelector('dialog[open]')`)
	var focused string
	eval(`document.activeElement.id`, &focused)
	if focused != "dialog-ok" {
		t.Errorf("the dialog's focus is on %q", focused)
	}
	do("Escape", chromedp.KeyEvent(kb.Escape))
	waitFor("the dialog closed by Escape", `!document.querySelector('dialog')`)
	waitFor("the focus back on the button", `document.activeElement.getAttribute('data-action') === 'revoke'`)
	if v := getView(app.ID); v.Status != "active" {
		t.Fatal("Escape revoked the key")
	}
	eval(`document.querySelector('a[href="#/usage/`+app.ID+`"]').focus()`, nil)
	do("Enter", chromedp.KeyEvent(kb.Enter))
	waitFor("the usage page from the keyboard", `location.hash === '#/usage/`+app.ID+`' && document.querySelector('#usage-total')`)

	// 375 px wide: every page fits without a horizontal scroll.
	do("narrow", chromedp.EmulateViewport(375, 800, chromedp.EmulateMobile))
	for _, p := range []struct{ hash, ready, name string }{
		{"#/keys/acct_a", `document.querySelector('#keys tr[data-id]')`, "keys"},
		{"#/usage/" + app.ID, `document.querySelector('#usage-outcome table')`, "usage"},
		{"#/unused", `document.querySelector('#unused')`, "unused"},
		{"#/audit", `document.querySelector('#audit tbody tr[data-event]')`, "audit"},
	} {
		do("narrow "+p.name, chromedp.Navigate(origin+"/console/"+p.hash))
		waitFor("narrow "+p.name, p.ready)
		noHorizontalScroll(p.name)
		shot("narrow-"+p.name, p.name == "keys")
	}
	do("wide", chromedp.EmulateViewport(1200, 800))

	// Sign out: the session is gone on the server too.
	do("keys page", chromedp.Navigate(origin+"/console/#/keys"))
	waitFor("the keys page", `document.querySelector('#keys')`)
	click("#logout")
	waitFor("the sign-in form after sign-out", `document.querySelector('#key') && document.querySelector('#signin-error').textContent === 'Signed out.'`)
	if code, raw := apiCall("GET", "/api-keys/"+app.ID, withSession, ""); code != 401 {
		t.Fatalf("the signed-out session: %d %s", code, raw)
	}
	if sessionCookie() != nil {
		t.Error("the session cookie outlived the sign-out")
	}

	// An api-keys caller sees its owner's keys; revoking its key ends its session at once.
	typeInto("#key", self.Key)
	click("#signin-key")
	waitFor("acct_a's list", `document.querySelector('#keys caption') && document.querySelector('#keys caption').textContent === 'Keys of acct_a'`)
	if strings.Contains(text("#keys"), ops.ID) || has(t, ctx, "#owner") {
		t.Error("an api-keys caller sees another owner's keys or the owner choice")
	}
	if _, stderr, err := cli(t, "keys", "revoke", self.ID, "--vault-path", base); err != nil {
		t.Fatal(stderr, err)
	}
	do("refresh", chromedp.Navigate(origin+"/console/#/unused"))
	waitFor("the ended session", `document.querySelector('#key') && document.querySelector('#signin-error').textContent.indexOf('ended') >= 0`)
	shot("session-ended", false)

	// No CSP violation, no script error, at any point.
	consoleMu.Lock()
	for _, l := range consoleLines {
		if strings.Contains(l, "Content Security Policy") || strings.HasPrefix(l, "exception") {
			t.Errorf("the page's console: %s", l)
		}
	}
	consoleMu.Unlock()
	// The policy is enforced, and its violations would have been seen: an inline script
	// is refused and reported.
	eval(`(function(){window.ran = false; var s = document.createElement('script'); s.textContent = 'window.ran = true';
		document.body.appendChild(s); return true})()`, nil)
	var ran bool
	eval(`window.ran`, &ran)
	if ran {
		t.Error("an inline script ran despite the CSP")
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		consoleMu.Lock()
		seen := slices.ContainsFunc(consoleLines, func(l string) bool { return strings.Contains(l, "Content Security Policy") })
		consoleMu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an inline script's CSP violation was not reported on the page's console")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// No key in a log line.
	all := logs.String() + string(auditLog)
	for _, k := range append(keys, createdKey{Key: created}, createdKey{Key: successor}) {
		if strings.Contains(all, k.Key) {
			t.Fatal("key material in a log")
		}
	}
}

// has reports whether the page has an element matching sel.
func has(t *testing.T, ctx context.Context, sel string) bool {
	t.Helper()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`!!document.querySelector(%q)`, sel)))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/internal/pgtest"
	keyusage "github.com/keygate/keygate/usage"
)

// TestUsageAcrossReplicas is the usage analytics' done-when: a scripted run over two
// replicas (a keygate serve process and an in-process serve with the admin API)
// sharing one store shows the right counts per minute, route, model and outcome in the
// store, in the admin API and in the CLI; with PostgreSQL and with SQLite.
func TestUsageAcrossReplicas(t *testing.T) {
	for _, store := range []string{"sqlite", "postgres"} {
		t.Run(store, func(t *testing.T) {
			var section string
			if store == "postgres" {
				pg := pgtest.Start(t)
				section = fmt.Sprintf("  store: postgres\n  postgres_dsn: %q\n", pg.DSN())
			} else {
				section = fmt.Sprintf("  store: sqlite\n  sqlite_path: %s\n", filepath.Join(t.TempDir(), "usage.db"))
			}
			usageRun(t, section)
		})
	}
}

func usageRun(t *testing.T, usageSection string) {
	base := useVault(t)
	common := fmt.Sprintf("vault:\n  path: %s\nusage:\n%s  flush: 1s\n", base, usageSection)
	// A third replica serves the admin API from the same store; it decides no checks
	// and needs no policy.
	adminCfg := writeConfig(t, common)
	cfgFile := writeConfig(t, common+`policy:
  deny_unmatched: true
  routes:
  - {name: chat, methods: [POST], path: /v1/chat/completions, scope: chat, models: true}
  - {name: models, methods: [GET], prefix: /v1/models, scope: models:read}
`)
	mk := func(owner string, extra ...string) createdKey {
		t.Helper()
		return cliKey(t, base, owner, "k "+owner, extra...)
	}
	app := mk("acct_a", "--scopes", "chat,models:read", "--models", "gpt-4o*")
	other := mk("acct_b", "--scopes", "models:read")
	ops := mk("acct_ops", "--scopes", "admin")
	owner := mk("acct_a", "--scopes", "api-keys", "--name", "self-service")

	proc := startReplica(t, vault(t), cfgFile)
	grpcAddr, _, logs := startServe(t, "--config", cfgFile)
	adminAddr := freeAddr(t)
	startServe(t, "--config", adminCfg, "--admin-addr", adminAddr)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	clients := []authv3.AuthorizationClient{proc.client, authv3.NewAuthorizationClient(conn)}

	// The run takes well under a second; start it away from a minute's end so that
	// every check falls in one minute.
	if s := time.Now().Second(); s >= 50 {
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	minute := time.Now().UTC().Truncate(time.Minute)
	n := 0
	send := func(times int, key, method, path, model string, want int) {
		t.Helper()
		for range times {
			usageCheck(t, clients[n%2], key, method, path, model, want)
			n++
		}
	}
	send(5, app.Key, "POST", "/v1/chat/completions", "gpt-4o", 200)
	send(3, app.Key, "POST", "/v1/chat/completions", "gpt-4o-mini", 200)
	send(2, app.Key, "POST", "/v1/chat/completions", "o1", 403)
	send(4, app.Key, "GET", "/v1/models", "", 200)
	send(1, app.Key, "GET", "/v1/files", "", 403)
	send(3, other.Key, "GET", "/v1/models", "", 200)
	send(2, other.Key, "POST", "/v1/chat/completions", "gpt-4o", 403)
	send(2, "mgx-sk-not-a-key", "GET", "/v1/models", "", 401)
	if time.Now().UTC().Truncate(time.Minute) != minute {
		t.Fatal("the run crossed a minute")
	}

	cfg, err := parseConfigFile(t, cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cfg.Usage.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	q := func(q keyusage.Query) map[string]int64 {
		t.Helper()
		q.From, q.To, q.Step = minute, minute.Add(time.Minute), keyusage.StepMinute
		pts, err := store.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, p := range pts {
			if !p.Time.Equal(minute) {
				t.Errorf("a point at %s, want only %s", p.Time, minute)
			}
			out[p.Group] = p.Count
		}
		return out
	}
	// Both replicas flush every second; wait for the 22 checks to be in.
	deadline := time.Now().Add(10 * time.Second)
	for q(keyusage.Query{All: true})[""] != 22 {
		if time.Now().After(deadline) {
			t.Fatalf("the store holds %v, want 22 checks\n%s", q(keyusage.Query{All: true}), logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for name, tc := range map[string]struct {
		q    keyusage.Query
		want string
	}{
		"app by route":      {keyusage.Query{KeyID: app.ID, By: keyusage.DimRoute}, "map[:1 chat:10 models:4]"},
		"app by model":      {keyusage.Query{KeyID: app.ID, By: keyusage.DimModel}, "map[:5 gpt-4o:5 gpt-4o-mini:3 o1:2]"},
		"app by outcome":    {keyusage.Query{KeyID: app.ID, By: keyusage.DimOutcome}, "map[allowed:12 model_not_allowed:2 no_route:1]"},
		"other by outcome":  {keyusage.Query{KeyID: other.ID, By: keyusage.DimOutcome}, "map[allowed:3 insufficient_scope:2]"},
		"acct_a by key":     {keyusage.Query{Owner: "acct_a", By: keyusage.DimKey}, fmt.Sprintf("map[%s:15]", app.ID)},
		"everyone by key":   {keyusage.Query{All: true, By: keyusage.DimKey}, fmt.Sprint(map[string]int64{"": 2, app.ID: 15, other.ID: 5})},
		"unknown by reason": {keyusage.Query{Owner: "", By: keyusage.DimOutcome}, "map[malformed_key:2]"},
	} {
		if got := fmt.Sprint(q(tc.q)); got != tc.want {
			t.Errorf("store, %s: %s, want %s", name, got, tc.want)
		}
	}

	// The admin API of the in-process replica answers from the same store.
	get := func(key, path string) (int, admin.UsageResponse, string) {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var u admin.UsageResponse
		_ = json.Unmarshal(raw, &u)
		return resp.StatusCode, u, string(raw)
	}
	rng := fmt.Sprintf("from=%s&to=%s&step=minute", minute.Format(time.RFC3339), minute.Add(time.Minute).Format(time.RFC3339))
	status, u, raw := get(ops.Key, "/api-keys/"+app.ID+"/usage?by=model&"+rng)
	if status != 200 || u.Total != 15 || len(u.Points) != 4 || u.Points[1].Value != "gpt-4o" || u.Points[1].Count != 5 {
		t.Errorf("API, app by model: %d %s", status, raw)
	}
	status, u, raw = get(owner.Key, "/usage?by=outcome&"+rng)
	if status != 200 || u.Total != 15 || u.Owner != "acct_a" {
		t.Errorf("API, acct_a's own usage: %d %s", status, raw)
	}
	if status, _, raw = get(owner.Key, "/api-keys/"+other.ID+"/usage"); status != 404 {
		t.Errorf("API, another owner's key: %d %s", status, raw)
	}
	for _, k := range []createdKey{app, other, ops, owner} {
		if strings.Contains(raw+logs.String()+proc.logs.String(), k.Key) {
			t.Fatal("key material in an answer or a log")
		}
	}

	// The CLI reads the same store.
	out, stderr, err := cli(t, "keys", "usage", app.ID, "--config", cfgFile, "--by", "outcome", "--step", "minute",
		"--from", minute.Format(time.RFC3339), "--to", minute.Add(time.Minute).Format(time.RFC3339), "--json")
	if err != nil {
		t.Fatal(stderr, err)
	}
	if err := json.Unmarshal([]byte(out), &u); err != nil || u.Total != 15 || len(u.Points) != 3 || u.Points[0].Value != "allowed" || u.Points[0].Count != 12 {
		t.Errorf("CLI --json: %s", out)
	}
	out, stderr, err = cli(t, "keys", "usage", app.ID, "--config", cfgFile, "--by", "route")
	if err != nil || !strings.Contains(out, "chat") || !strings.Contains(out, "15") {
		t.Errorf("CLI text: %v %s\n%s", err, stderr, out)
	}
}

// parseConfigFile reads a configuration file as serve does.
func parseConfigFile(t *testing.T, path string) (config, error) {
	t.Helper()
	var c commonFlags
	c.configFile = path
	return c.load(flag.NewFlagSet("test", flag.ContinueOnError))
}

// usageCheck sends one Envoy-shaped check for key (with a chat body naming model when
// model is not "") and fails unless its answer has status want (200 for allowed).
func usageCheck(t *testing.T, client authv3.AuthorizationClient, key, method, path, model string, want int) {
	t.Helper()
	h := map[string]string{"authorization": "Bearer " + key}
	body := ""
	if model != "" {
		h["content-type"] = "application/json"
		body = fmt.Sprintf(`{"model":%q,"messages":[]}`, model)
	}
	resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "api.example.com", Headers: h, Body: body}}}})
	if err != nil {
		t.Fatal(err)
	}
	code := 200
	if resp.GetOkResponse() == nil {
		code = int(resp.GetDeniedResponse().GetStatus().GetCode())
	}
	if code != want {
		t.Fatalf("%s %s %q: %d, want %d", method, path, model, code, want)
	}
}

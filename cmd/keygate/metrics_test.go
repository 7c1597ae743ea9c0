package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/keygate/keygate/internal/certtest"
)

// scrape returns every sample of a Prometheus text page: series (name and labels, as
// printed) to value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// sum adds the samples of a metric whose labels contain every one of labels.
func sum(samples map[string]float64, name string, labels ...string) (float64, bool) {
	total, found := 0.0, false
	for series, v := range samples {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(series, l)
		}
		if ok {
			total, found = total+v, true
		}
	}
	return total, found
}

// TestMetricsAfterAScriptedRun drives serve through allows, denials, a rate limit and
// cache hits, then scrapes /metrics and checks each metric's value; then it checks that
// the shipped dashboard and alert rules use only metrics that page exports.
func TestMetricsAfterAScriptedRun(t *testing.T) {
	base := useVault(t)
	ca := certtest.NewCA(t, "vault-ca")
	site := newSitePKI(t) // the admin listener runs TLS, so certificate reloads are counted
	cfg := writeConfig(t, fmt.Sprintf(`vault:
  path: %s
  tls: {ca_cert: %s}
rate_limits:
  default_plan: tiny
  plans:
    tiny: {per_minute: 60, burst: 2}
tls:
  admin: {cert_file: %s, key_file: %s}
`, base, ca.CertFile, site.serverCert, site.serverKey))
	k := createKey(t, vault(t), base)
	grpcAddr, httpAddr, _ := startServe(t, "--config", cfg, "--admin-addr", freeAddr(t))
	check := func(headers ...string) {
		args := []string{"check", "--addr", grpcAddr}
		for _, h := range headers {
			args = append(args, "-H", h)
		}
		if _, _, err := cli(t, args...); err != nil && !errors.Is(err, exitCode(3)) {
			t.Fatal(err)
		}
	}
	for range 3 { // the third is over the burst of 2
		check("X-API-Key: " + k.Key)
	}
	check()
	check("X-API-Key: " + k.Key[:len(k.Key)-1] + "!")
	check("Authorization: Bearer " + k.Key[:len(k.Key)-2] + flipLast(k.Key[len(k.Key)-2:]))

	m := scrape(t, "http://"+httpAddr+"/metrics")
	want := []struct {
		name   string
		labels []string
		ok     func(float64) bool
		what   string
	}{
		{"keygate_checks_total", []string{`reason="allowed"`, `decision="allow"`}, eq(2), "2 allowed"},
		{"keygate_checks_total", []string{`reason="rate_limited"`, `decision="deny"`}, eq(1), "1 rate limited"},
		{"keygate_checks_total", []string{`reason="missing_key"`}, eq(1), "1 missing key"},
		{"keygate_checks_total", []string{`reason="malformed_key"`}, eq(1), "1 malformed key"},
		{"keygate_checks_total", []string{`reason="bad_checksum"`}, eq(1), "1 bad checksum"},
		{"keygate_check_duration_seconds_count", nil, eq(6), "6 timed checks"},
		{"keygate_check_duration_seconds_sum", nil, between(0, 6), "a plausible total time"},
		{"keygate_cache_hits_total", nil, eq(2), "2 cache hits (the key's 2nd and 3rd checks)"},
		{"keygate_cache_misses_total", nil, eq(1), "1 miss (the key's first check)"},
		{"keygate_cache_stale_serves_total", nil, eq(0), "no stale serves"},
		{"keygate_vault_request_duration_seconds_count", []string{`operation="read"`, `kind="records"`}, eq(1), "1 record read"},
		{"keygate_vault_request_duration_seconds_count", []string{`operation="read"`, `kind="changes"`}, between(1, 1e6), "change feed polls"},
		{"keygate_ratelimit_rejections_total", nil, eq(1), "1 rejection"},
		{"keygate_certificate_expiry_seconds", []string{`subject="vault-ca"`}, between(23*3600, 24*3600), "the CA's day of life"},
		{"keygate_build_info", []string{`version="dev"`}, eq(1), "build info"},
		{"keygate_tls_reload_failures_total", []string{`listener="admin"`}, eq(0), "no failed reloads"},
	}
	for _, w := range want {
		v, found := sum(m, w.name, w.labels...)
		if !found || !w.ok(v) {
			t.Errorf("%s%v = %v (found %v), want %s", w.name, w.labels, v, found, w.what)
		}
	}
	if _, found := sum(m, "keygate_key_checks_total"); found {
		t.Error("per-key counts are exported though they are opt-in")
	}
	if t.Failed() {
		dumpMetrics(t, m)
		return
	}
	checkDashboards(t, m)
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func between(lo, hi float64) func(float64) bool {
	return func(v float64) bool { return v >= lo && v <= hi }
}

func flipLast(s string) string {
	if strings.HasSuffix(s, "a") {
		return s[:len(s)-1] + "b"
	}
	return s[:len(s)-1] + "a"
}

func dumpMetrics(t *testing.T, m map[string]float64) {
	for k, v := range m {
		if strings.HasPrefix(k, "keygate_") {
			t.Logf("%s %v", k, v)
		}
	}
}

var metricName = regexp.MustCompile(`\bkeygate_[a-z0-9_]+`)

// checkDashboards checks that every keygate_* metric the Grafana dashboard and the
// Prometheus alert rules use is one this keygate exports.
func checkDashboards(t *testing.T, samples map[string]float64) {
	t.Helper()
	exported := map[string]bool{}
	for series := range samples {
		name, _, _ := strings.Cut(series, "{")
		exported[name] = true
	}
	var exprs []string
	raw, err := os.ReadFile("../../observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	raw, err = os.ReadFile("../../observability/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts: %v", err)
	}
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			alerts++
		}
	}
	if len(dash.Panels) < 5 || alerts < 3 {
		t.Fatalf("%d panels and %d alerts: the files are not what they should be", len(dash.Panels), alerts)
	}
	used := 0
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(e, -1) {
			used++
			if !exported[name] {
				t.Errorf("%q uses %s, which keygate does not export", e, name)
			}
		}
	}
	if used == 0 {
		t.Fatal("no keygate metric referenced; the check proves nothing")
	}
}

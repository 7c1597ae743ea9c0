package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/internal/duration"
	"github.com/keygate/keygate/vaultstore"
)

const keysUsage = `usage: keygate keys <command> [flags]

commands:
  create --name NAME --owner ID [--scopes a,b] [--expires-in 90d] [--kind product|user]
         [--models m1,m2] [--plan NAME] [--bind-cert SPIFFE_ID|sha256:FP]
         [--deliver vault:MOUNT/PATH#FIELD] [--json]
            issue a key; it is printed once (or only delivered) and never again
  list   [--unused-for 30d] [--json]
            every key with its status and last use (never the key itself)
  show   ID [--json]            one key's record
  rotate ID [--grace 30d] [--deliver vault:MOUNT/PATH#FIELD] [--json]
            replace a key; the old one stays valid for the grace (0: revoked now)
  rotate-due --older-than 90d [--grace 30d] --deliver vault:MOUNT/PATH#FIELD
            rotate every key older than the policy, delivering each new key into
            the application's Vault path; prints a JSON summary; safe to re-run
  update ID --scopes a,b [--json]  change a key's scopes
  revoke ID [--json]            revoke a key now; it is denied from then on
  usage  ID [--from T] [--to T] [--step minute|hour|day] [--by route|model|outcome] [--json]
            a key's checks from the usage store (usage.store in --config); last 24h

Each accepts --config, --key-prefix, --vault-mount, --vault-path and --audit-log; Vault
is reached through VAULT_ADDR and VAULT_TOKEN (or the config's vault.auth).
`

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return exitCode(2)
	}
	cmds := map[string]func(context.Context, *keysCommand, []string) error{
		"create": keysCreate, "list": keysList, "show": keysShow, "revoke": keysRevoke,
		"rotate": keysRotate, "rotate-due": keysRotateDue, "update": keysUpdate, "usage": keysUsageCmd,
	}
	run, ok := cmds[args[0]]
	switch {
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	case !ok:
		fmt.Fprintf(stderr, "keygate keys: unknown command %q\n\n%s", args[0], keysUsage)
		return exitCode(2)
	}
	c := &keysCommand{fs: flag.NewFlagSet("keygate keys "+args[0], flag.ContinueOnError), stdout: stdout, stderr: stderr}
	c.fs.SetOutput(stderr)
	c.common.register(c.fs)
	c.fs.BoolVar(&c.json, "json", false, "print JSON")
	c.fs.StringVar(&c.auditLog, "audit-log", "", "audit log: a file, or stdout (default from config: none)")
	defer c.close()
	return run(ctx, c, args[1:])
}

// keysCommand is the part every keys command shares: flags, config, store, audit.
type keysCommand struct {
	fs       *flag.FlagSet
	common   commonFlags
	json     bool
	auditLog string
	stdout   io.Writer
	stderr   io.Writer

	cfg    config
	store  *vaultstore.Store
	format authz.Format
	audit  *audit.Log
	closer io.Closer
}

// parse parses args, allowing one positional argument before or after the flags, and
// returns it ("" when none is given).
func (c *keysCommand) parse(args []string, positional bool) (string, error) {
	if err := c.fs.Parse(args); err != nil {
		return "", exitCode(2)
	}
	var arg string
	if positional && c.fs.NArg() > 0 {
		arg = c.fs.Arg(0)
		if err := c.fs.Parse(c.fs.Args()[1:]); err != nil {
			return "", exitCode(2)
		}
	}
	if c.fs.NArg() > 0 {
		return "", fmt.Errorf("%s: unexpected argument %q", c.fs.Name(), c.fs.Arg(0))
	}
	if positional && arg == "" {
		return "", fmt.Errorf("%s: a key id is required (keygate keys list shows them)", c.fs.Name())
	}
	return arg, nil
}

// open loads the config, logs in to Vault and opens the audit log.
func (c *keysCommand) open(ctx context.Context) error {
	var err error
	if c.cfg, err = c.common.load(c.fs); err != nil {
		return err
	}
	setFlags(c.fs, map[string]flagField{"audit-log": {&c.auditLog, &c.cfg.AuditLog}})
	if c.format, err = c.cfg.format(); err != nil {
		return err
	}
	client, auth, err := c.cfg.vaultClient(2, nil)
	if err != nil {
		return err
	}
	if _, err := auth.Login(ctx); err != nil {
		return err
	}
	if err := c.cfg.preflight(ctx, client, true); err != nil {
		return err
	}
	if c.store, err = c.cfg.store(client, nil); err != nil {
		return err
	}
	// "stdout" sends a command's audit lines to its standard error, so that what the
	// command prints (JSON, for scripts) stays clean.
	c.audit, c.closer, err = openAudit(c.cfg.AuditLog, c.stderr, c.format, 0)
	return err
}

func (c *keysCommand) close() {
	if c.closer != nil {
		c.closer.Close()
	}
}

func (c *keysCommand) event(e audit.Event) {
	if e.Actor == "" {
		e.Actor = "cli"
	}
	c.audit.Write(e)
}

// printJSON writes v as one JSON document.
func (c *keysCommand) printJSON(v any) error { return json.NewEncoder(c.stdout).Encode(v) }

func splitScopes(s string) []string {
	var out []string
	for _, sc := range strings.Split(s, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			out = append(out, sc)
		}
	}
	return out
}

func parseTarget(s string) (*vaultstore.Target, error) {
	if s == "" {
		return nil, nil
	}
	t, err := vaultstore.ParseTarget(s)
	return &t, err
}

// showKey prints a new key once, or delivers it to the target instead.
func (c *keysCommand) showKey(ctx context.Context, verb, key string, rec authz.Record, target *vaultstore.Target, extra any) error {
	now := time.Now()
	if target != nil {
		to, err := c.store.Deliver(ctx, *target, key, rec)
		if err != nil {
			return fmt.Errorf("%s %s, but delivery failed (the key is lost: revoke %s and try again): %w", verb, rec.ID, rec.ID, err)
		}
		c.event(audit.Event{Event: audit.KeyDelivered, KeyID: rec.ID, KeyHint: rec.Hint, Owner: rec.Owner,
			Details: map[string]any{"to": to}})
		if c.json {
			return c.printJSON(struct {
				admin.View
				DeliveredTo string `json:"delivered_to"`
				Old         any    `json:"old,omitempty"`
			}{admin.NewView(rec, now), to, extra})
		}
		fmt.Fprintf(c.stdout, "%s %s (%q); the key was delivered to %s and is not shown.\n", verb, rec.ID, rec.Name, to)
		return nil
	}
	if c.json {
		return c.printJSON(struct {
			admin.WithKey
			Old any `json:"old,omitempty"`
		}{admin.WithKey{View: admin.NewView(rec, now), Key: key}, extra})
	}
	fmt.Fprintf(c.stdout, "%s %s (%q).\n\n    %s\n\n", verb, rec.ID, rec.Name, key)
	fmt.Fprintln(c.stdout, "This is the only time the key is shown: keygate keeps only its SHA-256.")
	fmt.Fprintln(c.stdout, "Store it now, for example in Vault or your secrets manager.")
	return nil
}

func keysCreate(ctx context.Context, c *keysCommand, args []string) error {
	name := c.fs.String("name", "", "key name, unique per owner (\"Production App\"); required")
	owner := c.fs.String("owner", "", "account id the key belongs to; required")
	scopes := c.fs.String("scopes", "", "comma-separated scopes (\"chat:completions,models:read\")")
	expiresIn := c.fs.String("expires-in", "", "lifetime such as 720h or 90d; empty: never expires")
	kind := c.fs.String("kind", "product", "product, or user (the owner's one permanent key)")
	models := c.fs.String("models", "", "comma-separated model allow-list for model routes (\"gpt-4o,mx4-atlas-*\"); empty: any")
	plan := c.fs.String("plan", "", "rate-limit plan from the config; empty: the default plan")
	bindCert := c.fs.String("bind-cert", "", "bind the key to a client certificate: its SPIFFE ID or sha256:<fingerprint>")
	deliver := c.fs.String("deliver", "", "write the key into vault:MOUNT/PATH#FIELD instead of printing it")
	if _, err := c.parse(args, false); err != nil {
		return err
	}
	if *name == "" || *owner == "" {
		return fmt.Errorf("keys create: --name and --owner are required")
	}
	target, err := parseTarget(*deliver)
	if err != nil {
		return err
	}
	now := time.Now()
	spec := authz.KeySpec{Name: *name, Owner: *owner, Scopes: splitScopes(*scopes), Kind: authz.Kind(*kind),
		Models: splitScopes(*models), Plan: *plan, BoundCert: *bindCert}
	if *expiresIn != "" {
		d, err := duration.Parse(*expiresIn)
		if err != nil {
			return fmt.Errorf("keys create: --expires-in: %w", err)
		}
		if d <= 0 {
			return fmt.Errorf("keys create: --expires-in must be positive")
		}
		spec.ExpiresAt = now.Add(d)
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	if plans := c.cfg.RateLimits.Plans; *plan != "" && len(plans) > 0 {
		if _, ok := plans[*plan]; !ok {
			return fmt.Errorf("keys create: --plan %q: the config defines no such plan%s", *plan, planHint(plans))
		}
	}
	key, rec, err := c.format.Issue(spec, now)
	if err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	if err := c.store.Create(ctx, rec); err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	c.event(audit.Event{Event: audit.KeyCreated, KeyID: rec.ID, KeyHint: rec.Hint, Owner: rec.Owner,
		Details: map[string]any{"name": rec.Name, "scopes": rec.Scopes, "kind": rec.Kind}})
	return c.showKey(ctx, "Created", key, rec, target, nil)
}

func keysList(ctx context.Context, c *keysCommand, args []string) error {
	unusedFor := c.fs.String("unused-for", "", "only keys not used for this long, such as 30d (keys to disable)")
	if _, err := c.parse(args, false); err != nil {
		return err
	}
	var idle time.Duration
	if *unusedFor != "" {
		d, err := duration.Parse(*unusedFor)
		if err != nil {
			return fmt.Errorf("keys list: --unused-for: %w", err)
		}
		idle = d
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	recs, skipped, err := c.store.ListReport(ctx)
	if err != nil {
		return fmt.Errorf("keys list: %w", err)
	}
	if err := c.listTable(ctx, recs, idle); err != nil {
		return err
	}
	for _, sk := range skipped {
		fmt.Fprintf(c.stderr, "keygate keys list: warning: skipped %s: %s\n", sk.ID, sk.Error)
	}
	if len(skipped) > 0 {
		// Everything readable was printed; the status tells scripts the list is partial.
		return exitCode(1)
	}
	return nil
}

// listTable prints the records, as a table or JSON.
func (c *keysCommand) listTable(ctx context.Context, recs []authz.Record, idle time.Duration) error {
	now := time.Now()
	views := []admin.View{}
	for _, r := range recs {
		v := admin.NewView(r, now)
		last, err := c.store.LastUsed(ctx, r.ID)
		if err != nil {
			return fmt.Errorf("keys list: %w", err)
		}
		if !last.IsZero() {
			v.LastUsedAt = &last
		}
		if idle > 0 && !admin.Unused(r, last, now, idle) {
			continue
		}
		views = append(views, v)
	}
	if c.json {
		return c.printJSON(views)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tOWNER\tKIND\tSCOPES\tSTATUS\tCREATED\tEXPIRES\tLAST USED\tHINT")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Name, dash(v.Owner), v.Kind, dash(strings.Join(v.Scopes, ",")),
			v.Status, v.CreatedAt.Format(time.RFC3339), timeOrDash(v.ExpiresAt), timeOrDash(v.LastUsedAt), v.Hint)
	}
	return tw.Flush()
}

func keysShow(ctx context.Context, c *keysCommand, args []string) error {
	id, err := c.parse(args, true)
	if err != nil {
		return err
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	rec, err := c.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("keys show: %w", err)
	}
	v := admin.NewView(rec, time.Now())
	if last, err := c.store.LastUsed(ctx, id); err == nil && !last.IsZero() {
		v.LastUsedAt = &last
	}
	if c.json {
		return c.printJSON(v)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"id", v.ID}, {"name", v.Name}, {"owner", dash(v.Owner)}, {"kind", string(v.Kind)},
		{"scopes", dash(strings.Join(v.Scopes, ","))}, {"status", v.Status}, {"hint", v.Hint},
		{"created", v.CreatedAt.Format(time.RFC3339)}, {"expires", timeOrDash(v.ExpiresAt)},
		{"revoked", timeOrDash(v.RevokedAt)}, {"replaced by", dash(v.ReplacedBy)}, {"last used", timeOrDash(v.LastUsedAt)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

func keysRevoke(ctx context.Context, c *keysCommand, args []string) error {
	id, err := c.parse(args, true)
	if err != nil {
		return err
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	rec, err := c.store.Revoke(ctx, id, time.Now())
	if err != nil {
		return fmt.Errorf("keys revoke: %w", err)
	}
	c.event(audit.Event{Event: audit.KeyRevoked, KeyID: rec.ID, KeyHint: rec.Hint, Owner: rec.Owner})
	if c.json {
		return c.printJSON(admin.NewView(rec, time.Now()))
	}
	fmt.Fprintf(c.stdout, "Revoked %s (%q) at %s.\n", rec.ID, rec.Name, rec.RevokedAt.Format(time.RFC3339))
	return nil
}

func keysRotate(ctx context.Context, c *keysCommand, args []string) error {
	graceFlag := c.fs.String("grace", "30d", "how long the old key stays valid; 0 revokes it now")
	deliver := c.fs.String("deliver", "", "write the new key into vault:MOUNT/PATH#FIELD instead of printing it")
	id, err := c.parse(args, true)
	if err != nil {
		return err
	}
	grace, err := duration.Parse(*graceFlag)
	if err != nil || grace < 0 {
		return fmt.Errorf("keys rotate: --grace must be a duration such as 30d, or 0")
	}
	target, err := parseTarget(*deliver)
	if err != nil {
		return err
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	rot, err := c.store.Rotate(ctx, c.format, id, grace)
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	c.event(audit.Event{Event: audit.KeyRotated, KeyID: rot.Old.ID, KeyHint: rot.Old.Hint, Owner: rot.Old.Owner,
		Details: map[string]any{"new_id": rot.New.ID, "new_hint": rot.New.Hint, "grace": grace.String()}})
	old := admin.NewView(rot.Old, time.Now())
	if err := c.showKey(ctx, "Rotated "+rot.Old.ID+" to", rot.Key, rot.New, target, old); err != nil {
		return err
	}
	if !c.json {
		until := "now (revoked)"
		if old.ExpiresAt != nil && old.RevokedAt == nil {
			until = old.ExpiresAt.Format(time.RFC3339)
		}
		fmt.Fprintf(c.stdout, "The old key %s stays valid until %s.\n", rot.Old.ID, until)
	}
	return nil
}

func keysRotateDue(ctx context.Context, c *keysCommand, args []string) error {
	olderThan := c.fs.String("older-than", "90d", "rotate live keys created at least this long ago")
	graceFlag := c.fs.String("grace", "30d", "how long each old key stays valid; 0 revokes it at once")
	deliver := c.fs.String("deliver", "", "vault:MOUNT/PATH#FIELD each new key is written to; {owner} and {name} are filled in; required")
	if _, err := c.parse(args, false); err != nil {
		return err
	}
	age, err := duration.Parse(*olderThan)
	if err != nil {
		return fmt.Errorf("keys rotate-due: --older-than: %w", err)
	}
	grace, err := duration.Parse(*graceFlag)
	if err != nil || grace < 0 {
		return fmt.Errorf("keys rotate-due: --grace must be a duration such as 30d, or 0")
	}
	if *deliver == "" {
		return errors.New("keys rotate-due: --deliver is required: new keys go to the applications' Vault paths, never to the output")
	}
	target, err := vaultstore.ParseTarget(*deliver)
	if err != nil {
		return err
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	res, err := c.store.RotateDue(ctx, vaultstore.RotateDueOptions{Format: c.format, OlderThan: age, Grace: grace, Deliver: target})
	for _, r := range res.Rotated {
		c.event(audit.Event{Event: audit.KeyRotated, KeyID: r.OldID, Owner: r.Owner, Actor: "rotate-due",
			Details: map[string]any{"new_id": r.NewID, "delivered_to": r.DeliveredTo, "resumed": r.Resumed}})
	}
	if perr := c.printJSON(res); perr != nil {
		return perr
	}
	if err != nil {
		return fmt.Errorf("keys rotate-due: %w", err)
	}
	for _, sk := range res.Skipped {
		fmt.Fprintf(c.stderr, "keygate keys rotate-due: warning: skipped %s: %s\n", sk.ID, sk.Error)
	}
	if len(res.Failed) > 0 || len(res.Skipped) > 0 {
		return exitCode(1)
	}
	return nil
}

func keysUpdate(ctx context.Context, c *keysCommand, args []string) error {
	scopes := c.fs.String("scopes", "", "the key's new comma-separated scopes; required")
	id, err := c.parse(args, true)
	if err != nil {
		return err
	}
	if *scopes == "" {
		return errors.New("keys update: --scopes is required")
	}
	if err := c.open(ctx); err != nil {
		return err
	}
	before, after, err := c.store.SetScopes(ctx, id, splitScopes(*scopes))
	if err != nil {
		return fmt.Errorf("keys update: %w", err)
	}
	c.event(audit.Event{Event: audit.KeyScopesChanged, KeyID: after.ID, KeyHint: after.Hint, Owner: after.Owner,
		Details: map[string]any{"before": before.Scopes, "after": after.Scopes}})
	if c.json {
		return c.printJSON(admin.NewView(after, time.Now()))
	}
	fmt.Fprintf(c.stdout, "Scopes of %s: %s (were %s).\n", after.ID, dash(strings.Join(after.Scopes, ",")), dash(strings.Join(before.Scopes, ",")))
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

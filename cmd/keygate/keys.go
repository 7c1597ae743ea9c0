package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/duration"
	"github.com/keygate/keygate/vaultstore"
)

const keysUsage = `usage: keygate keys <command> [flags]

commands:
  create --name NAME [--owner ID] [--scopes a,b] [--expires-in 90d] [--json]
            issue a key; it is printed once and never again
  list   [--json]      every key, with its status (never the key itself)
  show   ID [--json]   one key's record
  revoke ID [--json]   revoke a key now; it is denied from then on

Each accepts --config, --key-prefix, --vault-mount and --vault-path; Vault is reached
through VAULT_ADDR and VAULT_TOKEN.
`

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return exitCode(2)
	}
	switch args[0] {
	case "create":
		return keysCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return keysList(ctx, args[1:], stdout, stderr)
	case "show", "revoke":
		return keysOne(ctx, args[0], args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	default:
		fmt.Fprintf(stderr, "keygate keys: unknown command %q\n\n%s", args[0], keysUsage)
		return exitCode(2)
	}
}

// keysCommand is the part every keys command shares: flags, config, store.
type keysCommand struct {
	fs     *flag.FlagSet
	common commonFlags
	json   bool
}

func newKeysCommand(name string, stderr io.Writer) *keysCommand {
	c := &keysCommand{fs: flag.NewFlagSet("keygate keys "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.common.register(c.fs)
	c.fs.BoolVar(&c.json, "json", false, "print JSON")
	return c
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
	return arg, nil
}

func (c *keysCommand) open(ctx context.Context) (config, *vaultstore.Store, error) {
	cfg, err := c.common.load(c.fs)
	if err != nil {
		return cfg, nil, err
	}
	client, auth, err := cfg.vaultClient(2, nil)
	if err != nil {
		return cfg, nil, err
	}
	if _, err := auth.Login(ctx); err != nil {
		return cfg, nil, err
	}
	store, err := cfg.store(client)
	return cfg, store, err
}

// keyView is a record as the CLI shows it: never the key, only its hint.
type keyView struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Owner     string     `json:"owner"`
	Scopes    []string   `json:"scopes"`
	Status    string     `json:"status"`
	Hint      string     `json:"hint"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at"`
	RevokedAt *time.Time `json:"revoked_at"`
}

func viewOf(r authz.Record, now time.Time) keyView {
	v := keyView{ID: r.ID, Name: r.Name, Owner: r.Owner, Scopes: r.Scopes, Status: string(r.StatusAt(now)),
		Hint: r.Hint, CreatedAt: r.CreatedAt}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if !r.ExpiresAt.IsZero() {
		v.ExpiresAt = &r.ExpiresAt
	}
	if !r.RevokedAt.IsZero() {
		v.RevokedAt = &r.RevokedAt
	}
	return v
}

func keysCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newKeysCommand("create", stderr)
	name := c.fs.String("name", "", "key name, unique and descriptive (\"Production App\"); required")
	owner := c.fs.String("owner", "", "account id the key belongs to")
	scopes := c.fs.String("scopes", "", "comma-separated scopes (\"chat:completions,models:read\")")
	expiresIn := c.fs.String("expires-in", "", "lifetime such as 720h or 90d; empty: never expires")
	if _, err := c.parse(args, false); err != nil {
		return err
	}
	if *name == "" {
		return fmt.Errorf("keys create: --name is required")
	}
	now := time.Now()
	spec := authz.KeySpec{Name: *name, Owner: *owner}
	for _, s := range strings.Split(*scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			spec.Scopes = append(spec.Scopes, s)
		}
	}
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
	cfg, store, err := c.open(ctx)
	if err != nil {
		return err
	}
	format, err := cfg.format()
	if err != nil {
		return err
	}
	key, rec, err := format.Issue(spec, now)
	if err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	if err := store.Create(ctx, rec); err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	if c.json {
		v := viewOf(rec, now)
		return json.NewEncoder(stdout).Encode(struct {
			keyView
			Key string `json:"key"`
		}{v, key})
	}
	fmt.Fprintf(stdout, "Created %s (%q).\n\n    %s\n\n", rec.ID, rec.Name, key)
	fmt.Fprintln(stdout, "This is the only time the key is shown: keygate keeps only its SHA-256.")
	fmt.Fprintln(stdout, "Store it now, for example in Vault or your secrets manager.")
	return nil
}

func keysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := newKeysCommand("list", stderr)
	if _, err := c.parse(args, false); err != nil {
		return err
	}
	_, store, err := c.open(ctx)
	if err != nil {
		return err
	}
	recs, err := store.List(ctx)
	if err != nil {
		return fmt.Errorf("keys list: %w", err)
	}
	now := time.Now()
	views := make([]keyView, len(recs))
	for i, r := range recs {
		views[i] = viewOf(r, now)
	}
	if c.json {
		return json.NewEncoder(stdout).Encode(views)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tOWNER\tSCOPES\tSTATUS\tCREATED\tEXPIRES\tHINT")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Name, dash(v.Owner), dash(strings.Join(v.Scopes, ",")),
			v.Status, v.CreatedAt.Format(time.RFC3339), timeOrDash(v.ExpiresAt), v.Hint)
	}
	return tw.Flush()
}

func keysOne(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	c := newKeysCommand(cmd, stderr)
	id, err := c.parse(args, true)
	if err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("keys %s: a key id is required (keygate keys list shows them)", cmd)
	}
	_, store, err := c.open(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	var rec authz.Record
	if cmd == "revoke" {
		rec, err = store.Revoke(ctx, id, now)
	} else {
		rec, err = store.Get(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("keys %s: %w", cmd, err)
	}
	v := viewOf(rec, now)
	if c.json {
		return json.NewEncoder(stdout).Encode(v)
	}
	if cmd == "revoke" {
		fmt.Fprintf(stdout, "Revoked %s (%q) at %s.\n", v.ID, v.Name, v.RevokedAt.Format(time.RFC3339))
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"id", v.ID}, {"name", v.Name}, {"owner", dash(v.Owner)}, {"scopes", dash(strings.Join(v.Scopes, ","))},
		{"status", v.Status}, {"hint", v.Hint}, {"created", v.CreatedAt.Format(time.RFC3339)},
		{"expires", timeOrDash(v.ExpiresAt)}, {"revoked", timeOrDash(v.RevokedAt)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	return tw.Flush()
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

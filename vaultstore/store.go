package vaultstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/authz"
)

// DefaultLookupTimeout caps one Vault read on the check path. Envoy's ext_authz filter
// waits 200 ms by default; a decision must come back well inside that.
const DefaultLookupTimeout = 150 * time.Millisecond

// Config configures a Store.
type Config struct {
	// Client is an authenticated Vault client. Required.
	Client *api.Client
	// Mount is the KV v2 mount; "" means "secret".
	Mount string
	// Path is the base path of keygate's data inside the mount; "" means "keygate".
	Path string
	// LookupTimeout caps each Lookup, on top of the caller's deadline; 0 means
	// DefaultLookupTimeout, a negative value leaves only the caller's deadline.
	LookupTimeout time.Duration
	// Now returns the current time, for name claims and usage; nil means time.Now.
	Now func() time.Time
	// Logger receives failed Vault requests, at most one line per class every 10 s
	// (never a key, a hash or a path); nil: not logged (they are still counted).
	Logger *slog.Logger
}

// Store keeps key records in Vault KV v2. It implements authz.KeyLookup.
type Store struct {
	client        *api.Client
	kv            *api.KVv2
	mount, base   string
	lookupTimeout time.Duration
	now           func() time.Time
	tel           telemetry
	failures      failureLog
	ownersIndexed atomic.Bool // the owner index is complete (see owners.go)
}

var _ authz.KeyLookup = (*Store)(nil)

// New returns a Store for cfg. It does not contact Vault.
func New(cfg Config) (*Store, error) {
	if cfg.Client == nil {
		return nil, errors.New("vaultstore: no vault client")
	}
	if cfg.Mount == "" {
		cfg.Mount = "secret"
	}
	if cfg.Path == "" {
		cfg.Path = "keygate"
	}
	for _, p := range []string{cfg.Mount, cfg.Path} {
		if err := checkPath(p); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.LookupTimeout == 0:
		cfg.LookupTimeout = DefaultLookupTimeout
	case cfg.LookupTimeout < 0:
		cfg.LookupTimeout = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tel, err := newTelemetry()
	if err != nil {
		return nil, err
	}
	return &Store{
		tel:           tel,
		client:        cfg.Client,
		kv:            cfg.Client.KVv2(cfg.Mount),
		mount:         cfg.Mount,
		base:          cfg.Path,
		lookupTimeout: cfg.LookupTimeout,
		now:           cfg.Now,
		failures:      failureLog{log: cfg.Logger},
	}, nil
}

// CheckPath reports whether p is usable as a KV mount or base path, as New checks it.
func CheckPath(p string) error { return checkPath(p) }

// checkPath accepts slash-separated segments of letters, digits, '-', '_' and '.'.
func checkPath(p string) error {
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q", ErrInvalidPath, p)
		}
		for _, c := range seg {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				return fmt.Errorf("%w: %q", ErrInvalidPath, p)
			}
		}
	}
	return nil
}

// storedRecord is a record as it sits in Vault.
type storedRecord struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Owner      string     `json:"owner,omitempty"`
	Scopes     []string   `json:"scopes"`
	KeySHA256  string     `json:"key_sha256"`
	Hint       string     `json:"hint"`
	Kind       authz.Kind `json:"kind,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at,omitzero"`
	RevokedAt  time.Time  `json:"revoked_at,omitzero"`
	ReplacedBy string     `json:"replaced_by,omitempty"`
	Models     []string   `json:"models,omitempty"`
	Plan       string     `json:"plan,omitempty"`
	BoundCert  string     `json:"bound_cert,omitempty"`
	CreatedBy  string     `json:"created_by,omitempty"`
	// PendingRotation is the id a rotation job has reserved for this key's successor
	// before creating it, so a job that crashes half-way resumes instead of rotating
	// the key twice.
	PendingRotation string `json:"pending_rotation,omitempty"`
}

type idEntry struct {
	KeySHA256 string `json:"key_sha256"`
}

func toStored(r authz.Record) storedRecord {
	return storedRecord{
		ID: r.ID, Name: r.Name, Owner: r.Owner, Scopes: r.Scopes, Kind: r.Kind,
		KeySHA256: r.Hash.String(), Hint: r.Hint,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, RevokedAt: r.RevokedAt, ReplacedBy: r.ReplacedBy,
		Models: r.Models, Plan: r.Plan, BoundCert: r.BoundCert, CreatedBy: r.CreatedBy,
	}
}

func (s storedRecord) record() (authz.Record, error) {
	h, err := authz.ParseKeyHash(s.KeySHA256)
	if err != nil {
		return authz.Record{}, fmt.Errorf("%w: record %s: %w", ErrUndecodable, s.ID, err)
	}
	if s.Scopes == nil {
		s.Scopes = []string{}
	}
	if s.Kind == "" {
		s.Kind = authz.KindProduct
	}
	return authz.Record{
		ID: s.ID, Name: s.Name, Owner: s.Owner, Scopes: s.Scopes, Kind: s.Kind, Hash: h, Hint: s.Hint,
		CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, RevokedAt: s.RevokedAt, ReplacedBy: s.ReplacedBy,
		Models: s.Models, Plan: s.Plan, BoundCert: s.BoundCert, CreatedBy: s.CreatedBy,
	}, nil
}

func (s *Store) recordPath(h authz.KeyHash) string { return s.base + "/records/" + h.String() }
func (s *Store) idPath(id string) string           { return s.base + "/ids/" + id }

// readCap bounds a read made on behalf of the check path when no caller deadline applies.
func (s *Store) readCap() time.Duration {
	if s.lookupTimeout > 0 {
		return s.lookupTimeout
	}
	return 2 * time.Second
}

// Lookup returns the record of the key whose SHA-256 is hash: one Vault read.
func (s *Store) Lookup(ctx context.Context, hash authz.KeyHash) (authz.Record, error) {
	if s.lookupTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.lookupTimeout)
		defer cancel()
	}
	var sr storedRecord
	if _, err := s.read(ctx, s.recordPath(hash), &sr); err != nil {
		return authz.Record{}, err
	}
	return sr.record()
}

// read decodes the current version of the KV v2 secret at path into v and returns the
// version number. A missing or deleted secret is ErrKeyNotFound.
func (s *Store) read(ctx context.Context, path string, v any) (version int, err error) {
	ctx, done := s.observe(ctx, "read", path)
	defer func() { done(err) }()
	resp, err := s.client.Logical().ReadRawWithContext(ctx, s.mount+"/data/"+path)
	if resp != nil {
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return 0, fmt.Errorf("%w: at %s", ErrKeyNotFound, path)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("%w: read %s: %w", ErrVaultUnavailable, path, err)
	}
	var env struct {
		Data *struct {
			Data     json.RawMessage `json:"data"`
			Metadata struct {
				Version int `json:"version"`
			} `json:"metadata"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return 0, fmt.Errorf("%w: read %s: %w", ErrVaultUnavailable, path, err)
	}
	if env.Data == nil || len(env.Data.Data) == 0 || string(env.Data.Data) == "null" {
		return 0, fmt.Errorf("%w: at %s", ErrKeyNotFound, path)
	}
	if err := json.Unmarshal(env.Data.Data, v); err != nil {
		// The path is not named: a record's path holds its key's hash.
		return 0, fmt.Errorf("%w: %s: %w", ErrUndecodable, s.kind(path), err)
	}
	return env.Data.Metadata.Version, nil
}

// write stores v at path if the secret's current version is cas (0: it must not exist).
func (s *Store) write(ctx context.Context, path string, v any, cas int) (err error) {
	ctx, done := s.observe(ctx, "write", path)
	defer func() { done(err) }()
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		return err
	}
	_, err = s.kv.Put(ctx, path, data, api.WithCheckAndSet(cas))
	var re *api.ResponseError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re) && re.StatusCode == http.StatusBadRequest && strings.Contains(strings.Join(re.Errors, " "), "check-and-set"):
		return fmt.Errorf("%w: at %s", ErrConflict, path)
	default:
		return fmt.Errorf("%w: write %s: %w", ErrVaultUnavailable, path, err)
	}
}

// Create stores a new record. It first claims the record's name for its owner (and,
// for a user key, the owner's one user key): a live key holding the claim makes Create
// fail with ErrNameTaken or ErrUserKeyExists. Then it writes the id index and the
// record itself, so that a crash in between leaves an id with no record (listed as
// nothing) rather than a working key nobody can see.
func (s *Store) Create(ctx context.Context, r authz.Record) error {
	if err := s.claim(ctx, r); err != nil {
		return err
	}
	return s.put(ctx, r)
}

// put writes a new record, its owner index entry and its id index, without claims.
func (s *Store) put(ctx context.Context, r authz.Record) error {
	if !authz.ValidKeyID(r.ID) {
		return fmt.Errorf("%w (want key_ and 16 letters or digits)", ErrInvalidKeyID)
	}
	if err := s.index(ctx, r); err != nil {
		return err
	}
	undo := func(paths ...string) {
		// Best effort: no index may point at a record that was never written.
		for _, p := range paths {
			_ = s.kv.DeleteMetadata(context.WithoutCancel(ctx), p)
		}
	}
	if err := s.write(ctx, s.idPath(r.ID), idEntry{KeySHA256: r.Hash.String()}, 0); err != nil {
		undo(s.ownerPath(r.Owner, r.ID))
		return err
	}
	if err := s.write(ctx, s.recordPath(r.Hash), toStored(r), 0); err != nil {
		undo(s.idPath(r.ID), s.ownerPath(r.Owner, r.ID))
		return err
	}
	return nil
}

// Get returns the record with the given id.
func (s *Store) Get(ctx context.Context, id string) (authz.Record, error) {
	r, _, err := s.get(ctx, id)
	return r, err
}

func (s *Store) get(ctx context.Context, id string) (authz.Record, int, error) {
	sr, version, err := s.getStored(ctx, id)
	if err != nil {
		return authz.Record{}, 0, err
	}
	r, err := sr.record()
	return r, version, err
}

// getStored returns the stored form of the record with the given id, and its version.
func (s *Store) getStored(ctx context.Context, id string) (storedRecord, int, error) {
	if !authz.ValidKeyID(id) {
		// The id is not echoed: a key pasted where an id belongs must not reach a log.
		return storedRecord{}, 0, fmt.Errorf("%w (want key_ and 16 letters or digits)", ErrInvalidKeyID)
	}
	var e idEntry
	if _, err := s.read(ctx, s.idPath(id), &e); err != nil {
		return storedRecord{}, 0, err
	}
	h, err := authz.ParseKeyHash(e.KeySHA256)
	if err != nil {
		return storedRecord{}, 0, fmt.Errorf("%w: id %s: %w", ErrUndecodable, id, err)
	}
	var sr storedRecord
	version, err := s.read(ctx, s.recordPath(h), &sr)
	return sr, version, err
}

// Skipped is a record List could not decode: it is left out, and reported.
type Skipped struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// List returns every record that decodes, oldest first. One that does not is left out
// (ListReport names it), so one damaged record does not hide all the others.
func (s *Store) List(ctx context.Context) ([]authz.Record, error) {
	recs, _, err := s.ListReport(ctx)
	return recs, err
}

// ListReport is List, and the records it left out because they do not decode.
func (s *Store) ListReport(ctx context.Context) ([]authz.Record, []Skipped, error) {
	return s.listDir(ctx, s.base+"/ids", "ids", func(authz.Record) bool { return true })
}

// listDir reads the records whose ids the directory dir lists (metric kind kind), keeps
// those keep accepts, and returns them oldest first, with the ones that do not decode.
// An id whose record was never written (see Create and put) is left out.
func (s *Store) listDir(ctx context.Context, dir, kind string, keep func(authz.Record) bool) ([]authz.Record, []Skipped, error) {
	lctx, done := s.observe(ctx, "list", s.base+"/"+kind)
	sec, err := s.client.Logical().ListWithContext(lctx, s.mount+"/metadata/"+dir)
	done(err)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: list keys: %w", ErrVaultUnavailable, err)
	}
	var skipped []Skipped
	var ids []any
	if sec != nil {
		ids, _ = sec.Data["keys"].([]any)
	}
	out := make([]authz.Record, 0, len(ids))
	for _, v := range ids {
		id, _ := v.(string)
		r, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrKeyNotFound), errors.Is(err, ErrInvalidKeyID):
			continue
		case errors.Is(err, ErrUndecodable):
			skipped = append(skipped, Skipped{ID: id, Error: err.Error()})
			continue
		case err != nil:
			return nil, nil, err
		}
		if keep(r) {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b authz.Record) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, skipped, nil
}

// Revoke marks the key with the given id revoked at the given time, announces the
// change on the change feed, and returns the record. Revoking a revoked key keeps the
// first revocation time and announces it again, so re-running a revoke whose
// announcement failed completes it.
func (s *Store) Revoke(ctx context.Context, id string, at time.Time) (authz.Record, error) {
	r, version, err := s.get(ctx, id)
	if err != nil {
		return authz.Record{}, err
	}
	if r.RevokedAt.IsZero() {
		r.RevokedAt = at.UTC().Truncate(time.Second)
		if err := s.write(ctx, s.recordPath(r.Hash), toStored(r), version); err != nil {
			return authz.Record{}, err
		}
	}
	if err := s.publish(ctx, r.Hash); err != nil {
		return r, fmt.Errorf("revoked, but replicas may serve the key from cache until it expires there (run the revoke again): %w", err)
	}
	return r, nil
}

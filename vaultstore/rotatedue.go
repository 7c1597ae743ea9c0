package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/authz"
)

// Target is where a key is delivered: one field of a KV v2 secret that the consuming
// application reads its key from. Path may contain {owner} and {name}, filled in per
// key ({name} as a slug: lower case, runs of other characters turned into '-').
type Target struct {
	Mount, Path, Field string
}

// ParseTarget parses "vault:MOUNT/PATH#FIELD", e.g. "vault:secret/apps/{owner}/{name}#api_key".
func ParseTarget(s string) (Target, error) {
	rest, ok := strings.CutPrefix(s, "vault:")
	if !ok {
		return Target{}, fmt.Errorf("delivery target %q: want vault:MOUNT/PATH#FIELD", s)
	}
	loc, field, ok := strings.Cut(rest, "#")
	mount, path, ok2 := strings.Cut(loc, "/")
	if !ok || !ok2 || field == "" || mount == "" || path == "" {
		return Target{}, fmt.Errorf("delivery target %q: want vault:MOUNT/PATH#FIELD", s)
	}
	t := Target{Mount: mount, Path: path, Field: field}
	if err := checkPath(mount); err != nil {
		return Target{}, err
	}
	if err := checkPath(strings.NewReplacer("{owner}", "o", "{name}", "n").Replace(path)); err != nil {
		return Target{}, err
	}
	return t, nil
}

func (t Target) String() string { return "vault:" + t.Mount + "/" + t.Path + "#" + t.Field }

// pathFor is the target's path for one key.
func (t Target) pathFor(r authz.Record) string {
	owner := strings.NewReplacer("/", "-", ":", "-", "@", "-").Replace(r.Owner)
	return strings.NewReplacer("{owner}", owner, "{name}", slug(r.Name)).Replace(t.Path)
}

func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// Deliver writes key into the target's field for rec, next to the key's id, keeping
// the secret's other fields. The secret's new version is what the application reads.
func (s *Store) Deliver(ctx context.Context, t Target, key string, rec authz.Record) (string, error) {
	path := t.pathFor(rec)
	kv := s.client.KVv2(t.Mount)
	for range 5 {
		data, version := map[string]any{}, 0
		sec, err := kv.Get(ctx, path)
		switch {
		case errors.Is(err, api.ErrSecretNotFound):
		case err != nil:
			return "", fmt.Errorf("%w: deliver to %s: %w", ErrVaultUnavailable, t.Mount+"/"+path, err)
		default:
			if sec.Data != nil {
				data = sec.Data
			}
			if sec.VersionMetadata != nil {
				version = sec.VersionMetadata.Version
			}
		}
		data[t.Field] = key
		data["keygate_key_id"] = rec.ID
		data["keygate_delivered_at"] = s.now().UTC().Format(time.RFC3339)
		_, err = kv.Put(ctx, path, data, api.WithCheckAndSet(version))
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == 400 && strings.Contains(strings.Join(re.Errors, " "), "check-and-set") {
			continue // the application's secret changed meanwhile; merge again
		}
		if err != nil {
			return "", fmt.Errorf("%w: deliver to %s: %w", ErrVaultUnavailable, t.Mount+"/"+path, err)
		}
		return t.Mount + "/" + path, nil
	}
	return "", fmt.Errorf("%w: deliver to %s", ErrConflict, t.Mount+"/"+path)
}

// delivered reports whether the target holds the key with the given id.
func (s *Store) delivered(ctx context.Context, t Target, rec authz.Record) (bool, error) {
	sec, err := s.client.KVv2(t.Mount).Get(ctx, t.pathFor(rec))
	switch {
	case errors.Is(err, api.ErrSecretNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: %w", ErrVaultUnavailable, err)
	}
	return sec.Data["keygate_key_id"] == rec.ID, nil
}

// RotateDueOptions configures a RotateDue run.
type RotateDueOptions struct {
	Format    authz.Format
	OlderThan time.Duration // rotate live keys created at least this long ago
	Grace     time.Duration // the old key stays valid this long (0: revoked at once)
	Deliver   Target        // where each new key goes; it is never printed

	// step, when set, runs after each step of one key's rotation: "reserved",
	// "created", "delivered", "finished". An error stops the run there, as a crash
	// would; tests use it.
	step func(id, step string) error
}

// RotateDueResult summarises a run; it never holds a key.
type RotateDueResult struct {
	Checked int          `json:"checked"`
	Rotated []RotatedKey `json:"rotated"`
	Failed  []FailedKey  `json:"failed"`
	Skipped []Skipped    `json:"skipped"` // records that do not decode: not rotated
}

// RotatedKey is one key a run replaced.
type RotatedKey struct {
	OldID       string    `json:"old_id"`
	NewID       string    `json:"new_id"`
	Owner       string    `json:"owner"`
	Name        string    `json:"name"`
	OldValidTo  time.Time `json:"old_valid_until"`
	DeliveredTo string    `json:"delivered_to"`
	Resumed     bool      `json:"resumed"` // finished a rotation an earlier run left half-done
}

// FailedKey is one key a run could not rotate.
type FailedKey struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// RotateDue rotates every live key older than opts.OlderThan and delivers each new key
// to its target. It is safe to run again after a crash at any point: a key's successor
// id is reserved on the old record before the successor exists, so a re-run resumes
// that rotation instead of starting another; a successor whose delivery cannot be
// confirmed is revoked (nobody has it) and replaced. The old key is marked replaced,
// and its grace period starts, only after the new key is delivered.
func (s *Store) RotateDue(ctx context.Context, opts RotateDueOptions) (RotateDueResult, error) {
	res := RotateDueResult{Rotated: []RotatedKey{}, Failed: []FailedKey{}, Skipped: []Skipped{}}
	all, skipped, err := s.ListReport(ctx)
	if err != nil {
		return res, err
	}
	res.Skipped = append(res.Skipped, skipped...)
	now := s.now()
	for _, r := range all {
		res.Checked++
		sr, version, err := s.getStored(ctx, r.ID)
		if err != nil {
			res.Failed = append(res.Failed, FailedKey{r.ID, err.Error()})
			continue
		}
		if !r.Live(now) || r.ReplacedBy != "" || (sr.PendingRotation == "" && now.Sub(r.CreatedAt) < opts.OlderThan) {
			continue
		}
		done, err := s.rotateDelivered(ctx, opts, sr, version)
		if err != nil {
			res.Failed = append(res.Failed, FailedKey{r.ID, err.Error()})
			if opts.step != nil {
				return res, err // a simulated crash ends the run
			}
			continue
		}
		res.Rotated = append(res.Rotated, done)
	}
	return res, nil
}

func (s *Store) rotateDelivered(ctx context.Context, opts RotateDueOptions, old storedRecord, version int) (RotatedKey, error) {
	step := func(id, name string) error {
		if opts.step == nil {
			return nil
		}
		return opts.step(id, name)
	}
	oldRec, err := old.record()
	if err != nil {
		return RotatedKey{}, err
	}
	out := RotatedKey{OldID: old.ID, Owner: old.Owner, Name: old.Name, Resumed: old.PendingRotation != ""}
	reserve := func() error {
		id, err := authz.NewKeyID(nil)
		if err != nil {
			return err
		}
		old.PendingRotation = id
		if err := s.write(ctx, s.recordPath(oldRec.Hash), old, version); err != nil {
			return err
		}
		version++
		return nil
	}
	if old.PendingRotation == "" {
		if err := reserve(); err != nil {
			return out, err
		}
		if err := step(old.ID, "reserved"); err != nil {
			return out, err
		}
	}

	next, _, err := s.get(ctx, old.PendingRotation)
	switch {
	case err == nil:
		ok, err := s.delivered(ctx, opts.Deliver, next)
		if err != nil {
			return out, err
		}
		if !ok {
			// Made but never delivered: nobody holds that key. Withdraw it, start over.
			if _, err := s.Revoke(ctx, next.ID, s.now()); err != nil {
				return out, err
			}
			if err := reserve(); err != nil {
				return out, err
			}
			if next, err = s.createAndDeliver(ctx, opts, oldRec, old.PendingRotation, step); err != nil {
				return out, err
			}
		}
	case errors.Is(err, ErrKeyNotFound):
		// An earlier run may have stopped between the successor's id index and its
		// record (Vault failing over in between): the reserved id points at nothing.
		// Nobody holds a key for it; drop the index so the successor can be written.
		if err := s.kv.DeleteMetadata(ctx, s.idPath(old.PendingRotation)); err != nil {
			return out, fmt.Errorf("%w: %w", ErrVaultUnavailable, err)
		}
		if next, err = s.createAndDeliver(ctx, opts, oldRec, old.PendingRotation, step); err != nil {
			return out, err
		}
	default:
		return out, err
	}

	replaced, err := s.finish(ctx, old, version, next, opts.Grace)
	if err != nil {
		return out, err
	}
	out.NewID, out.DeliveredTo = next.ID, opts.Deliver.Mount+"/"+opts.Deliver.pathFor(next)
	out.OldValidTo = replaced.ExpiresAt
	if !replaced.RevokedAt.IsZero() {
		out.OldValidTo = replaced.RevokedAt
	}
	return out, step(old.ID, "finished")
}

func (s *Store) createAndDeliver(ctx context.Context, opts RotateDueOptions, old authz.Record, id string, step func(id, name string) error) (authz.Record, error) {
	key, next, err := s.successor(opts.Format, old, id)
	if err != nil {
		return authz.Record{}, err
	}
	if err := s.put(ctx, next); err != nil {
		return authz.Record{}, err
	}
	if err := step(old.ID, "created"); err != nil {
		return authz.Record{}, err
	}
	if _, err := s.Deliver(ctx, opts.Deliver, key, next); err != nil {
		return authz.Record{}, err
	}
	return next, step(old.ID, "delivered")
}

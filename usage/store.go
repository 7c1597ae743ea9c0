package usage

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Cell names one counter: a key's checks in one minute, on one route, for one model,
// with one outcome. A check whose key is not known (missing, malformed, unknown) has
// an empty KeyID and Owner.
type Cell struct {
	Minute  int64  // Unix seconds at the start of the minute (UTC)
	KeyID   string // the key's id; "" when no key record was found
	Owner   string // the key's owner; "" when no key record was found
	Route   string // the policy route's name; "" when no route matched
	Model   string // the body's model on model routes; "" otherwise
	Outcome string // "allowed", or the deny reason's code (authz.Reason.String)
}

// Batch is one flush of one replica's counts. ID is unique per replica and flush; the
// store writes a batch at most once. Start and End are the flush window (the store does
// not use them; the export sends them as the points' times).
type Batch struct {
	ID         string
	Start, End time.Time
	Counts     map[Cell]int64
}

// Step is the width of a query's points.
type Step string

// Steps.
const (
	StepMinute Step = "minute"
	StepHour   Step = "hour"
	StepDay    Step = "day"
)

// Duration returns the step's width; 0 for an unknown step.
func (s Step) Duration() time.Duration {
	switch s {
	case StepMinute:
		return time.Minute
	case StepHour:
		return time.Hour
	case StepDay:
		return 24 * time.Hour
	}
	return 0
}

// Dimension is what a query's points are split by.
type Dimension string

// Dimensions. DimNone sums every cell of a step into one point.
const (
	DimNone    Dimension = ""
	DimRoute   Dimension = "route"
	DimModel   Dimension = "model"
	DimOutcome Dimension = "outcome"
	DimKey     Dimension = "key"
)

func (d Dimension) column() (string, bool) {
	switch d {
	case DimNone:
		return "''", true
	case DimRoute, DimModel, DimOutcome:
		return string(d), true
	case DimKey:
		return "key_id", true
	}
	return "", false
}

// Limits of a query.
const (
	// MaxSteps is the most steps a query may span (a day of minutes; two months of hours).
	MaxSteps = 1440
	// MaxPoints is the most points a query may return.
	MaxPoints = 10_000
)

// Query selects counts: one key's (KeyID), or one owner's (Owner, when KeyID is ""),
// or everyone's (All), from From (inclusive) to To (exclusive), in points of Step,
// split by By. From is rounded down and To up to whole steps (UTC).
//
// Minute points come from minute rows only: once minute rows are rolled up into hours,
// only hour and day steps see them.
type Query struct {
	KeyID string
	Owner string
	All   bool
	From  time.Time
	To    time.Time
	Step  Step
	By    Dimension
}

// Point is the count of one step (starting at Time) and one value of the query's
// dimension (Group: a route, model, outcome or key id; "" for DimNone).
type Point struct {
	Time  time.Time
	Group string
	Count int64
}

// Normalize checks q and rounds its range to whole steps.
func (q Query) Normalize() (Query, error) {
	step := q.Step.Duration()
	if step == 0 {
		return q, fmt.Errorf("%w: step %q: want minute, hour or day", ErrInvalidQuery, q.Step)
	}
	if _, ok := q.By.column(); !ok {
		return q, fmt.Errorf("%w: by %q: want route, model, outcome or key", ErrInvalidQuery, q.By)
	}
	if q.From.IsZero() || q.To.IsZero() || !q.From.Before(q.To) {
		return q, fmt.Errorf("%w: from must be before to", ErrInvalidQuery)
	}
	q.From = q.From.UTC().Truncate(step)
	if t := q.To.UTC().Truncate(step); t.Before(q.To) {
		q.To = t.Add(step)
	} else {
		q.To = t
	}
	if n := q.To.Sub(q.From) / step; n > MaxSteps {
		return q, fmt.Errorf("%w: %d steps of a %s (at most %d)", ErrTooManyPoints, n, q.Step, MaxSteps)
	}
	return q, nil
}

// dialect is what differs between the databases.
type dialect struct {
	name string
	// migrateLock, when set, runs first in the schema transaction, so that replicas
	// sharing the store create it one at a time.
	migrateLock string
	// maintainLock, when set, runs first in the maintenance transaction and returns
	// whether this replica may maintain now (false: another one is doing it).
	maintainLock string
	// maintainTx are the options of the maintenance transaction.
	maintainTx *sql.TxOptions
	// dollar numbers placeholders $1, $2… instead of ?.
	dollar bool
}

// SQLStore keeps counts in SQLite or PostgreSQL. It is safe for concurrent use, and
// several processes may share one database.
type SQLStore struct {
	db *sql.DB
	d  dialect
}

// The schema: minute and hour rows with the same columns, and the ids of the batches
// written. Buckets are Unix seconds (UTC) at the start of the minute or hour.
var schema = []string{
	`CREATE TABLE IF NOT EXISTS usage_minute (bucket BIGINT NOT NULL, key_id TEXT NOT NULL, owner TEXT NOT NULL,
		route TEXT NOT NULL, model TEXT NOT NULL, outcome TEXT NOT NULL, count BIGINT NOT NULL,
		PRIMARY KEY (key_id, bucket, owner, route, model, outcome))`,
	`CREATE INDEX IF NOT EXISTS usage_minute_owner ON usage_minute (owner, bucket)`,
	`CREATE INDEX IF NOT EXISTS usage_minute_bucket ON usage_minute (bucket)`,
	`CREATE TABLE IF NOT EXISTS usage_hour (bucket BIGINT NOT NULL, key_id TEXT NOT NULL, owner TEXT NOT NULL,
		route TEXT NOT NULL, model TEXT NOT NULL, outcome TEXT NOT NULL, count BIGINT NOT NULL,
		PRIMARY KEY (key_id, bucket, owner, route, model, outcome))`,
	`CREATE INDEX IF NOT EXISTS usage_hour_owner ON usage_hour (owner, bucket)`,
	`CREATE INDEX IF NOT EXISTS usage_hour_bucket ON usage_hour (bucket)`,
	`CREATE TABLE IF NOT EXISTS usage_batches (id TEXT PRIMARY KEY, written_at BIGINT NOT NULL)`,
}

const cellColumns = "key_id, bucket, owner, route, model, outcome"

func newSQLStore(ctx context.Context, db *sql.DB, d dialect) (*SQLStore, error) {
	s := &SQLStore{db: db, d: d}
	err := s.tx(ctx, nil, func(tx *sql.Tx) error {
		if d.migrateLock != "" {
			if _, err := tx.ExecContext(ctx, d.migrateLock); err != nil {
				return err
			}
		}
		for _, stmt := range schema {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: creating the %s schema: %w", ErrStore, d.name, err)
	}
	return s, nil
}

// Close closes the database.
func (s *SQLStore) Close() error { return s.db.Close() }

// Dialect names the database: "sqlite" or "postgres".
func (s *SQLStore) Dialect() string { return s.d.name }

func (s *SQLStore) tx(ctx context.Context, opts *sql.TxOptions, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// sql rewrites ? placeholders for the dialect.
func (s *SQLStore) sql(q string) string {
	if !s.d.dollar {
		return q
	}
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// rowsPerInsert bounds a multi-row upsert's parameters (7 per row) under every
// database's limit.
const rowsPerInsert = 500

// Write writes the batches in one transaction. A batch whose id was written before is
// skipped, so writing a batch again after a commit that was reported failed does not
// count it twice.
func (s *SQLStore) Write(ctx context.Context, batches []Batch) error {
	if len(batches) == 0 {
		return nil
	}
	now := time.Now().Unix()
	err := s.tx(ctx, nil, func(tx *sql.Tx) error {
		merged := map[Cell]int64{}
		mark := s.sql(`INSERT INTO usage_batches (id, written_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`)
		for _, b := range batches {
			res, err := tx.ExecContext(ctx, mark, b.ID, now)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				continue // written before
			}
			for c, n := range b.Counts {
				merged[c] += n
			}
		}
		// One order for every writer, so that concurrent upserts lock rows in the same
		// order and cannot deadlock.
		cells := make([]Cell, 0, len(merged))
		for c := range merged {
			cells = append(cells, c)
		}
		slices.SortFunc(cells, compareCells)
		for len(cells) > 0 {
			chunk := cells[:min(len(cells), rowsPerInsert)]
			cells = cells[len(chunk):]
			var q strings.Builder
			q.WriteString("INSERT INTO usage_minute (" + cellColumns + ", count) VALUES ")
			args := make([]any, 0, 7*len(chunk))
			for i, c := range chunk {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?, ?, ?, ?)")
				args = append(args, c.KeyID, c.Minute, c.Owner, c.Route, c.Model, c.Outcome, merged[c])
			}
			q.WriteString(" ON CONFLICT (" + cellColumns + ") DO UPDATE SET count = usage_minute.count + excluded.count")
			if _, err := tx.ExecContext(ctx, s.sql(q.String()), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: writing %d batches: %w", ErrStore, len(batches), err)
	}
	return nil
}

func compareCells(a, b Cell) int {
	return cmp.Or(strings.Compare(a.KeyID, b.KeyID), cmp.Compare(a.Minute, b.Minute), strings.Compare(a.Owner, b.Owner),
		strings.Compare(a.Route, b.Route), strings.Compare(a.Model, b.Model), strings.Compare(a.Outcome, b.Outcome))
}

// batchIDsKept is how long batch ids are remembered: far longer than a replica keeps
// retrying a batch.
const batchIDsKept = 7 * 24 * time.Hour

// Maintain rolls minute rows older than rollupAfter (whole hours) up into hour rows,
// and deletes rows older than retention and batch ids older than a week, in one
// transaction. Replicas sharing the store may call it at the same time.
func (s *SQLStore) Maintain(ctx context.Context, now time.Time, rollupAfter, retention time.Duration) error {
	rollup := now.Add(-rollupAfter).Truncate(time.Hour).Unix()
	keep := now.Add(-retention).Unix()
	err := s.tx(ctx, s.d.maintainTx, func(tx *sql.Tx) error {
		if s.d.maintainLock != "" {
			var mine bool
			if err := tx.QueryRowContext(ctx, s.d.maintainLock).Scan(&mine); err != nil {
				return err
			}
			if !mine {
				return nil // another replica is maintaining the store
			}
		}
		for _, st := range []struct {
			q    string
			args []any
		}{
			{`INSERT INTO usage_hour (` + cellColumns + `, count)
				SELECT key_id, bucket - bucket % 3600, owner, route, model, outcome, SUM(count) FROM usage_minute
				WHERE bucket < ? GROUP BY key_id, bucket - bucket % 3600, owner, route, model, outcome
				ON CONFLICT (` + cellColumns + `) DO UPDATE SET count = usage_hour.count + excluded.count`, []any{rollup}},
			{`DELETE FROM usage_minute WHERE bucket < ?`, []any{rollup}},
			{`DELETE FROM usage_hour WHERE bucket < ?`, []any{keep}},
			{`DELETE FROM usage_minute WHERE bucket < ?`, []any{keep}},
			{`DELETE FROM usage_batches WHERE written_at < ?`, []any{now.Add(-batchIDsKept).Unix()}},
		} {
			if _, err := tx.ExecContext(ctx, s.sql(st.q), st.args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: rollup and retention: %w", ErrStore, err)
	}
	return nil
}

// Query returns the points of q, ordered by time and group. Steps without counts have
// no points.
func (s *SQLStore) Query(ctx context.Context, q Query) ([]Point, error) {
	q, err := q.Normalize()
	if err != nil {
		return nil, err
	}
	step := int64(q.Step.Duration() / time.Second)
	group, _ := q.By.column()
	var where string
	var args []any
	switch {
	case q.KeyID != "":
		where, args = "key_id = ?", []any{q.KeyID}
	case !q.All:
		where, args = "owner = ?", []any{q.Owner}
	default:
		where = "1 = 1"
	}
	where += " AND bucket >= ? AND bucket < ?"
	args = append(args, q.From.Unix(), q.To.Unix())
	sel := func(table string) string {
		return fmt.Sprintf("SELECT bucket - bucket %% %d AS t, %s AS g, count FROM %s WHERE %s", step, group, table, where)
	}
	from := sel("usage_minute")
	if q.Step != StepMinute {
		from += " UNION ALL " + sel("usage_hour")
		args = append(args, args...)
	}
	stmt := fmt.Sprintf("SELECT t, g, CAST(SUM(count) AS BIGINT) FROM (%s) u GROUP BY t, g ORDER BY t, g LIMIT %d", from, MaxPoints+1)
	rows, err := s.db.QueryContext(ctx, s.sql(stmt), args...)
	if err != nil {
		return nil, fmt.Errorf("%w: query: %w", ErrStore, err)
	}
	defer rows.Close()
	out := []Point{}
	for rows.Next() {
		var t int64
		var p Point
		if err := rows.Scan(&t, &p.Group, &p.Count); err != nil {
			return nil, fmt.Errorf("%w: query: %w", ErrStore, err)
		}
		p.Time = time.Unix(t, 0).UTC()
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: query: %w", ErrStore, err)
	}
	if len(out) > MaxPoints {
		return nil, fmt.Errorf("%w (at most %d)", ErrTooManyPoints, MaxPoints)
	}
	return out, nil
}

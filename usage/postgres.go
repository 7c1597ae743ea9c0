package usage

import (
	"context"
	"database/sql"
	"fmt"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// maintenanceLock is the advisory lock key replicas take to migrate and maintain.
const maintenanceLock = 0x6b6579676174 // "keygat"

// OpenPostgres opens the PostgreSQL database at dsn (a URL or key=value string), which
// many replicas may share, and creates the schema if needed.
func OpenPostgres(ctx context.Context, dsn string) (*SQLStore, error) {
	if dsn == "" {
		return nil, fmt.Errorf("%w: the PostgreSQL DSN is empty", ErrStore)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		// pgx's parse errors may quote the DSN, password included.
		return nil, fmt.Errorf("%w: the PostgreSQL DSN does not parse", ErrStore)
	}
	db.SetMaxOpenConns(4)
	// Maintenance reads its rows and deletes them in one snapshot: a row a flush
	// changes in between makes it fail (and retry later) rather than lose the change.
	return newSQLStore(ctx, db, dialect{name: "postgres", dollar: true,
		migrateLock:  fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", maintenanceLock),
		maintainLock: fmt.Sprintf("SELECT pg_try_advisory_xact_lock(%d)", maintenanceLock),
		maintainTx:   &sql.TxOptions{Isolation: sql.LevelRepeatableRead}})
}

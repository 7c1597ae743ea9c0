package usage

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // pure Go: no cgo
)

// OpenSQLite opens (creating it if needed) the SQLite database at path, in WAL mode, for
// one replica and development. Writes take the database's lock at the start of their
// transaction, so another process (keygate keys usage) may read it at the same time.
func OpenSQLite(ctx context.Context, path string) (*SQLStore, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: the SQLite path is empty", ErrStore)
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStore, err)
		}
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s: %w", ErrStore, path, err)
	}
	// One writer at a time in the process: SQLite serializes writers anyway, and a
	// second connection would only wait on the lock.
	db.SetMaxOpenConns(1)
	return newSQLStore(ctx, db, dialect{name: "sqlite"})
}

// Package usage counts checks per key, per minute, by route, model and outcome, and keeps
// the counts in a database: SQLite (embedded, for one replica and development) or
// PostgreSQL (shared by many replicas), with the same schema and queries.
//
// An Aggregator sits beside the check path. Count adds one to an in-memory cell under a
// short per-shard lock and allocates only when a cell is new in the current window; it
// never waits on the database. Every flush interval, Flush swaps the shards' maps for
// empty ones and writes the window as one batch in one transaction. A batch carries an
// id (the replica's id and a sequence number) that the store records in the same
// transaction, so a batch whose commit was reported failed but did happen is skipped
// when it is written again. A failed batch is kept and written again with the next one.
//
// Minute rows are rolled up into hour rows after a configurable age, and both are
// deleted after the retention; Store.Maintain does both in one transaction.
//
// An Exporter sends the same batches over OTLP/gRPC as the delta sum keygate.usage.checks,
// as a second destination (Options.Export) or the only one, with its own queue of failed
// batches: at least once, since OTLP has no request id a receiver could deduplicate on.
package usage

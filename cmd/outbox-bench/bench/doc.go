// Package bench is the load generator and measurement tool behind `make
// bench` (cmd/outbox-bench): it writes outbox events through the SDK into a
// PostgreSQL of its own (a throwaway cluster, fsync on by default) and runs
// the relay as a child process against each sink, measuring the insert
// ceiling, the relay's throughput live and from a backlog, commit-to-ack
// latency, the relay's CPU and memory, and what one SDK Write costs a
// business transaction. It prints one table with the targets of
// docs/performance.md next to each number.
//
// The relay child is `outbox-bench relay` (the relay package and sink
// constructors as `outbox relay` uses them, plus a null sink and exact
// commit-to-ack recording), or `outbox relay` itself with --relay-bin. Every
// run uses its own schema, publication, slots, streams, queues and keys, and
// removes them at the end.
package bench

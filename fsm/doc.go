// Package fsm owns Hivemind's replicated state: the Raft command encoding,
// the deterministic state machine that applies commands, the in-memory
// state store that every reader uses, and the SQLite snapshot format.
//
// A Raft entry is one CommandType byte followed by the protobuf payload
// named next to the type (see Encode and Decode). The leader decides every
// ID, timestamp and placement and writes them into the command; the FSM only
// records results.
//
// FSM implements raft.FSM, and keeps that interface's contract:
//
//   - Apply is deterministic. Given the same state and the same entry it
//     makes the same change on every manager: it never reads the clock,
//     never draws random numbers and never does I/O. A command that cannot
//     be decoded, has an unknown type or breaks a rule (a version conflict,
//     a missing app) changes nothing and returns an error wrapping one of
//     the sentinels; Apply never panics on bad input. Apply is atomic: a
//     command is applied in one store transaction or not at all.
//   - Snapshot is quick. It takes a point-in-time read view of the store,
//     which costs no copy, and returns; Apply may run on while the snapshot
//     is persisted.
//   - Persist does the heavy work. It writes the view as a SQLite database
//     to a temporary file and copies that into the sink. Release does
//     nothing.
//   - Restore discards all prior state. It reads a SQLite snapshot, builds
//     a fresh store from it and swaps it in as a whole, so readers see
//     either the old state or the new one, never a mix.
//
// What each command does is written on its handler in apply.go. Some
// rules there are easy to miss. A task asked to stop (by Plan or
// RemoveApp) gets the stop reason as its message, unless it failed and its
// worker said why: that message stays. It also gets stop_index, the index
// of that entry: a worker whose reported endpoints_index (TaskReports) is
// at least that serves an endpoint set without the task, and once every
// live worker does, the leader names the task in a Plan's rotated_out. RemoveApp deletes the app and all of its
// deployments at once, so a new app of the same name starts with no
// history; the app's tasks stay, marked desired "stop" with the message
// "app removed", until their workers report them stopped and the leader
// deletes them with DeleteTasks. A Plan whose deployment belongs to an
// app that no longer exists leaves that deployment out, so a plan made
// just before a RemoveApp cannot bring it back.
//
// Readers use State(): a Store whose Snapshot method gives a consistent
// point-in-time view, and whose Changed channel is closed after each Apply
// or Restore commits. Every object that a read returns is shared with the
// store and with other readers: callers must not modify it, and must
// proto.Clone it first if they need a changed copy.
//
// Snapshots are SQLite databases (modernc.org/sqlite, no cgo) with one table
// per object kind: key columns plus the object as protojson with proto field
// names, so `sqlite3 FILE "select json_extract(json,'$.state') from tasks"`
// works. The meta table holds raft_index (the last entry applied when the
// snapshot was taken), raft_term (that entry's term; absent in snapshots
// written before it was added), schema_version and cluster_meta.
// InspectSQLite summarises a snapshot file without loading it.
//
// The package never talks to Raft peers, never proposes commands and never
// decides anything on its own: it only applies what the leader wrote.
package fsm

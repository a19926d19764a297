package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind-orch/hivemind/fsm"
	"github.com/hivemind-orch/hivemind/raftnode"
	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// MaxSnapshotBody is the largest snapshot POST /v1/snapshot accepts.
const MaxSnapshotBody = 1 << 30

// forwardedHeader marks a restore upload a follower passed on to the
// leader, so that it is never passed on twice.
const forwardedHeader = "X-Hivemind-Forwarded-By"

// Restorer is the part of the Raft node that replaces the cluster's
// state with a snapshot. *raftnode.Node implements it; a Config.Raft
// without it answers 501 to POST /v1/snapshot.
type Restorer interface {
	// Restore replaces the state of every manager with the snapshot
	// read from r (size bytes); it must run on the leader.
	Restore(ctx context.Context, r io.Reader, size int64) error
}

var _ Restorer = (*raftnode.Node)(nil)

// RestoreResult is the JSON answer of POST /v1/snapshot.
type RestoreResult struct {
	// RaftIndex is the Raft index recorded in the restored snapshot.
	RaftIndex uint64 `json:"raft_index"`
	// Bytes is the size of the snapshot.
	Bytes int64 `json:"bytes"`
	// Apps is the number of apps in the restored state.
	Apps int `json:"apps"`
}

// serveRestore takes a SQLite snapshot as the request body, checks it
// is one, and restores it into the cluster on the leader; a follower
// passes the upload on to the leader's HTTP address.
func (s *Server) serveRestore(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	dir, err := os.MkdirTemp("", "hivemind-restore-")
	if err != nil {
		s.restoreFailed(w, http.StatusInternalServerError, codes.Internal, err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "upload.db")

	size, err := spool(path, http.MaxBytesReader(w, r.Body, MaxSnapshotBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		w.Header().Set("Connection", "close")
		s.restoreFailed(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
			fmt.Errorf("snapshot is larger than the limit of %d bytes", int64(MaxSnapshotBody)))
		return
	case err != nil:
		s.restoreFailed(w, http.StatusBadRequest, codes.InvalidArgument,
			fmt.Errorf("read snapshot upload: %w", err))
		return
	}
	info, err := fsm.InspectSQLite(path)
	if err == nil {
		// The whole file, as every manager's state machine will read
		// it: one it cannot read would stop them all.
		err = fsm.CheckSQLite(path)
	}
	if err != nil {
		s.restoreFailed(w, http.StatusBadRequest, codes.InvalidArgument,
			fmt.Errorf("uploaded file: %w", errors.Unwrap(err)))
		return
	}

	if !s.cfg.Raft.IsLeader() {
		s.forwardRestore(w, r, path, size)
		return
	}
	rs, ok := s.cfg.Raft.(Restorer)
	if !ok {
		s.restoreFailed(w, http.StatusNotImplemented, codes.Unimplemented,
			errors.New("snapshot restore is not supported by this manager"))
		return
	}
	f, err := os.Open(path)
	if err != nil {
		s.restoreFailed(w, http.StatusInternalServerError, codes.Internal, err)
		return
	}
	defer f.Close()
	s.restoreMu.Lock()
	defer s.restoreMu.Unlock()
	before := s.store.Meta().GetRestoreEpoch()
	if err := rs.Restore(r.Context(), f, size); err != nil {
		status, code := http.StatusInternalServerError, codes.Internal
		if noLeader(err) {
			status, code = http.StatusServiceUnavailable, codes.Unavailable
		}
		s.restoreFailed(w, status, code, err)
		return
	}
	// The restored state records the index it was saved at, older than
	// the log's, and in a disaster recovery (a new cluster, a new log)
	// older than what workers that kept running have seen. Workers order
	// lists by (restore epoch, index) and ignore older ones, so commit
	// the restored meta now with a new epoch: this leader's clock, which
	// is past the epoch of any earlier restore a worker may have seen,
	// whichever cluster did it (a count kept in a lost cluster is not:
	// its new cluster would count from the backup's value), and in any
	// case above the epochs replaced and restored.
	//
	// TODO: restored nodes keep the endpoints_index of the saved history,
	// and a worker's report may still carry one from before the restore;
	// until it reports the set it serves now, the leader compares an
	// index of another log with the new stop indexes and may take a task
	// out of rotation unconfirmed. Clearing every node's endpoints_index
	// with this entry (a field of SetMetaCmd), and the agent sending its
	// served index only with the position it was served at, would close
	// that window.
	meta := proto.Clone(s.store.Meta()).(*pb.ClusterMeta)
	meta.RestoreEpoch = nextRestoreEpoch(before, meta.GetRestoreEpoch(), s.cfg.Now())
	if _, err := s.cfg.Raft.Propose(r.Context(), fsm.SetMetaType,
		&pb.SetMetaCmd{Meta: meta}); err != nil {
		s.restoreFailed(w, http.StatusInternalServerError, codes.Internal,
			fmt.Errorf("restored, but recording the new index failed: %w", err))
		return
	}
	s.log.Info("restored snapshot into the cluster", "raft_index", info.RaftIndex,
		"bytes", size, "index", s.store.Index())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(RestoreResult{
		RaftIndex: info.RaftIndex, Bytes: size, Apps: info.Counts["apps"],
	})
}

// nextRestoreEpoch is the epoch a restore commits: now in Unix
// nanoseconds, or one above the epochs replaced and restored if the clock
// is behind them.
//
// TODO: a manager whose clock is behind the one that restored before, by
// more than the time between the two restores, gives a disaster recovery
// an epoch workers take for old, and they keep their containers until
// restarted. Workers sending the highest epoch they saw when they open a
// stream would let the leader commit one past it.
func nextRestoreEpoch(replaced, restored uint64, now time.Time) uint64 {
	return max(replaced+1, restored+1, uint64(now.UnixNano()))
}

// forwardRestore passes the spooled upload to the leader's HTTP address
// and copies its answer back.
func (s *Server) forwardRestore(w http.ResponseWriter, r *http.Request, path string, size int64) {
	if by := r.Header.Get(forwardedHeader); by != "" {
		s.restoreFailed(w, http.StatusServiceUnavailable, codes.Unavailable,
			fmt.Errorf("%w: forwarded by %q to %q, which does not lead", ErrNoLeader, by, s.cfg.Name))
		return
	}
	leader, addr, err := s.leaderHTTPAddr()
	if err != nil {
		s.restoreFailed(w, http.StatusServiceUnavailable, codes.Unavailable, err)
		return
	}
	// As a forwarded gRPC call does, it ends once another leader is
	// known: the one it went to may be cut off.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	go s.cancelOnNewLeader(ctx, leader, cancel)
	f, err := os.Open(path)
	if err != nil {
		s.restoreFailed(w, http.StatusInternalServerError, codes.Internal, err)
		return
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+addr+"/v1/snapshot", f)
	if err != nil {
		s.restoreFailed(w, http.StatusInternalServerError, codes.Internal, err)
		return
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", sqliteContentType)
	req.Header.Set(forwardedHeader, s.cfg.Name)
	resp, err := forwardClient.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errLeaderMoved) {
			err = cause
		}
		s.restoreFailed(w, http.StatusBadGateway, codes.Unavailable,
			fmt.Errorf("forward restore to the leader at %s: %w", addr, err))
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		s.log.Warn("restore answer from the leader interrupted", "error", err)
	}
}

// forwardClient carries restores a follower forwards: a leader that does
// not accept the connection is given up on after a few seconds.
var forwardClient = &http.Client{Transport: &http.Transport{
	DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
}}

// leaderHTTPAddr is the leader's name and HTTP "ip:port" from its node
// record.
//
// TODO: right after an election the new leader's node may not be in
// the store yet; a gossip resolver like Config.PeerRPCAddr for the HTTP
// port would cover that window (the client can retry meanwhile).
func (s *Server) leaderHTTPAddr() (string, string, error) {
	name, _ := s.cfg.Raft.Leader()
	if name == "" {
		return "", "", ErrNoLeader
	}
	n := s.store.Node(name)
	if n == nil || n.GetRole() != pb.RoleManager || n.GetAddress() == "" || n.GetHttpPort() == 0 {
		return "", "", fmt.Errorf("%w: leader %q: no http address known", ErrNoLeader, name)
	}
	return name, net.JoinHostPort(n.GetAddress(), strconv.Itoa(int(n.GetHttpPort()))), nil
}

// spool copies r into a new file at path and returns its size.
func spool(path string, r io.Reader) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// restoreFailed answers in the gateway's {code, message} format.
func (s *Server) restoreFailed(w http.ResponseWriter, status int, code codes.Code, err error) {
	if status >= 500 {
		s.log.Error("snapshot restore failed", "error", err)
	} else {
		s.log.Warn("snapshot restore refused", "error", err)
	}
	jsonError(w, status, code, "snapshot restore: "+err.Error())
}

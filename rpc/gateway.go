package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// sqliteContentType is the media type of a snapshot download.
const sqliteContentType = "application/vnd.sqlite3"

// MaxRequestBody is the largest JSON request body the HTTP gateway reads,
// the order of gRPC's default receive limit: an app spec is a few KiB, and
// the gateway holds a body in memory several times over while decoding it.
// Larger bodies get 413. Routes under /v1/snapshot are exempt: a restore
// upload carries a whole state file and has its own limit,
// MaxSnapshotBody.
const MaxRequestBody = 4 << 20

// gateway builds the HTTP handler: the Control routes of proto/api.yaml,
// translated to calls on our own gRPC address at rpcAddr, plus the
// snapshot download and restore, the health check and the Prometheus
// metrics. Errors come back as JSON
// {code, message} with the HTTP status of the gRPC code.
func (s *Server) gateway(ctx context.Context, rpcAddr string) (http.Handler, error) {
	marshaler := &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{
			UseProtoNames:   true,
			EmitUnpopulated: true,
		},
		// Specs are strict: an unknown field is an error, as in YAML.
		UnmarshalOptions: protojson.UnmarshalOptions{},
	}
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, marshaler),
		runtime.WithRoutingErrorHandler(routingError),
	)

	err := pb.RegisterControlHandlerFromEndpoint(ctx, mux, rpcAddr, s.dialOp)
	if err != nil {
		return nil, fmt.Errorf("rpc gateway: register control: %w", err)
	}
	routes := []struct {
		method, path string
		h            runtime.HandlerFunc
	}{
		{http.MethodGet, "/v1/snapshot", s.serveSnapshot},
		{http.MethodPost, "/v1/snapshot", s.serveRestore},
		{http.MethodGet, "/v1/health", serveHealth},
		{http.MethodGet, "/metrics", handle(s.metricsHandler())},
	}
	for _, r := range routes {
		if err := mux.HandlePath(r.method, r.path, r.h); err != nil {
			return nil, fmt.Errorf("rpc gateway: %s %s: %w", r.method, r.path, err)
		}
	}
	return validPath(limitBody(mux, MaxRequestBody)), nil
}

// routingError answers a known path asked with another method 405, not
// the gateway's default 501 (Unimplemented); other routing errors are
// the gateway's.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler,
	w http.ResponseWriter, r *http.Request, status int) {
	if status != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, status)
		return
	}
	jsonError(w, http.StatusMethodNotAllowed, codes.Unimplemented,
		fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
}

// validPath answers 400 to a path that is not UTF-8 once decoded: a name
// in it could not go into a protobuf string, and the call would fail
// later as an internal error.
func validPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !utf8.ValidString(r.URL.Path) {
			jsonError(w, http.StatusBadRequest, codes.InvalidArgument,
				"request path is not valid UTF-8")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// jsonError answers status with the gateway's {code, message}.
func jsonError(w http.ResponseWriter, status int, code codes.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{int(code), msg})
}

// limitBody reads at most limit bytes of a request body before next sees
// it, answering 413 with a JSON {code, message} naming the limit when the
// body is larger, so that no client can make the manager buffer an
// unbounded body. The snapshot routes pass through untouched.
func limitBody(next http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody ||
			strings.HasPrefix(r.URL.Path, "/v1/snapshot") {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > limit {
			bodyTooLarge(w, limit)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			bodyTooLarge(w, limit)
			return
		case err != nil:
			http.Error(w, "request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

// bodyTooLarge answers 413 in the gateway's error format.
func bodyTooLarge(w http.ResponseWriter, limit int64) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Connection", "close")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	fmt.Fprintf(w, "{\"code\":%d,\"message\":\"request body is larger than "+
		"the limit of %d bytes\"}\n", codes.ResourceExhausted, limit)
}

// handle adapts an http.Handler to a gateway route.
func handle(h http.Handler) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		h.ServeHTTP(w, r)
	}
}

// serveHealth answers 200 while the process serves HTTP at all.
func serveHealth(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, "{\"status\":\"ok\"}\n")
}

// serveSnapshot streams this manager's state as a SQLite file.
//
// TODO: the snapshot is of the local replica, which on a follower may lag
// the leader by a few entries; forwarding it (or a barrier first) would
// give read-your-writes here as for the Control reads.
func (s *Server) serveSnapshot(w http.ResponseWriter, r *http.Request, _ map[string]string) {
	if s.cfg.FSM == nil {
		http.Error(w, "snapshot: this server has no state machine", http.StatusServiceUnavailable)
		return
	}
	dir, err := os.MkdirTemp("", "hivemind-snapshot-")
	if err != nil {
		s.snapshotFailed(w, err)
		return
	}
	defer os.RemoveAll(dir)

	path := filepath.Join(dir, "state.db")
	if err := s.cfg.FSM.WriteSQLite(path); err != nil {
		s.snapshotFailed(w, err)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		s.snapshotFailed(w, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.snapshotFailed(w, err)
		return
	}

	h := w.Header()
	h.Set("Content-Type", sqliteContentType)
	h.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	h.Set("Content-Disposition", `attachment; filename="hivemind-snapshot.db"`)
	if _, err := io.Copy(w, f); err != nil {
		// The status line is gone; all we can do is log.
		s.log.Warn("snapshot download interrupted", "error", err)
	}
}

func (s *Server) snapshotFailed(w http.ResponseWriter, err error) {
	s.log.Error("snapshot failed", "error", err)
	http.Error(w, "snapshot: "+err.Error(), http.StatusInternalServerError)
}

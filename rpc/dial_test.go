package rpc

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind-orch/hivemind/rpc/pb"
)

// TestDialReconnectsQuickly: a connection from Dial reaches a manager
// that was down for a while within about a second of it serving again.
// With gRPC's default backoff the retry after several failures comes
// seconds later.
func TestDialReconnectsQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("keeps a server down for seconds")
	}
	serve := func(l net.Listener) *grpc.Server {
		s := grpc.NewServer()
		pb.RegisterControlServer(s, pb.UnimplementedControlServer{})
		go s.Serve(l)
		return s
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	srv := serve(l)

	cc, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctl := pb.NewControlClient(cc)
	// reached: the server answered (Unimplemented), not the transport.
	reached := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := ctl.ClusterStatus(ctx, &pb.ClusterStatusRequest{})
		if status.Code(err) != codes.Unimplemented {
			return fmt.Errorf("server at %s not reached: %v", addr, err)
		}
		return nil
	}
	waitFor(t, reached)

	// Down long enough for the default backoff to grow past 2s; calls
	// keep the connection trying.
	srv.Stop()
	for down := time.Now(); time.Since(down) < 5*time.Second; {
		if reached() == nil {
			t.Fatalf("server at %s still reached after Stop", addr)
		}
		time.Sleep(50 * time.Millisecond) // a call every 50ms, not a wait
	}

	l, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	srv = serve(l)
	defer srv.Stop()
	up := time.Now()
	waitFor(t, reached)
	if took := time.Since(up); took > 2*time.Second {
		t.Errorf("reached the server %s after it served again, want within the 1s max backoff", took)
	}
}

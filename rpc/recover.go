package rpc

import (
	"context"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recoverUnary turns a panic in a handler into an Internal error, so one
// bad request never takes a manager down.
func (s *Server) recoverUnary(ctx context.Context, req any,
	info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {

	defer func() {
		if r := recover(); r != nil {
			s.logPanic(info.FullMethod, r)
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(ctx, req)
}

// recoverStream is recoverUnary for streaming methods.
func (s *Server) recoverStream(srv any, ss grpc.ServerStream,
	info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {

	defer func() {
		if r := recover(); r != nil {
			s.logPanic(info.FullMethod, r)
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(srv, ss)
}

func (s *Server) logPanic(method string, r any) {
	s.log.Error("panic in handler", "method", method, "panic", r,
		"stack", string(debug.Stack()))
}

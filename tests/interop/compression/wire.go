package main

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc/stats"
)

// frame is what grpc-go's stats report about one gRPC message on the wire.
// grpc-go does not expose the message's compressed-flag byte; it reports the
// payload size as received (CompressedLength) next to the size after
// decompression (Length). They are equal exactly when the message was not
// compressed, so compressed() is the flag as the peer set it. (Every message
// these cases compress is tens of kilobytes of zeros, which gzip shrinks to a
// small fraction, so a compressed message can never look uncompressed.)
type frame struct {
	length           int // serialized message size, after decompression
	compressedLength int // payload size on the wire, without the 5-byte gRPC prefix
	wireLength       int // payload plus the gRPC prefix
}

func (f frame) compressed() bool { return f.compressedLength != f.length }

func (f frame) String() string {
	if f.compressed() {
		return fmt.Sprintf("compressed %d -> %d bytes", f.length, f.compressedLength)
	}
	return fmt.Sprintf("uncompressed %d bytes", f.length)
}

// wire records the messages and grpc-encoding headers of one RPC. A test puts
// a *wire in the RPC's context with withWire; wireStats fills it.
type wire struct {
	mu          sync.Mutex
	sent        []frame // request messages, in order
	received    []frame // response messages, in order
	sentEnc     string  // grpc-encoding of our request headers
	receivedEnc string  // grpc-encoding of the response headers
}

type wireKey struct{}

func withWire(ctx context.Context) (context.Context, *wire) {
	w := &wire{}
	return context.WithValue(ctx, wireKey{}, w), w
}

func (w *wire) snapshot() (sent, received []frame, sentEnc, receivedEnc string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]frame(nil), w.sent...), append([]frame(nil), w.received...), w.sentEnc,
		w.receivedEnc
}

// wireStats is a client stats.Handler that records, per RPC, what was sent
// and received into the *wire found in the RPC's context.
type wireStats struct{}

func (wireStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (wireStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (wireStats) HandleConn(context.Context, stats.ConnStats) {}

func (wireStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	w, ok := ctx.Value(wireKey{}).(*wire)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch s := s.(type) {
	case *stats.OutHeader:
		w.sentEnc = s.Compression
	case *stats.InHeader:
		w.receivedEnc = s.Compression
	case *stats.OutPayload:
		w.sent = append(w.sent, frame{s.Length, s.CompressedLength, s.WireLength})
	case *stats.InPayload:
		w.received = append(w.received, frame{s.Length, s.CompressedLength, s.WireLength})
	}
}

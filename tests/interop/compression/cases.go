package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The four compression cases of gRPC's doc/interop-test-descriptions.md. Each
// returns nil on success or an error saying which assertion failed.

func zeros(n int) *testpb.Payload {
	return &testpb.Payload{Type: testpb.PayloadType_COMPRESSABLE, Body: make([]byte, n)}
}

func boolValue(v bool) *testpb.BoolValue { return &testpb.BoolValue{Value: v} }

func checkBody(what string, p *testpb.Payload, size int) error {
	if got := len(p.GetBody()); got != size {
		return fmt.Errorf("%s: payload body is %d bytes, want %d", what, got, size)
	}
	for _, b := range p.GetBody() {
		if b != 0 {
			return fmt.Errorf("%s: payload body is not all zeros", what)
		}
	}
	return nil
}

// checkFrames asserts that exactly len(want) messages went one way and that
// message i was compressed exactly when want[i].
func checkFrames(what string, got []frame, want []bool) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d messages on the wire, want %d", what, len(got), len(want))
	}
	for i, f := range got {
		if f.wireLength != f.compressedLength+5 {
			return fmt.Errorf("%s: message %d: wire length %d is not payload %d + 5", what, i,
				f.wireLength, f.compressedLength)
		}
		if f.compressed() != want[i] {
			return fmt.Errorf("%s: message %d arrived %v, want compressed=%v", what, i, f, want[i])
		}
	}
	return nil
}

// checkEncoding asserts the grpc-encoding header of a side that sent a
// compressed message: the compressed flag is meaningless without it.
func checkEncoding(what, got string) error {
	if got != gzip.Name {
		return fmt.Errorf("%s: grpc-encoding is %q, want %q", what, got, gzip.Name)
	}
	return nil
}

// clientCompressedUnary: a probe (expect_compressed on an uncompressed
// request must fail with INVALID_ARGUMENT), then the same request gzip
// compressed, then one with expect_compressed=false sent uncompressed.
func clientCompressedUnary(ctx context.Context, tc testpb.TestServiceClient) error {
	req := &testpb.SimpleRequest{
		ExpectCompressed: boolValue(true),
		ResponseSize:     314159,
		Payload:          zeros(271828),
	}

	pctx, w := withWire(ctx)
	_, err := tc.UnaryCall(pctx, req)
	if status.Code(err) != codes.InvalidArgument {
		return fmt.Errorf("probe: uncompressed request with expect_compressed=true got %v, "+
			"want INVALID_ARGUMENT (the server lacks the CompressedRequest feature)", err)
	}
	sent, _, _, _ := w.snapshot()
	if err := checkFrames("probe request", sent, []bool{false}); err != nil {
		return err
	}

	for _, compress := range []bool{true, false} {
		what := fmt.Sprintf("UnaryCall with expect_compressed=%v", compress)
		req.ExpectCompressed = boolValue(compress)
		var opts []grpc.CallOption
		if compress {
			opts = append(opts, grpc.UseCompressor(gzip.Name))
		}
		cctx, w := withWire(ctx)
		resp, err := tc.UnaryCall(cctx, req, opts...)
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if err := checkBody(what, resp.GetPayload(), 314159); err != nil {
			return err
		}
		sent, _, sentEnc, _ := w.snapshot()
		if err := checkFrames(what+" request", sent, []bool{compress}); err != nil {
			return err
		}
		if compress {
			if err := checkEncoding(what+" request", sentEnc); err != nil {
				return err
			}
		}
	}
	return nil
}

// serverCompressedUnary: response_compressed=true must come back with the
// compressed flag set, response_compressed=false without it.
func serverCompressedUnary(ctx context.Context, tc testpb.TestServiceClient) error {
	for _, compress := range []bool{true, false} {
		what := fmt.Sprintf("UnaryCall with response_compressed=%v", compress)
		req := &testpb.SimpleRequest{
			ResponseCompressed: boolValue(compress),
			ResponseSize:       314159,
			Payload:            zeros(271828),
		}
		cctx, w := withWire(ctx)
		resp, err := tc.UnaryCall(cctx, req)
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if err := checkBody(what, resp.GetPayload(), 314159); err != nil {
			return err
		}
		_, received, _, receivedEnc := w.snapshot()
		if err := checkFrames(what+" response", received, []bool{compress}); err != nil {
			return err
		}
		if compress {
			if err := checkEncoding(what+" response", receivedEnc); err != nil {
				return err
			}
		}
	}
	return nil
}

// uncompressed encodes m into a message that SendMsg puts on the wire without
// the compressed flag, on any stream. grpc-go has no per-message switch for a
// client: a stream made with UseCompressor compresses every message. A
// PreparedMsg is encoded with the codec and compressor of the stream it is
// given, and sent as it is by whichever stream gets it, so one encoded with a
// stream that has no compressor stays uncompressed.
func uncompressed(plain grpc.ClientStream, m proto.Message) (*grpc.PreparedMsg, error) {
	var pm grpc.PreparedMsg
	if err := pm.Encode(plain, m); err != nil {
		return nil, err
	}
	return &pm, nil
}

// clientCompressedStreaming: a probe stream (one uncompressed message with
// expect_compressed=true must fail with INVALID_ARGUMENT), then one stream
// with a compressed message (expect_compressed=true) followed by an
// uncompressed one (expect_compressed=false); aggregated size 73086.
//
// The description's "If the call fails with INVALID_ARGUMENT, the test fails"
// contradicts its own assertions ("First call fails with INVALID_ARGUMENT")
// and the unary case; this follows the assertions, as grpc's C++ client does.
func clientCompressedStreaming(ctx context.Context, tc testpb.TestServiceClient) error {
	pctx, w := withWire(ctx)
	probe, err := tc.StreamingInputCall(pctx)
	if err != nil {
		return fmt.Errorf("probe: %v", err)
	}
	err = probe.Send(&testpb.StreamingInputCallRequest{
		ExpectCompressed: boolValue(true),
		Payload:          zeros(27182),
	})
	// io.EOF from Send means the server has already ended the call: the status
	// comes from CloseAndRecv.
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("probe: send: %v", err)
	}
	_, err = probe.CloseAndRecv()
	if status.Code(err) != codes.InvalidArgument {
		return fmt.Errorf("probe: uncompressed message with expect_compressed=true got %v, "+
			"want INVALID_ARGUMENT (the server lacks the CompressedRequest feature)", err)
	}
	sent, _, _, _ := w.snapshot()
	if err := checkFrames("probe request", sent, []bool{false}); err != nil {
		return err
	}

	// The probe stream has no compressor: it encodes the uncompressed message.
	second, err := uncompressed(probe, &testpb.StreamingInputCallRequest{
		ExpectCompressed: boolValue(false),
		Payload:          zeros(45904),
	})
	if err != nil {
		return fmt.Errorf("encode the uncompressed message: %v", err)
	}

	sctx, w := withWire(ctx)
	stream, err := tc.StreamingInputCall(sctx, grpc.UseCompressor(gzip.Name))
	if err != nil {
		return fmt.Errorf("StreamingInputCall: %v", err)
	}
	if err := stream.Send(&testpb.StreamingInputCallRequest{
		ExpectCompressed: boolValue(true),
		Payload:          zeros(27182),
	}); err != nil {
		_, rerr := stream.CloseAndRecv()
		return fmt.Errorf("send the compressed message: %v (call status: %v)", err, rerr)
	}
	if err := stream.SendMsg(second); err != nil {
		_, rerr := stream.CloseAndRecv()
		return fmt.Errorf("send the uncompressed message: %v (call status: %v)", err, rerr)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("StreamingInputCall: %v", err)
	}
	if got := resp.GetAggregatedPayloadSize(); got != 73086 {
		return fmt.Errorf("aggregated_payload_size is %d, want 73086", got)
	}
	sent, _, sentEnc, _ := w.snapshot()
	if err := checkFrames("requests", sent, []bool{true, false}); err != nil {
		return err
	}
	return checkEncoding("requests", sentEnc)
}

// serverCompressedStreaming: two responses, the first asked compressed and the
// second uncompressed, on one stream.
func serverCompressedStreaming(ctx context.Context, tc testpb.TestServiceClient) error {
	sizes := []int{31415, 92653}
	want := []bool{true, false}
	req := &testpb.StreamingOutputCallRequest{}
	for i, size := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{
			Compressed: boolValue(want[i]),
			Size:       int32(size),
		})
	}
	sctx, w := withWire(ctx)
	stream, err := tc.StreamingOutputCall(sctx, req)
	if err != nil {
		return fmt.Errorf("StreamingOutputCall: %v", err)
	}
	var n int
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("StreamingOutputCall: response %d: %v", n, err)
		}
		if n >= len(sizes) {
			return fmt.Errorf("more than %d responses", len(sizes))
		}
		if err := checkBody(fmt.Sprintf("response %d", n), resp.GetPayload(), sizes[n]); err != nil {
			return err
		}
		n++
	}
	if n != len(sizes) {
		return fmt.Errorf("%d responses, want %d", n, len(sizes))
	}
	_, received, _, receivedEnc := w.snapshot()
	if err := checkFrames("responses", received, want); err != nil {
		return err
	}
	return checkEncoding("responses", receivedEnc)
}

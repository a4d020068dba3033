// Command interop-compression runs the four compression cases of gRPC's
// interop test descriptions (client_compressed_unary, server_compressed_unary,
// client_compressed_streaming, server_compressed_streaming) that grpc-go's own
// interop client does not implement ("Unsupported test case").
//
//	interop-compression --server_host=127.0.0.1 --server_port=10000 --test_case=NAME|all
//
// It is built on grpc-go: the generated grpc.testing client, grpc-go's gzip
// compressor, and a stats.Handler that sees every message's size before and
// after decompression, so it can assert per message that what was asked to be
// compressed went over the wire compressed and what was not did not, in both
// directions. Plaintext (h2c) only. Exit status 0 when every case passed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // registers gzip: sent in grpc-accept-encoding
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

var cases = []struct {
	name string
	run  func(context.Context, testpb.TestServiceClient) error
}{
	{"client_compressed_unary", clientCompressedUnary},
	{"server_compressed_unary", serverCompressedUnary},
	{"client_compressed_streaming", clientCompressedStreaming},
	{"server_compressed_streaming", serverCompressedStreaming},
}

func main() {
	host := flag.String("server_host", "localhost", "server host")
	port := flag.Int("server_port", 10000, "server port")
	testCase := flag.String("test_case", "", "a case name, or all")
	useTLS := flag.Bool("use_tls", false, "TLS (not supported: must be false)")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of each case")
	flag.Parse()

	if *useTLS {
		fatalf("--use_tls=true is not supported")
	}
	var selected []int
	for i, c := range cases {
		if *testCase == "all" || *testCase == c.name {
			selected = append(selected, i)
		}
	}
	if len(selected) == 0 {
		names := ""
		for _, c := range cases {
			names += " " + c.name
		}
		fatalf("unknown --test_case %q; cases:%s all", *testCase, names)
	}

	target := net.JoinHostPort(*host, strconv.Itoa(*port))
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(wireStats{}))
	if err != nil {
		fatalf("dial %s: %v", target, err)
	}
	defer conn.Close()
	tc := testpb.NewTestServiceClient(conn)

	failed := 0
	for _, i := range selected {
		c := cases[i]
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		err := c.run(ctx, tc)
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", c.name, err)
			failed++
			continue
		}
		fmt.Printf("PASS %s\n", c.name)
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "interop-compression: "+format+"\n", args...)
	os.Exit(2)
}

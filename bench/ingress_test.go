package main

import (
	"testing"
	"time"
)

// wrkOut is the output of wrk 4.1 (Debian) with --latency, with errors.
const wrkOut = `Running 10s test @ http://127.0.77.11:20000/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    5.01ms  95.12ms   97.50%
    Req/Sec     7.20k     1.10k    9.80k    70.00%
  Latency Distribution
     50%  145.00us
     75%    1.90ms
     90%    2.40ms
     99%    1.02s
  143720 requests in 10.01s, 20.01MB read
  Socket errors: connect 0, read 0, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  14358.47
Transfer/sec:      2.00MB
`

func TestParseWrk(t *testing.T) {
	var r wrkResult
	if err := parseWrk(wrkOut, &r); err != nil {
		t.Fatal(err)
	}
	if r.rps != 14358.47 || r.requests != 143720 {
		t.Errorf("rps %v requests %d, want 14358.47 and 143720", r.rps, r.requests)
	}
	if r.p50 != 145*time.Microsecond || r.p99 != 1020*time.Millisecond {
		t.Errorf("p50 %s p99 %s, want 145µs and 1.02s", r.p50, r.p99)
	}
	want := "Socket errors: connect 0, read 0, write 0, timeout 3; Non-2xx or 3xx responses: 5"
	if r.errors != want {
		t.Errorf("errors %q, want %q", r.errors, want)
	}
	if err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n", &r); err == nil {
		t.Error("no error for output without figures")
	}
}

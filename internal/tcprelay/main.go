// Command tcprelay is the floor a proxy is measured against
// (docs/benchmarks.md): it accepts TCP connections and copies bytes both
// ways to an upstream (host:port, or the path of a Unix socket), deciding
// nothing, decoding nothing, recording nothing. .ci/pgbench-compare runs
// pgbench through it beside latchkey's database gateway.
//
//	go run ./internal/tcprelay 127.0.0.1:6433 127.0.0.1:5432
//	go run ./internal/tcprelay 127.0.0.1:6435 /var/run/postgresql/.s.PGSQL.5432
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: tcprelay LISTEN_ADDR UPSTREAM (host:port or /path/to/socket)")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcprelay:", err)
		os.Exit(1)
	}
	network := "tcp"
	if strings.HasPrefix(os.Args[2], "/") {
		network = "unix"
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tcprelay:", err)
			os.Exit(1)
		}
		go relay(c, network, os.Args[2])
	}
}

func relay(c net.Conn, network, upstream string) {
	defer c.Close()
	u, err := net.Dial(network, upstream)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		io.Copy(u, c)
		u.Close()
	}()
	io.Copy(c, u)
}

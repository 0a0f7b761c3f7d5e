// Command mcpserver is the MCP gateway tests' upstream, written with the
// official Go SDK: over stdio by default, over Streamable HTTP with
// -http ADDR. With MCPTEST_CALL_LOG set, each tool call that reaches it
// appends the tool's name to that file.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/latchkeyhq/latchkey/internal/mcptest"
)

func main() {
	addr := flag.String("http", "", "serve Streamable HTTP on this address instead of stdio")
	flag.Parse()
	calls := &mcptest.Calls{}
	if p := os.Getenv("MCPTEST_CALL_LOG"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		calls.Log = f
	}
	s := mcptest.New(calls)
	if *addr != "" {
		log.Fatal(http.ListenAndServe(*addr, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)))
	}
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
		log.Fatal(err)
	}
}

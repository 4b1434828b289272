// A workload profiled by the official Pyroscope Go agent (github.com/grafana/pyroscope-go),
// unchanged, pointed at Kiln.
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"log"
	"os"
	"time"

	"github.com/grafana/pyroscope-go"
)

var sink [][]byte

//go:noinline
func pyroscopeBurn(d time.Duration) {
	buf := make([]byte, 4096)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		s := sha256.Sum256(buf)
		buf[0] = s[0]
	}
}

//go:noinline
func pyroscopeAlloc(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		sink = append(sink, make([]byte, 32<<10))
		if len(sink) > 128 {
			sink = sink[:0]
		}
	}
}

func main() {
	server := flag.String("server", "http://127.0.0.1:4040", "")
	duration := flag.Duration("duration", 15*time.Second, "")
	flag.Parse()
	p, err := pyroscope.Start(pyroscope.Config{
		ApplicationName: "agent-go",
		ServerAddress:   *server,
		// Empty without KILN_AGENT_KEY: then the push carries no credential.
		AuthToken: os.Getenv("KILN_AGENT_KEY"),
		Tags:            map[string]string{"agent": "pyroscope-go"},
		Logger:          pyroscope.StandardLogger,
		UploadRate:      3 * time.Second,
		ProfileTypes: []pyroscope.ProfileType{
			pyroscope.ProfileCPU, pyroscope.ProfileAllocObjects, pyroscope.ProfileAllocSpace,
			pyroscope.ProfileInuseObjects, pyroscope.ProfileInuseSpace, pyroscope.ProfileGoroutines,
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	end := time.Now().Add(*duration)
	for time.Now().Before(end) {
		pyroscope.TagWrapper(context.Background(), pyroscope.Labels("phase", "burn"), func(context.Context) {
			pyroscopeBurn(70 * time.Millisecond)
		})
		pyroscopeAlloc(30 * time.Millisecond)
	}
	if err := p.Stop(); err != nil {
		log.Println(err)
		os.Exit(1)
	}
}

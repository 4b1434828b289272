// The Go example's workload (examples/go-app) profiled by the official Pyroscope Go agent
// (github.com/grafana/pyroscope-go) instead of the Kiln SDK: the official agent's side of
// `OFFICIAL=1 sdk/go/bench-overhead.sh`.
//
// hashLoop and allocLoop are copies of the example's (the script refuses to run when they
// differ); the loop around them, the flags, the static tag and the per-iteration path=hash tag
// are the same, set through the official agent's API. Its settings match the Kiln SDK's
// defaults: the same six profile types and a 10 s upload interval; CPU is sampled at 100 Hz (the
// agent's fixed rate, as the Kiln SDK's). Everything else is the agent's default, e.g. a
// runtime.GC() before a heap profile when none ran since the last one (DisableGCRuns false).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"log"
	"os"
	"strings"
	"time"

	"github.com/grafana/pyroscope-go"
)

var sink [][]byte

//go:noinline
func hashLoop(d time.Duration) {
	buf := make([]byte, 4096)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		sum := sha256.Sum256(buf)
		buf[0] = sum[0]
	}
}

//go:noinline
func allocLoop(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		sink = append(sink, make([]byte, 16<<10))
		if len(sink) > 256 {
			sink = sink[:0]
		}
	}
}

type stdLogger struct{ *log.Logger }

func (l stdLogger) Infof(f string, a ...interface{})  { l.Printf(f, a...) }
func (l stdLogger) Debugf(f string, a ...interface{}) {}
func (l stdLogger) Errorf(f string, a ...interface{}) { l.Printf(f, a...) }

func main() {
	server := flag.String("server", "http://127.0.0.1:4040", "Pyroscope-compatible server URL")
	duration := flag.Duration("duration", 30*time.Second, "how long to run")
	rate := flag.Duration("upload-rate", 10*time.Second, "upload interval")
	tag := flag.String("tag", "env=demo", "static tag KEY=VALUE")
	noProfiling := flag.Bool("no-profiling", false, "run the workload without the agent (overhead baseline)")
	flag.Parse()

	if !*noProfiling {
		k, v, _ := strings.Cut(*tag, "=")
		p, err := pyroscope.Start(pyroscope.Config{
			ApplicationName: "go-app-official",
			ServerAddress:   *server,
			Tags:            map[string]string{k: v},
			UploadRate:      *rate,
			// The Kiln SDK's DefaultProfileTypes (sdk/go/config.go).
			ProfileTypes: []pyroscope.ProfileType{
				pyroscope.ProfileCPU, pyroscope.ProfileAllocObjects, pyroscope.ProfileAllocSpace,
				pyroscope.ProfileInuseObjects, pyroscope.ProfileInuseSpace, pyroscope.ProfileGoroutines,
			},
			Logger: stdLogger{log.New(os.Stderr, "", log.LstdFlags)},
		})
		if err != nil {
			log.Fatal(err)
		}
		defer func() {
			if err := p.Stop(); err != nil {
				log.Printf("pyroscope: stop: %v", err)
			}
		}()
	}
	end := time.Now().Add(*duration)
	for time.Now().Before(end) {
		pyroscope.TagWrapper(context.Background(), pyroscope.Labels("path", "hash"), func(context.Context) {
			hashLoop(70 * time.Millisecond)
		})
		allocLoop(30 * time.Millisecond)
	}
}

// go-app: a small service with a CPU hot path (hashLoop) and an allocation hot path
// (allocLoop), profiled by the Kiln Go SDK.
//
//	go run . -server http://127.0.0.1:4040 -duration 30s
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"log"
	"os"
	"strings"
	"time"

	kiln "github.com/kiln-profiler/kiln/sdk/go"
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
func (l stdLogger) Errorf(f string, a ...interface{}) { l.Printf(f, a...) }

func main() {
	server := flag.String("server", "http://127.0.0.1:4040", "Kiln daemon URL")
	duration := flag.Duration("duration", 30*time.Second, "how long to run")
	rate := flag.Duration("upload-rate", 10*time.Second, "upload interval")
	tag := flag.String("tag", "env=demo", "static tag KEY=VALUE")
	noProfiling := flag.Bool("no-profiling", false, "run the workload without the SDK (overhead baseline)")
	authToken := flag.String("auth-token", os.Getenv("KILN_AUTH_TOKEN"), "API key, when the daemon has auth on")
	caFile := flag.String("ca-file", "", "PEM CA file trusted for an https server (default: system roots)")
	clientCert := flag.String("client-cert", "", "PEM client certificate, for a daemon with mutual TLS")
	clientKey := flag.String("client-key", "", "PEM private key of -client-cert")
	flag.Parse()

	if !*noProfiling {
		k, v, _ := strings.Cut(*tag, "=")
		p, err := kiln.Start(kiln.Config{
			ApplicationName: "go-app",
			ServerAddress:   *server,
			Tags:            map[string]string{k: v},
			UploadRate:      *rate,
			AuthToken:       *authToken,
			CAFile:          *caFile,
			ClientCertFile:  *clientCert,
			ClientKeyFile:   *clientKey,
			Logger:          stdLogger{log.New(os.Stderr, "", log.LstdFlags)},
		})
		if err != nil {
			log.Fatal(err)
		}
		defer p.Stop()
	}
	end := time.Now().Add(*duration)
	for time.Now().Before(end) {
		kiln.TagWrapper(context.Background(), kiln.Labels("path", "hash"), func(context.Context) {
			hashLoop(70 * time.Millisecond)
		})
		allocLoop(30 * time.Millisecond)
	}
}

// A Go program serving net/http/pprof with a known hot function, for Kiln's pull-mode tests
// and scripts/bench-scrape.sh. It listens on every address of -addrs (comma-separated).
package main

import (
	"bytes"
	"flag"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"
)

var sink []byte

// kilnScrapeHotLoop burns CPU: the function the tests look for in CPU profiles.
//
//go:noinline
func kilnScrapeHotLoop() {
	x := uint64(1)
	for {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if x == 0 {
			log.Print("unreachable")
		}
		runtime.Gosched()
	}
}

// kilnScrapeAllocator allocates steadily: it shows in heap alloc_* profiles.
//
//go:noinline
func kilnScrapeAllocator() {
	for {
		sink = make([]byte, 64<<10)
		time.Sleep(time.Millisecond)
	}
}

// kilnScrapeContender takes a contended lock: it shows in mutex and block profiles.
//
//go:noinline
func kilnScrapeContender(mu *sync.Mutex) {
	for {
		mu.Lock()
		time.Sleep(100 * time.Microsecond)
		mu.Unlock()
	}
}

// sharedCPU records CPU profiles back to back and serves the latest one to every caller, so
// that one process can stand for many targets (Go runs one CPU profile at a time).
type sharedCPU struct {
	mu     sync.Mutex
	latest []byte
}

func (c *sharedCPU) record(window time.Duration) {
	for {
		var buf bytes.Buffer
		if err := pprof.StartCPUProfile(&buf); err != nil {
			log.Fatalf("cpu profile: %v", err)
		}
		time.Sleep(window)
		pprof.StopCPUProfile()
		c.mu.Lock()
		c.latest = buf.Bytes()
		c.mu.Unlock()
	}
}

// ServeHTTP waits the requested seconds, as /debug/pprof/profile does, then answers the
// latest recorded profile.
func (c *sharedCPU) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s, err := strconv.Atoi(r.URL.Query().Get("seconds")); err == nil && s > 0 {
		time.Sleep(time.Duration(s) * time.Second)
	}
	c.mu.Lock()
	body := c.latest
	c.mu.Unlock()
	if body == nil {
		http.Error(w, "no CPU profile recorded yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(body)
}

func main() {
	addrs := flag.String("addrs", "127.0.0.1:6060", "comma-separated listen addresses")
	busy := flag.Bool("busy", true, "run the CPU-burning, allocating and contending goroutines")
	shared := flag.Duration("shared-cpu", 0, "record CPU profiles of this length back to back and serve the latest to every caller (for many targets in one process)")
	flag.Parse()
	handler := http.Handler(http.DefaultServeMux)
	if *shared > 0 {
		cpu := &sharedCPU{}
		go cpu.record(*shared)
		mux := http.NewServeMux()
		mux.Handle("/debug/pprof/profile", cpu)
		mux.Handle("/", http.DefaultServeMux)
		handler = mux
	}
	runtime.SetMutexProfileFraction(1)
	runtime.SetBlockProfileRate(1000)
	if *busy {
		go kilnScrapeHotLoop()
		go kilnScrapeAllocator()
		var mu sync.Mutex
		for i := 0; i < 2; i++ {
			go kilnScrapeContender(&mu)
		}
	}
	var wg sync.WaitGroup
	for _, a := range strings.Split(*addrs, ",") {
		l, err := net.Listen("tcp", a)
		if err != nil {
			log.Fatalf("listen %s: %v", a, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Fatal(http.Serve(l, handler))
		}()
	}
	wg.Wait()
}

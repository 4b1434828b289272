// A Go program serving net/http/pprof with a known hot function, for Kiln's pull-mode tests
// and scripts/bench-scrape.sh. It listens on every address of -addrs (comma-separated).
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"runtime"
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

func main() {
	addrs := flag.String("addrs", "127.0.0.1:6060", "comma-separated listen addresses")
	busy := flag.Bool("busy", true, "run the CPU-burning, allocating and contending goroutines")
	flag.Parse()
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
			log.Fatal(http.Serve(l, http.DefaultServeMux))
		}()
	}
	wg.Wait()
}

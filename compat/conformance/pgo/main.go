// Command pgo is the program of the PGO acceptance check (ci-test.sh): it burns CPU on a few
// distinct lines, writes its CPU profile to the file named by -cpuprofile, and is built again
// with `go build -pgo=<the profile Kiln exports>`.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"time"
)

var sink int

//go:noinline
func hash(b []byte, n int) []byte {
	for i := 0; i < n; i++ {
		s := sha256.Sum256(b) // hot line 1
		b = s[:]
	}
	return b
}

//go:noinline
func sortWork(n int) {
	xs := make([]int, n)
	for i := range xs {
		xs[i] = (i * 7919) % n // hot line 2
	}
	sort.Ints(xs) // hot line 3
	sink += xs[0]
}

func main() {
	out := flag.String("cpuprofile", "", "write a CPU profile here")
	d := flag.Duration("duration", 3*time.Second, "how long to run")
	flag.Parse()
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			panic(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			panic(err)
		}
		defer pprof.StopCPUProfile()
	}
	end := time.Now().Add(*d)
	b := []byte("kiln")
	for time.Now().Before(end) {
		b = hash(b, 2000)
		sortWork(20000)
	}
	fmt.Println(len(b), sink)
}

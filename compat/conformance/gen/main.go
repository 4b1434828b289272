// Command gen records the Go part of the conformance corpus on this machine with the Go
// runtime's own profilers (CPU, heap, goroutine, mutex, block) and fgprof, and derives from real
// recordings the shapes no public test data had under a permissive licence: a heap delta with
// negative values, a profile with an unknown sample type name (`time`, as fgprof names it), a
// profile with partly unsymbolized frames (as eBPF profilers send), and
// a wall profile shaped as the Node agent sends it (`samples`, `wall`, `cpu`). Run it from
// compat/conformance: `go run ./gen corpus`.
package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/felixge/fgprof"
	"github.com/google/pprof/profile"
)

var sink [][]byte

//go:noinline
func hashLoop(d time.Duration) {
	end := time.Now().Add(d)
	b := []byte("kiln")
	for time.Now().Before(end) {
		s := sha256.Sum256(b)
		b = s[:]
	}
}

//go:noinline
func allocLoop(n int) {
	for i := 0; i < n; i++ {
		sink = append(sink, make([]byte, 1024+i%4096))
		if len(sink) > 2000 {
			sink = sink[1000:]
		}
	}
}

//go:noinline
func contend(d time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				mu.Lock()
				hashLoop(200 * time.Microsecond)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

func write(dir, name string, p *profile.Profile) {
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		panic(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644); err != nil {
		panic(err)
	}
	fmt.Println("wrote", name, buf.Len(), "bytes")
}

func lookup(name string) *profile.Profile {
	var buf bytes.Buffer
	if err := pprof.Lookup(name).WriteTo(&buf, 0); err != nil {
		panic(err)
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		panic(err)
	}
	return p
}

func main() {
	dir := os.Args[1]
	runtime.SetMutexProfileFraction(1)
	runtime.SetBlockProfileRate(1)
	runtime.MemProfileRate = 4096

	var cpu bytes.Buffer
	if err := pprof.StartCPUProfile(&cpu); err != nil {
		panic(err)
	}
	hashLoop(1500 * time.Millisecond)
	allocLoop(20000)
	contend(500 * time.Millisecond)
	pprof.StopCPUProfile()
	cpuProfile, err := profile.Parse(&cpu)
	if err != nil {
		panic(err)
	}
	write(dir, "go-cpu.pb.gz", cpuProfile)

	runtime.GC()
	heap1 := lookup("heap")
	write(dir, "go-heap.pb.gz", heap1)
	allocLoop(30000)
	runtime.GC()
	heap2 := lookup("heap")
	// A delta heap profile: the second minus the first; in-use values that shrank are negative.
	heap1.Scale(-1)
	delta, err := profile.Merge([]*profile.Profile{heap2, heap1})
	if err != nil {
		panic(err)
	}
	write(dir, "go-heap-delta.pb.gz", delta)

	done := make(chan struct{})
	for i := 0; i < 8; i++ {
		go func() { <-done }()
	}
	write(dir, "go-goroutine.pb.gz", lookup("goroutine"))
	close(done)
	write(dir, "go-mutex.pb.gz", lookup("mutex"))
	write(dir, "go-block.pb.gz", lookup("block"))

	// The CPU recording's samples as wall-clock time under fgprof's sample type name.
	fg := cpuProfile.Copy()
	fg.SampleType = []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "time", Unit: "nanoseconds"}}
	fg.PeriodType = &profile.ValueType{Type: "wallclock", Unit: "nanoseconds"}
	write(dir, "go-fgprof-shape.pb.gz", fg)

	// The CPU recording with a third of its locations unsymbolized (address only), as eBPF
	// profilers send frames they could not symbolize.
	partial := cpuProfile.Copy()
	for i, loc := range partial.Location {
		if i%3 == 1 {
			loc.Line = nil
			if loc.Address == 0 {
				loc.Address = 0x400000 + uint64(i)*16
			}
		}
	}
	write(dir, "go-cpu-partial-symbols.pb.gz", partial)

	// A real fgprof recording: on- and off-CPU time of every goroutine.
	var fgBuf bytes.Buffer
	stop := fgprof.Start(&fgBuf, fgprof.FormatPprof)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); hashLoop(700 * time.Millisecond) }()
	go func() { defer wg.Done(); time.Sleep(700 * time.Millisecond) }()
	wg.Wait()
	if err := stop(); err != nil {
		panic(err)
	}
	fgReal, err := profile.Parse(&fgBuf)
	if err != nil {
		panic(err)
	}
	write(dir, "go-fgprof.pb.gz", fgReal)

	// The CPU recording reshaped as the Node agent's wall profile: sample count, wall time and
	// CPU time (here CPU = wall).
	node := cpuProfile.Copy()
	node.SampleType = []*profile.ValueType{
		{Type: "samples", Unit: "count"}, {Type: "wall", Unit: "nanoseconds"}, {Type: "cpu", Unit: "nanoseconds"},
	}
	node.PeriodType = &profile.ValueType{Type: "wall", Unit: "nanoseconds"}
	for _, s := range node.Sample {
		s.Value = []int64{s.Value[0], s.Value[1], s.Value[1]}
	}
	write(dir, "node-wall-shape.pb.gz", node)
}

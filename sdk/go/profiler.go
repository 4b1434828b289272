package kiln

import (
	"bytes"
	"context"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

// Profiler is a running profiling session; Stop ends it.
type Profiler struct {
	cfg      Config
	up       *uploader
	types    map[ProfileType]bool
	stop     chan struct{}
	done     chan struct{}
	quit     context.CancelFunc // the uploader takes no new upload and stops retrying
	abort    context.CancelFunc // the upload in flight is cut short (Stop's deadline)
	upDone   chan struct{}
	once     sync.Once
	cpuBuf   bytes.Buffer
	cpuOn    bool
	start    time.Time
	prevHeap []byte
	prev     map[string][]byte // previous mutex/block profiles
}

// Start begins profiling and uploading. Only one CPU profile can run per process: Start fails
// if another one (e.g. net/http/pprof's) is running.
func Start(cfg Config) (*Profiler, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	client, err := newHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	p := &Profiler{
		cfg:    cfg,
		up:     newUploader(cfg, client),
		types:  map[ProfileType]bool{},
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		upDone: make(chan struct{}),
		prev:   map[string][]byte{},
	}
	for _, t := range cfg.ProfileTypes {
		p.types[t] = true
	}
	if p.types[ProfileMutexCount] || p.types[ProfileMutexDuration] {
		runtime.SetMutexProfileFraction(5)
	}
	if p.types[ProfileBlockCount] || p.types[ProfileBlockDuration] {
		runtime.SetBlockProfileRate(int(10 * time.Millisecond))
	}
	p.start = time.Now()
	if p.types[ProfileCPU] {
		if err := pprof.StartCPUProfile(&p.cpuBuf); err != nil {
			return nil, err
		}
		p.cpuOn = true
	}
	// Snapshot cumulative profiles now, so the first upload already holds a delta.
	p.prevHeap = lookup("heap")
	p.prev["mutex"] = lookup("mutex")
	p.prev["block"] = lookup("block")
	quit, stopTaking := context.WithCancel(context.Background())
	send, abort := context.WithCancel(context.Background())
	p.quit, p.abort = stopTaking, abort
	go func() { p.up.run(quit, send); close(p.upDone) }()
	go p.loop()
	cfg.Logger.Infof("kiln: profiling %s, pushing to %s every %s", cfg.ApplicationName, cfg.ServerAddress, cfg.UploadRate)
	return p, nil
}

// Stop takes the last profiles, sends everything still queued (for up to 5 s) and ends the
// session. It is safe to call more than once.
func (p *Profiler) Stop() {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		defer p.abort()
		// The upload in flight is finished, not cut short and sent again by flush (the server
		// may have stored it already), unless the deadline comes first.
		context.AfterFunc(ctx, p.abort)
		p.quit()
		<-p.upDone
		p.up.flush(ctx)
		p.cfg.Logger.Infof("kiln: stopped; %d profiles sent, %d dropped", p.up.sent.Load(), p.up.dropped.Load())
	})
}

// Dropped is the number of profiles dropped because the queue was full.
func (p *Profiler) Dropped() int64 { return p.up.dropped.Load() }

func (p *Profiler) loop() {
	defer close(p.done)
	ticker := time.NewTicker(p.cfg.UploadRate)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			p.collect(false)
		case <-p.stop:
			p.collect(true)
			return
		}
	}
}

func lookup(name string) []byte {
	prof := pprof.Lookup(name)
	if prof == nil {
		return nil
	}
	var b bytes.Buffer
	if err := prof.WriteTo(&b, 0); err != nil {
		return nil
	}
	return b.Bytes()
}

func (p *Profiler) name(t ProfileType) string {
	return seriesName(p.cfg.ApplicationName, t, p.cfg.Tags)
}

// collect takes every profile of the cycle that just ended and queues it.
func (p *Profiler) collect(last bool) {
	end := time.Now()
	from := p.start
	p.start = end
	if p.cpuOn {
		pprof.StopCPUProfile()
		data := append([]byte(nil), p.cpuBuf.Bytes()...)
		p.cpuBuf.Reset()
		if !last {
			if err := pprof.StartCPUProfile(&p.cpuBuf); err != nil {
				p.cfg.Logger.Errorf("kiln: restarting the CPU profile: %v", err)
				p.cpuOn = false
			}
		}
		p.up.enqueue(upload{name: p.name(ProfileCPU), from: from, until: end, sampleRate: 100, profile: data})
	}
	if heapTypes := p.heapConfig(); heapTypes != "" {
		heap := lookup("heap")
		p.up.enqueue(upload{
			name: p.name(ProfileInuseSpace), from: from, until: end,
			profile: heap, prevProfile: p.prevHeap, sampleConfig: heapTypes,
		})
		p.prevHeap = heap
	}
	if p.types[ProfileGoroutines] {
		p.up.enqueue(upload{name: p.name(ProfileGoroutines), from: from, until: end, profile: lookup("goroutine")})
	}
	for _, kind := range []string{"mutex", "block"} {
		count, duration := ProfileType(kind+"_count"), ProfileType(kind+"_duration")
		if !p.types[count] && !p.types[duration] {
			continue
		}
		cur := lookup(kind)
		var cfg []string
		if p.types[count] {
			cfg = append(cfg, `"contentions":{"display-name":"`+string(count)+`","units":"lock_samples","cumulative":true}`)
		}
		if p.types[duration] {
			cfg = append(cfg, `"delay":{"display-name":"`+string(duration)+`","units":"lock_nanoseconds","cumulative":true}`)
		}
		p.up.enqueue(upload{
			name: p.name(count), from: from, until: end,
			profile: cur, prevProfile: p.prev[kind], sampleConfig: "{" + strings.Join(cfg, ",") + "}",
		})
		p.prev[kind] = cur
	}
}

// heapConfig is the sample_type_config for the requested heap types: in-use values are levels
// (averaged over time), alloc values are counters turned into deltas against the previous heap.
func (p *Profiler) heapConfig() string {
	var parts []string
	for _, t := range []ProfileType{ProfileAllocObjects, ProfileAllocSpace} {
		if p.types[t] {
			parts = append(parts, `"`+string(t)+`":{"display-name":"`+string(t)+`","cumulative":true}`)
		}
	}
	for _, t := range []ProfileType{ProfileInuseObjects, ProfileInuseSpace} {
		if p.types[t] {
			parts = append(parts, `"`+string(t)+`":{"display-name":"`+string(t)+`","aggregation":"average"}`)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// LabelSet is a set of dynamic tags.
type LabelSet = pprof.LabelSet

// Labels builds a LabelSet from key, value pairs.
func Labels(kv ...string) LabelSet { return pprof.Labels(kv...) }

// TagWrapper runs fn with the tags attached: CPU samples taken while fn runs carry them, and
// Kiln stores them as labels of their own series.
func TagWrapper(ctx context.Context, labels LabelSet, fn func(context.Context)) {
	pprof.Do(ctx, labels, fn)
}

package kiln

import (
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type received struct {
	query  map[string]string
	auth   string
	parts  map[string][]byte
	status int
}

// fakeServer records uploads; fail(n) makes the first n requests answer 503.
func fakeServer(t *testing.T, failFirst int32) (*httptest.Server, func() []received) {
	var mu sync.Mutex
	var got []received
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= failFirst {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		rec := received{query: map[string]string{}, parts: map[string][]byte{}, auth: r.Header.Get("Authorization")}
		for k, v := range r.URL.Query() {
			rec.query[k] = v[0]
		}
		_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil {
			t.Errorf("content type: %v", err)
		}
		mr := multipart.NewReader(r.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Errorf("multipart: %v", err)
				break
			}
			data, _ := io.ReadAll(p)
			rec.parts[p.FormName()] = data
		}
		mu.Lock()
		got = append(got, rec)
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv, func() []received {
		mu.Lock()
		defer mu.Unlock()
		return append([]received(nil), got...)
	}
}

func burn(d time.Duration) {
	end := time.Now().Add(d)
	x := 0
	for time.Now().Before(end) {
		x++
	}
	_ = x
}

func TestSeriesNameSortsTags(t *testing.T) {
	got := seriesName("app", ProfileCPU, map[string]string{"z": "1", "a": "2"})
	if got != "app.cpu{a=2,z=1}" {
		t.Fatalf("got %q", got)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{ServerAddress: "http://x"},
		{ApplicationName: "a b", ServerAddress: "http://x"},
		{ApplicationName: "a"},
		{ApplicationName: "a", ServerAddress: "http://x", Tags: map[string]string{"k": "a,b"}},
	} {
		if err := c.normalize(); err == nil {
			t.Errorf("config %+v should be refused", c)
		}
	}
}

func TestUploadsAreMultipartWithParamsAuthAndTags(t *testing.T) {
	srv, got := fakeServer(t, 0)
	p, err := Start(Config{
		ApplicationName: "svc", ServerAddress: srv.URL + "/", AuthToken: "secret",
		Tags: map[string]string{"env": "test"}, UploadRate: 200 * time.Millisecond,
		ProfileTypes: []ProfileType{ProfileCPU, ProfileInuseSpace, ProfileAllocSpace, ProfileGoroutines},
	})
	if err != nil {
		t.Fatal(err)
	}
	burn(300 * time.Millisecond)
	p.Stop()
	uploads := got()
	names := map[string]received{}
	for _, u := range uploads {
		names[u.query["name"]] = u
	}
	cpu, ok := names["svc.cpu{env=test}"]
	if !ok {
		t.Fatalf("no cpu upload among %v", uploads)
	}
	if cpu.auth != "Bearer secret" || cpu.query["spyName"] != "gospy" || cpu.query["sampleRate"] != "100" {
		t.Errorf("cpu upload: %+v", cpu.query)
	}
	if len(cpu.parts["profile"]) < 2 || cpu.parts["profile"][0] != 0x1f || cpu.parts["profile"][1] != 0x8b {
		t.Errorf("profile part is not gzip'd pprof")
	}
	heap, ok := names["svc.inuse_space{env=test}"]
	if !ok {
		t.Fatalf("no heap upload")
	}
	cfg := string(heap.parts["sample_type_config"])
	if !strings.Contains(cfg, `"alloc_space":{"display-name":"alloc_space","cumulative":true}`) || !strings.Contains(cfg, `"aggregation":"average"`) {
		t.Errorf("sample_type_config: %s", cfg)
	}
	if len(heap.parts["prev_profile"]) == 0 {
		t.Errorf("heap uploads carry the previous heap for deltas")
	}
	if _, ok := names["svc.goroutines{env=test}"]; !ok {
		t.Errorf("no goroutine upload")
	}
}

func TestRetriesWithBackoffUntilTheServerAnswers(t *testing.T) {
	srv, got := fakeServer(t, 2)
	q := newUploader(Config{ServerAddress: srv.URL, Logger: noopLogger{}, MaxQueuedUploads: 4}, srv.Client())
	q.minBackoff = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx, ctx); close(done) }()
	q.enqueue(upload{name: "a.cpu{}", from: time.Now(), until: time.Now(), profile: []byte{1}})
	deadline := time.Now().Add(5 * time.Second)
	for len(got()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if len(got()) != 1 || q.sent.Load() != 1 {
		t.Fatalf("expected one delivery after two 503s, got %d", len(got()))
	}
}

func TestQueueDropsOldestWhenFull(t *testing.T) {
	q := newUploader(Config{ServerAddress: "http://127.0.0.1:1", Logger: noopLogger{}, MaxQueuedUploads: 3}, &http.Client{})
	for i := 0; i < 5; i++ {
		q.enqueue(upload{name: string(rune('a' + i)), profile: []byte{1}})
	}
	if q.pending() != 3 || q.dropped.Load() != 2 || q.queue[0].name != "c" {
		t.Fatalf("pending %d dropped %d first %q", q.pending(), q.dropped.Load(), q.queue[0].name)
	}
}

func TestClientErrorsAreNotRetried(t *testing.T) {
	if retryable(&statusError{code: 400}) || !retryable(&statusError{code: 429}) || !retryable(&statusError{code: 502}) {
		t.Fatal("retry policy")
	}
}

func TestTagWrapperLabelsSamples(t *testing.T) {
	ran := false
	TagWrapper(context.Background(), Labels("route", "/checkout"), func(ctx context.Context) { ran = true })
	if !ran {
		t.Fatal("fn did not run")
	}
}

func TestHTTPClientTLSOptions(t *testing.T) {
	if c, err := newHTTPClient(Config{}); err != nil || c.Transport != nil {
		t.Fatalf("without TLS options the default transport is used: %v %v", c, err)
	}
	if _, err := newHTTPClient(Config{CAFile: "/nonexistent/ca.pem"}); err == nil || !strings.Contains(err.Error(), "CAFile") {
		t.Fatalf("a missing CA file is an error naming CAFile: %v", err)
	}
	notPEM := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newHTTPClient(Config{CAFile: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a file without a certificate is refused: %v", err)
	}
	if _, err := newHTTPClient(Config{ClientCertFile: notPEM}); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("a client certificate without its key is refused: %v", err)
	}
}

// A profile whose upload is in flight when Stop is called is sent once: the server may already
// have stored it when its answer comes, so cutting the request short and sending it again from
// the final flush would store it twice.
func TestStopDoesNotResendTheUploadInFlight(t *testing.T) {
	var mu sync.Mutex
	cpuUploads := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if strings.HasPrefix(r.URL.Query().Get("name"), "svc.cpu") {
			mu.Lock()
			cpuUploads++
			mu.Unlock()
		}
		time.Sleep(300 * time.Millisecond) // stored, but the answer is slow (a busy daemon)
	}))
	t.Cleanup(srv.Close)
	p, err := Start(Config{
		ApplicationName: "svc", ServerAddress: srv.URL, UploadRate: time.Hour,
		ProfileTypes: []ProfileType{ProfileCPU, ProfileInuseSpace, ProfileGoroutines},
	})
	if err != nil {
		t.Fatal(err)
	}
	burn(100 * time.Millisecond)
	p.Stop()
	mu.Lock()
	defer mu.Unlock()
	if cpuUploads != 1 {
		t.Fatalf("the CPU profile taken at Stop reached the server %d times, want once", cpuUploads)
	}
	if p.up.sent.Load() != 3 || p.up.pending() != 0 {
		t.Fatalf("sent %d, pending %d: want all 3 profiles counted as sent", p.up.sent.Load(), p.up.pending())
	}
}

// A server that never answers holds Stop for its 5 s deadline at most: the upload in flight is
// cut short then.
func TestStopIsBoundedWhenTheServerHangs(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done(): // the client gave up
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: the handler must end for Close
	p, err := Start(Config{
		ApplicationName: "svc", ServerAddress: srv.URL, UploadRate: time.Hour,
		ProfileTypes: []ProfileType{ProfileCPU},
	})
	if err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	p.Stop()
	if took := time.Since(started); took > 7*time.Second {
		t.Fatalf("Stop took %s against a hung server, want about 5 s", took)
	}
	if p.up.sent.Load() != 0 || p.up.pending() != 1 {
		t.Fatalf("sent %d, pending %d: the unanswered profile must not count as sent", p.up.sent.Load(), p.up.pending())
	}
}

package kiln

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upload is one profile on its way to the server.
type upload struct {
	name         string // app.type{tags}
	from, until  time.Time
	sampleRate   int
	profile      []byte // gzipped pprof
	prevProfile  []byte // previous cumulative profile, for server-side deltas
	sampleConfig string // sample_type_config JSON, may be empty
}

// seriesName renders "app.type{k=v,…}" with sorted keys, as Pyroscope's name parameter.
func seriesName(app string, t ProfileType, tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(app)
	b.WriteByte('.')
	b.WriteString(string(t))
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(tags[k])
	}
	b.WriteByte('}')
	return b.String()
}

// uploader sends uploads from a bounded queue on one goroutine, retrying with backoff.
type uploader struct {
	server, token string
	client        *http.Client
	log           Logger
	max           int

	mu      sync.Mutex
	queue   []upload
	wake    chan struct{}
	dropped atomic.Int64
	sent    atomic.Int64

	minBackoff, maxBackoff time.Duration
}

func newUploader(cfg Config, client *http.Client) *uploader {
	return &uploader{
		server:     cfg.ServerAddress,
		token:      cfg.AuthToken,
		client:     client,
		log:        cfg.Logger,
		max:        cfg.MaxQueuedUploads,
		wake:       make(chan struct{}, 1),
		minBackoff: 500 * time.Millisecond,
		maxBackoff: 30 * time.Second,
	}
}

// enqueue adds u, dropping the oldest queued upload when the queue is full.
func (q *uploader) enqueue(u upload) {
	q.mu.Lock()
	if len(q.queue) >= q.max {
		q.queue = q.queue[1:]
		n := q.dropped.Add(1)
		q.log.Errorf("kiln: upload queue full (%d); dropped the oldest profile (%d dropped so far)", q.max, n)
	}
	q.queue = append(q.queue, u)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *uploader) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.queue)
}

// run sends queued uploads until quit ends; then it returns, leaving what is left queued for
// flush. A send in flight when quit ends is finished, not cut short (only send's end aborts it):
// the server may already have stored it, and flush would send it again.
func (q *uploader) run(quit, send context.Context) {
	backoff := q.minBackoff
	for {
		q.mu.Lock()
		var u upload
		has := len(q.queue) > 0
		if has {
			u = q.queue[0]
		}
		q.mu.Unlock()
		if !has {
			select {
			case <-quit.Done():
				return
			case <-q.wake:
				continue
			}
		}
		if quit.Err() != nil {
			return
		}
		err := q.send(send, u)
		if err == nil || !retryable(err) {
			if err != nil {
				q.log.Errorf("kiln: dropping %s: %v", u.name, err)
			} else {
				q.sent.Add(1)
			}
			q.mu.Lock()
			if len(q.queue) > 0 && q.queue[0].name == u.name && q.queue[0].from == u.from {
				q.queue = q.queue[1:]
			}
			q.mu.Unlock()
			backoff = q.minBackoff
			continue
		}
		if quit.Err() != nil {
			return // shutting down: Stop's flush sends it
		}
		q.log.Errorf("kiln: upload of %s failed, retrying in %s: %v", u.name, backoff, err)
		select {
		case <-quit.Done():
			return
		case <-time.After(backoff):
		}
		backoff *= 2
		if backoff > q.maxBackoff {
			backoff = q.maxBackoff
		}
	}
}

// flush sends everything queued, giving up at the deadline of ctx.
func (q *uploader) flush(ctx context.Context) {
	for q.pending() > 0 {
		q.mu.Lock()
		u := q.queue[0]
		q.mu.Unlock()
		err := q.send(ctx, u)
		if err != nil && ctx.Err() != nil {
			q.log.Errorf("kiln: %d profiles not sent at shutdown: %v", q.pending(), err)
			return
		}
		if err == nil {
			q.sent.Add(1)
		}
		q.mu.Lock()
		q.queue = q.queue[1:]
		q.mu.Unlock()
	}
}

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string { return fmt.Sprintf("server answered %d: %s", e.code, e.body) }

// retryable: network errors, 429 and 5xx are worth retrying; other 4xx will not get better.
func retryable(err error) bool {
	if se, ok := err.(*statusError); ok {
		return se.code == http.StatusTooManyRequests || se.code >= 500
	}
	return true
}

func (q *uploader) send(ctx context.Context, u upload) error {
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	part := func(field string, data []byte) error {
		fw, err := w.CreateFormFile(field, field)
		if err != nil {
			return err
		}
		_, err = fw.Write(data)
		return err
	}
	if err := part("profile", u.profile); err != nil {
		return err
	}
	if len(u.prevProfile) > 0 {
		if err := part("prev_profile", u.prevProfile); err != nil {
			return err
		}
	}
	if u.sampleConfig != "" {
		if err := part("sample_type_config", []byte(u.sampleConfig)); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	params := url.Values{}
	params.Set("name", u.name)
	params.Set("from", strconv.FormatInt(u.from.Unix(), 10))
	params.Set("until", strconv.FormatInt(u.until.Unix(), 10))
	params.Set("spyName", "gospy")
	params.Set("sampleRate", strconv.Itoa(u.sampleRate))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, q.server+"/ingest?"+params.Encode(), &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	if q.token != "" {
		req.Header.Set("Authorization", "Bearer "+q.token)
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return &statusError{code: resp.StatusCode, body: strings.TrimSpace(string(msg))}
	}
	return nil
}

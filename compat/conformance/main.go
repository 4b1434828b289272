// Command conformance checks Kiln against the reference parsers: for every file of a corpus it
// computes, per profile type, the total and the self/total of the top functions with
// github.com/google/pprof/profile (pprof) or github.com/grafana/jfr-parser (JFR, with the same
// event → profile type mapping Grafana Pyroscope uses), pushes the file to a running daemon the
// way an agent does, and compares what /render answers.
//
// It also checks, for every type /api/apps lists for the pushed application, that the name
// renders, and that the flamebearer, the `functions` table, the pprof export and the collapsed
// export agree on the total and on every function's self value.
//
// Comparisons are exact, except where units are converted (see README.md).
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/pprof/profile"
	jfrpprof "github.com/grafana/jfr-parser/pprof"
)

// entry is one line of the manifest.
type entry struct {
	File   string `json:"file"`
	Format string `json:"format"` // pprof, jfr, folded, speedscope
	// Type is the profile type suffix pushed with text formats (`name=app.cpu`).
	Type       string `json:"type,omitempty"`
	Labels     string `json:"labels,omitempty"`
	Spy        string `json:"spy,omitempty"`
	SampleRate int    `json:"sample_rate,omitempty"`
	Source     string `json:"source"`
	Commit     string `json:"commit,omitempty"`
	License    string `json:"license"`
	Note       string `json:"note,omitempty"`
}

// expected is what the reference computes for one profile type.
type expected struct {
	kilnName string // the type's short name in Kiln, "" to match by sample type and unit
	sampleTy string
	unit     string
	total    int64
	self     map[string]int64
	totals   map[string]int64
	// lines: self per leaf source line, "function:line" (nil: not compared).
	lines map[string]int64
	// relTol is the relative tolerance of value comparisons (0: exact).
	relTol float64
	why    string
}

const topN = 10

func main() {
	kiln := flag.String("kiln", "http://127.0.0.1:4040", "base URL of the daemon")
	manifest := flag.String("manifest", "corpus/manifest.json", "the corpus manifest")
	only := flag.String("only", "", "check only files whose name contains this")
	verbose := flag.Bool("v", false, "print every comparison")
	flag.Parse()

	raw, err := os.ReadFile(*manifest)
	if err != nil {
		fatal("reading manifest: %v", err)
	}
	var entries []entry
	if err := json.Unmarshal(raw, &entries); err != nil {
		fatal("manifest %s: %v", *manifest, err)
	}
	dir := filepath.Dir(*manifest)
	c := &checker{base: strings.TrimRight(*kiln, "/"), verbose: *verbose}
	for i, e := range entries {
		if *only != "" && !strings.Contains(e.File, *only) {
			continue
		}
		app := fmt.Sprintf("conformance-%d", i)
		c.file = e.File
		if err := c.check(dir, app, e); err != nil {
			c.fail("%v", err)
		}
	}
	fmt.Printf("conformance: %d files, %d profile types compared, %d checks, %d failures\n",
		c.files, c.types, c.checks, c.failures)
	if c.failures > 0 {
		os.Exit(1)
	}
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "conformance: "+format+"\n", a...)
	os.Exit(2)
}

type checker struct {
	base                           string
	verbose                        bool
	file                           string
	files, types, checks, failures int
}

func (c *checker) fail(format string, a ...any) {
	c.failures++
	fmt.Printf("FAIL %s: %s\n", c.file, fmt.Sprintf(format, a...))
}

func (c *checker) ok(format string, a ...any) {
	c.checks++
	if c.verbose {
		fmt.Printf("ok   %s: %s\n", c.file, fmt.Sprintf(format, a...))
	}
}

func (c *checker) check(dir, app string, e entry) error {
	c.files++
	body, err := os.ReadFile(filepath.Join(dir, e.File))
	if err != nil {
		return err
	}
	var labels []byte
	if e.Labels != "" {
		if labels, err = os.ReadFile(filepath.Join(dir, e.Labels)); err != nil {
			return err
		}
	}
	rate := e.SampleRate
	if rate == 0 {
		rate = 100
	}
	var want []expected
	switch e.Format {
	case "pprof":
		want, err = expectPprof(body)
	case "jfr":
		want, err = expectJFR(body, labels, rate)
	case "folded":
		want, err = expectFolded(body, e.Type)
	case "speedscope":
		want, err = expectSpeedscope(body, e.Type)
	default:
		err = fmt.Errorf("unknown format %q", e.Format)
	}
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	if err := c.push(app, e, body, labels, rate); err != nil {
		return fmt.Errorf("push: %w", err)
	}
	apps, err := c.apps(app)
	if err != nil {
		return err
	}
	// Every listed type renders, and its views agree.
	for _, a := range apps {
		if err := c.viewsAgree(a.Name); err != nil {
			c.fail("%s: %v", a.Name, err)
		}
	}
	for _, w := range want {
		name := ""
		for _, a := range apps {
			parts := strings.Split(a.ProfileType, ":")
			short := strings.TrimPrefix(a.Name, app+".")
			if w.kilnName != "" && short == w.kilnName ||
				w.kilnName == "" && len(parts) == 5 && parts[1] == w.sampleTy && parts[2] == w.unit {
				name = a.Name
				break
			}
		}
		if name == "" {
			if w.total == 0 {
				continue
			}
			c.fail("type %s (%s/%s, total %d) is not listed by /api/apps (listed: %v)",
				w.kilnName, w.sampleTy, w.unit, w.total, apps)
			continue
		}
		c.types++
		got, err := c.render(name)
		if err != nil {
			c.fail("%s: %v", name, err)
			continue
		}
		c.compare(name, w, got)
	}
	return nil
}

// compare checks the total and the top functions of the reference against Kiln's table.
func (c *checker) compare(name string, w expected, got rendered) {
	eq := func(a, b int64) bool {
		if w.relTol == 0 {
			return a == b
		}
		return math.Abs(float64(a-b)) <= w.relTol*math.Max(math.Abs(float64(a)), 1)
	}
	if !eq(w.total, got.total) {
		c.fail("%s: total %d, reference %d%s", name, got.total, w.total, why(w))
	} else {
		c.ok("%s: total %d", name, got.total)
	}
	if w.lines != nil {
		got, err := c.exportLines(name)
		if err != nil {
			c.fail("%s: %v", name, err)
		}
		for _, l := range top(w.lines, topN) {
			if !eq(w.lines[l], got[l]) {
				c.fail("%s: pprof export self of line %s is %d, reference %d%s", name, l, got[l], w.lines[l], why(w))
			} else {
				c.ok("%s: line %s %d", name, l, got[l])
			}
		}
	}
	for _, f := range top(w.self, topN) {
		gs, gt := got.self[f], got.totals[f]
		if !eq(w.self[f], gs) {
			c.fail("%s: self of %s is %d, reference %d%s", name, f, gs, w.self[f], why(w))
		} else {
			c.ok("%s: self of %s %d", name, f, gs)
		}
		if !eq(w.totals[f], gt) {
			c.fail("%s: total of %s is %d, reference %d%s", name, f, gt, w.totals[f], why(w))
		} else {
			c.ok("%s: total of %s %d", name, f, gt)
		}
	}
}

func why(w expected) string {
	if w.why == "" {
		return ""
	}
	return " (" + w.why + ")"
}

// top returns the n names with the largest values, ties by name.
func top(m map[string]int64, n int) []string {
	names := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			names = append(names, k)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if m[names[i]] != m[names[j]] {
			return m[names[i]] > m[names[j]]
		}
		return names[i] < names[j]
	})
	if len(names) > n {
		names = names[:n]
	}
	return names
}

// accumulate adds one stack (leaf first) to self and totals; a function counts once per stack.
func accumulate(self, totals map[string]int64, stack []string, v int64) {
	if len(stack) == 0 {
		return
	}
	self[stack[0]] += v
	seen := make(map[string]bool, len(stack))
	for _, f := range stack {
		if !seen[f] {
			seen[f] = true
			totals[f] += v
		}
	}
}

// expectPprof: one expectation per sample type. Negative values are dropped, as Grafana
// Pyroscope drops them at ingest (Kiln's documented semantics, docs/negative-values.md).
func expectPprof(body []byte) ([]expected, error) {
	p, err := profile.ParseData(body)
	if err != nil {
		return nil, err
	}
	var out []expected
	for i, st := range p.SampleType {
		w := expected{sampleTy: st.Type, unit: st.Unit, self: map[string]int64{}, totals: map[string]int64{},
			lines: map[string]int64{}}
		for _, s := range p.Sample {
			v := s.Value[i]
			if v <= 0 {
				continue
			}
			stack := pprofStack(s)
			if len(stack) == 0 {
				continue
			}
			w.total += v
			accumulate(w.self, w.totals, stack, v)
			w.lines[pprofLeafLine(s)] += v
		}
		out = append(out, w)
	}
	return out, nil
}

// pprofLeafLine is "function:line" of a sample's leaf frame ("0x…:0" without symbols).
func pprofLeafLine(s *profile.Sample) string {
	for _, loc := range s.Location {
		if len(loc.Line) == 0 {
			return fmt.Sprintf("0x%x:0", loc.Address)
		}
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			n := l.Function.Name
			if n == "" {
				n = l.Function.SystemName
			}
			if n != "" {
				return fmt.Sprintf("%s:%d", n, l.Line)
			}
		}
	}
	return ""
}

// pprofStack names a sample's frames leaf first: inlined lines expand, unsymbolized locations
// are named by address.
func pprofStack(s *profile.Sample) []string {
	var names []string
	for _, loc := range s.Location {
		if len(loc.Line) == 0 {
			names = append(names, fmt.Sprintf("0x%x", loc.Address))
			continue
		}
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			n := l.Function.Name
			if n == "" {
				n = l.Function.SystemName
			}
			if n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

// jfrNames maps jfr-parser's (metric, sample type) to Kiln's short type names.
var jfrNames = map[[2]string]string{
	{"process_cpu", "cpu"}:                   "cpu",
	{"wall", "wall"}:                         "wall",
	{"memory", "alloc_in_new_tlab_objects"}:  "alloc_in_new_tlab_objects",
	{"memory", "alloc_in_new_tlab_bytes"}:    "alloc_in_new_tlab_bytes",
	{"memory", "alloc_outside_tlab_objects"}: "alloc_outside_tlab_objects",
	{"memory", "alloc_outside_tlab_bytes"}:   "alloc_outside_tlab_bytes",
	{"memory", "alloc_sample_objects"}:       "alloc_sample_objects",
	{"memory", "alloc_sample_bytes"}:         "alloc_sample_bytes",
	{"memory", "live"}:                       "live",
	{"memory", "malloc_objects"}:             "malloc_objects",
	{"memory", "malloc_bytes"}:               "malloc_bytes",
	{"mutex", "contentions"}:                 "lock_count",
	{"mutex", "delay"}:                       "lock_duration",
	{"block", "contentions"}:                 "block_count",
	{"block", "delay"}:                       "block_duration",
}

func gunzip(b []byte) ([]byte, error) {
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		return b, nil
	}
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func expectJFR(body, labels []byte, rate int) ([]expected, error) {
	raw, err := gunzip(body)
	if err != nil {
		return nil, err
	}
	var snapshot *jfrpprof.LabelsSnapshot
	if labels != nil {
		lb, err := gunzip(labels)
		if err != nil {
			return nil, err
		}
		snapshot = new(jfrpprof.LabelsSnapshot)
		if err := snapshot.UnmarshalVT(lb); err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
	}
	now := time.Now()
	ps, err := jfrpprof.ParseJFR(raw, &jfrpprof.ParseInput{
		StartTime: now.Add(-10 * time.Second), EndTime: now, SampleRate: int64(rate),
	}, snapshot)
	if err != nil {
		return nil, err
	}
	period := int64(1e9) / int64(rate)
	byName := map[string]*expected{}
	var order []string
	for _, jp := range ps.Profiles {
		p := jp.Profile
		for i, st := range p.SampleType {
			ty := p.StringTable[st.Type]
			name, ok := jfrNames[[2]string{jp.Metric, ty}]
			if !ok {
				return nil, fmt.Errorf("no Kiln type for %s/%s", jp.Metric, ty)
			}
			w := byName[name]
			if w == nil {
				w = &expected{kilnName: name, self: map[string]int64{}, totals: map[string]int64{},
					lines: map[string]int64{}}
				byName[name] = w
				order = append(order, name)
			}
			div := int64(1)
			scale := 1.0
			switch name {
			case "cpu", "wall":
				// The reference multiplies sample counts by the period; Kiln stores counts.
				div = period
			case "lock_duration", "block_duration":
				// The reference keeps durations in chunk ticks; Kiln converts each event's
				// duration to ns (truncating): converted here with the recording's tick rate.
				scale = 1e9 / ticksPerSecond(raw)
				w.relTol = 0.001
				w.why = "ticks converted to nanoseconds, 0.1% tolerance"
			}
			locName := map[uint64]string{}
			locLine := map[uint64]string{}
			fnName := map[uint64]string{}
			for _, f := range p.Function {
				fnName[f.Id] = jfrFrameName(p.StringTable[f.Name])
			}
			for _, l := range p.Location {
				if len(l.Line) > 0 {
					locName[l.Id] = fnName[l.Line[0].FunctionId]
					locLine[l.Id] = fmt.Sprintf("%s:%d", locName[l.Id], l.Line[0].Line)
				}
			}
			for _, s := range p.Sample {
				v := int64(float64(s.Value[i]/div) * scale)
				if v <= 0 {
					continue
				}
				stack := make([]string, 0, len(s.LocationId))
				for _, id := range s.LocationId {
					stack = append(stack, locName[id])
				}
				if len(stack) == 0 {
					// Kiln keeps no sample without a frame.
					continue
				}
				w.total += v
				accumulate(w.self, w.totals, stack, v)
				w.lines[locLine[s.LocationId[0]]] += v
			}
		}
	}
	out := make([]expected, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out, nil
}

// jfrFrameName: the reference names frames `class.method` with the class as the JVM spells it
// (`java/lang/Thread.run`), and `.method` without a class; Kiln writes `java.lang.Thread.run`
// and just `method` (a native library path keeps its slashes).
func jfrFrameName(s string) string {
	if strings.HasPrefix(s, ".") {
		return s[1:]
	}
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return s
	}
	return strings.ReplaceAll(s[:i], "/", ".") + s[i:]
}

// ticksPerSecond reads the tick rate from the first chunk header of a recording.
func ticksPerSecond(raw []byte) float64 {
	if len(raw) < 64 {
		return 1e9
	}
	tps := binary.BigEndian.Uint64(raw[56:64])
	if tps == 0 {
		return 1e9
	}
	return float64(tps)
}

// expectFolded: `frame;frame;leaf count` lines (frames may contain spaces).
func expectFolded(body []byte, ty string) ([]expected, error) {
	w := expected{kilnName: ty, self: map[string]int64{}, totals: map[string]int64{}}
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimRight(line, "\r")
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseInt(strings.TrimSpace(line[i+1:]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("folded line %q: %v", line, err)
		}
		if v <= 0 {
			continue
		}
		frames := strings.Split(line[:i], ";")
		leafFirst := make([]string, len(frames))
		for j, f := range frames {
			leafFirst[len(frames)-1-j] = f
		}
		w.total += v
		accumulate(w.self, w.totals, leafFirst, v)
	}
	return []expected{w}, nil
}

// expectSpeedscope: sampled profiles; weights in a time unit are converted to nanoseconds,
// rounded per sample, as the speedscope format's own units say.
func expectSpeedscope(body []byte, ty string) ([]expected, error) {
	var f struct {
		Shared struct {
			Frames []struct {
				Name string `json:"name"`
			} `json:"frames"`
		} `json:"shared"`
		Profiles []struct {
			Type    string    `json:"type"`
			Unit    string    `json:"unit"`
			Samples [][]int   `json:"samples"`
			Weights []float64 `json:"weights"`
		} `json:"profiles"`
	}
	if err := json.Unmarshal(body, &f); err != nil {
		return nil, err
	}
	w := expected{kilnName: ty, self: map[string]int64{}, totals: map[string]int64{}}
	for _, p := range f.Profiles {
		if p.Type != "sampled" {
			return nil, fmt.Errorf("only sampled speedscope profiles are compared")
		}
		scale := map[string]float64{"nanoseconds": 1, "microseconds": 1e3, "milliseconds": 1e6, "seconds": 1e9}[p.Unit]
		if scale == 0 {
			scale = 1
		}
		for i, s := range p.Samples {
			v := int64(math.Round(p.Weights[i] * scale))
			if v <= 0 || len(s) == 0 {
				continue
			}
			leafFirst := make([]string, len(s))
			for j, fi := range s {
				leafFirst[len(s)-1-j] = f.Shared.Frames[fi].Name
			}
			w.total += v
			accumulate(w.self, w.totals, leafFirst, v)
		}
	}
	return []expected{w}, nil
}

// push sends a file as an agent does: pprof as the Go agent's multipart body, JFR as
// pyroscope-java's (multipart with a labels part when there are labels, raw otherwise).
func (c *checker) push(app string, e entry, body, labels []byte, rate int) error {
	until := time.Now().Unix()
	q := url.Values{}
	q.Set("name", app+"{conformance=true}")
	q.Set("from", strconv.FormatInt(until-10, 10))
	q.Set("until", strconv.FormatInt(until, 10))
	q.Set("sampleRate", strconv.Itoa(rate))
	if e.Spy != "" {
		q.Set("spyName", e.Spy)
	}
	var req *http.Request
	var err error
	switch e.Format {
	case "pprof":
		var buf bytes.Buffer
		mw := newMultipart(&buf)
		mw.part("profile", "profile.pprof", body)
		ct := mw.close()
		req, err = http.NewRequest("POST", c.base+"/ingest?"+q.Encode(), &buf)
		if err == nil {
			req.Header.Set("Content-Type", ct)
		}
	case "folded", "speedscope":
		q.Set("name", app+"."+e.Type+"{conformance=true}")
		q.Set("format", e.Format)
		req, err = http.NewRequest("POST", c.base+"/ingest?"+q.Encode(), bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "text/plain")
		}
	case "jfr":
		q.Set("format", "jfr")
		if labels != nil {
			var buf bytes.Buffer
			mw := newMultipart(&buf)
			mw.part("jfr", "jfr", body)
			mw.part("labels", "labels", labels)
			ct := mw.close()
			req, err = http.NewRequest("POST", c.base+"/ingest?"+q.Encode(), &buf)
			if err == nil {
				req.Header.Set("Content-Type", ct)
			}
		} else {
			req, err = http.NewRequest("POST", c.base+"/ingest?"+q.Encode(), bytes.NewReader(body))
			if err == nil {
				req.Header.Set("Content-Type", "application/octet-stream")
			}
		}
	}
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("ingest answered %d: %s", resp.StatusCode, msg)
	}
	return nil
}

type appInfo struct {
	Name        string `json:"name"`
	ProfileType string `json:"profileType"`
}

func (c *checker) apps(app string) ([]appInfo, error) {
	var all []appInfo
	if err := c.getJSON("/api/apps", &all); err != nil {
		return nil, err
	}
	var out []appInfo
	for _, a := range all {
		if strings.HasPrefix(a.Name, app+".") {
			out = append(out, a)
		}
	}
	// /label-values?label=__name__ must list the same names.
	var names []string
	if err := c.getJSON("/label-values?label=__name__", &names); err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	for _, a := range out {
		if !have[a.Name] {
			c.fail("%s is in /api/apps but not in /label-values?label=__name__", a.Name)
		}
	}
	return out, nil
}

func (c *checker) get(path string) ([]byte, error) {
	resp, err := http.Get(c.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s answered %d: %s", path, resp.StatusCode, b)
	}
	return b, nil
}

func (c *checker) getJSON(path string, v any) error {
	b, err := c.get(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// rendered is Kiln's view of one type: the `functions` table and the flamebearer total.
type rendered struct {
	total  int64
	self   map[string]int64
	totals map[string]int64
}

func renderPath(name, format string) string {
	q := url.Values{}
	q.Set("query", name+"{}")
	q.Set("from", "now-1h")
	q.Set("until", "now+1h")
	q.Set("format", format)
	return "/render?" + q.Encode()
}

type renderJSON struct {
	Flamebearer struct {
		Names    []string  `json:"names"`
		Levels   [][]int64 `json:"levels"`
		NumTicks int64     `json:"numTicks"`
	} `json:"flamebearer"`
	Functions []struct {
		Name  string `json:"name"`
		Self  int64  `json:"self"`
		Total int64  `json:"total"`
	} `json:"functions"`
}

func (c *checker) renderJSON(name string) (renderJSON, error) {
	var r renderJSON
	err := c.getJSON(renderPath(name, "json"), &r)
	return r, err
}

func (c *checker) render(name string) (rendered, error) {
	r, err := c.renderJSON(name)
	if err != nil {
		return rendered{}, err
	}
	out := rendered{total: r.Flamebearer.NumTicks, self: map[string]int64{}, totals: map[string]int64{}}
	for _, f := range r.Functions {
		out.self[f.Name] = f.Self
		out.totals[f.Name] = f.Total
	}
	return out, nil
}

// exportLines: self per leaf "function:line" of the type's pprof export.
func (c *checker) exportLines(name string) (map[string]int64, error) {
	body, err := c.get(renderPath(name, "pprof"))
	if err != nil {
		return nil, err
	}
	p, err := profile.ParseData(body)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, s := range p.Sample {
		out[pprofLeafLine(s)] += s.Value[0]
	}
	return out, nil
}

// viewsAgree: the flamebearer, the functions table, the pprof export and the collapsed export
// of one type sum to the same total and the same self per function.
func (c *checker) viewsAgree(name string) error {
	r, err := c.renderJSON(name)
	if err != nil {
		return err
	}
	if r.Flamebearer.NumTicks == 0 {
		return fmt.Errorf("renders an empty profile")
	}
	views := map[string]map[string]int64{}
	totals := map[string]int64{}

	// Flamebearer levels: [offset, total, self, name] per node, offsets relative to the
	// previous node of the level.
	fb := map[string]int64{}
	for li, level := range r.Flamebearer.Levels {
		for j := 0; j+3 < len(level); j += 4 {
			if li == 0 {
				continue // the synthetic root
			}
			fb[r.Flamebearer.Names[level[j+3]]] += level[j+2]
		}
	}
	views["flamebearer"], totals["flamebearer"] = fb, r.Flamebearer.NumTicks

	fn := map[string]int64{}
	var fnTotal int64
	for _, f := range r.Functions {
		fn[f.Name] += f.Self
		fnTotal += f.Self
	}
	views["functions"], totals["functions"] = fn, fnTotal

	body, err := c.get(renderPath(name, "collapsed"))
	if err != nil {
		return err
	}
	col := map[string]int64{}
	var colTotal int64
	for _, line := range strings.Split(string(body), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseInt(line[i+1:], 10, 64)
		if err != nil {
			return fmt.Errorf("collapsed line %q: %v", line, err)
		}
		frames := strings.Split(line[:i], ";")
		col[frames[len(frames)-1]] += v
		colTotal += v
	}
	views["collapsed"], totals["collapsed"] = col, colTotal

	body, err = c.get(renderPath(name, "pprof"))
	if err != nil {
		return err
	}
	p, err := profile.ParseData(body)
	if err != nil {
		return fmt.Errorf("pprof export does not parse: %v", err)
	}
	pp := map[string]int64{}
	var ppTotal int64
	for _, s := range p.Sample {
		st := pprofStack(s)
		if len(st) > 0 {
			pp[st[0]] += s.Value[0]
		}
		ppTotal += s.Value[0]
	}
	views["pprof"], totals["pprof"] = pp, ppTotal

	for v, t := range totals {
		if t != r.Flamebearer.NumTicks {
			return fmt.Errorf("%s total %d, flamebearer %d", v, t, r.Flamebearer.NumTicks)
		}
	}
	for v, m := range views {
		for f, self := range fb {
			if m[f] != self {
				return fmt.Errorf("self of %s: %s %d, flamebearer %d", f, v, m[f], self)
			}
		}
		for f, self := range m {
			if fb[f] != self {
				return fmt.Errorf("self of %s: %s %d, flamebearer %d", f, v, self, fb[f])
			}
		}
	}
	c.ok("%s: flamebearer, functions, collapsed and pprof agree (total %d)", name, r.Flamebearer.NumTicks)
	return nil
}

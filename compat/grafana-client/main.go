// Acceptance test of Kiln's querier API as Grafana's Pyroscope data source calls it: the
// generated Connect clients of github.com/grafana/pyroscope/api against a running daemon.
//
//	grafana-client -kiln http://127.0.0.1:PORT -testdata ../../testdata
//
// Pushes two profiles (Go CPU and Go heap) under one tenant, then checks every method, the
// binary and JSON encodings, and that a second tenant sees nothing; then runs the official Go
// agent (pyroscope-go) in this process and reads its profiles back the same way (agent.go).
// Exits 1 on any failure.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
	settingsv1 "github.com/grafana/pyroscope/api/gen/proto/go/settings/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/settings/v1/settingsv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
	"google.golang.org/protobuf/proto"
)

const (
	tenantA = "team-a"
	tenantB = "team-b"
	cpuApp  = "grafana-client-cpu"
	heapApp = "grafana-client-heap"
)

var failures int

func check(ok bool, what string, args ...any) {
	msg := fmt.Sprintf(what, args...)
	if ok {
		fmt.Println("ok  ", msg)
	} else {
		fmt.Println("FAIL", msg)
		failures++
	}
}

func fatal(what string, err error) {
	fmt.Printf("FAIL %s: %v\n", what, err)
	os.Exit(1)
}

// tenantTransport names the tenant of every request, as Grafana's data source does.
type tenantTransport struct{ tenant string }

func (t tenantTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Scope-OrgID", t.tenant)
	return http.DefaultTransport.RoundTrip(r)
}

func client(tenant string) *http.Client {
	return &http.Client{Transport: tenantTransport{tenant}, Timeout: 30 * time.Second}
}

// ingest pushes a pprof file through /ingest, stamped now.
func ingest(base, tenant, name, file string) error {
	body, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	part, _ := w.CreateFormFile("profile", filepath.Base(file))
	part.Write(body)
	w.Close()
	now := time.Now().Unix()
	u := fmt.Sprintf("%s/ingest?name=%s&spyName=gospy&from=%d&until=%d",
		base, url.QueryEscape(name), now-10, now)
	req, _ := http.NewRequest(http.MethodPost, u, &buf)
	req.Header.Set("Content-Type", w.FormDataContentType())
	resp, err := client(tenant).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

// selfByName sums the self values of a flamegraph's nodes per function name.
func selfByName(names []string, levels [][]int64) map[string]int64 {
	out := map[string]int64{}
	for _, l := range levels {
		for i := 0; i+3 < len(l); i += 4 {
			out[names[l[i+3]]] += l[i+2]
		}
	}
	return out
}

// top returns the n names with the largest values (ties by name).
func top(m map[string]int64, n int) []string {
	var names []string
	for k, v := range m {
		if v > 0 && k != "total" {
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

type renderJSON struct {
	Flamebearer struct {
		Names    []string  `json:"names"`
		Levels   [][]int64 `json:"levels"`
		NumTicks int64     `json:"numTicks"`
	} `json:"flamebearer"`
}

func render(base, tenant, query string, start, end int64) (renderJSON, error) {
	var out renderJSON
	u := fmt.Sprintf("%s/render?query=%s&from=%d&until=%d&format=json",
		base, url.QueryEscape(query), start/1000, end/1000)
	resp, err := client(tenant).Get(u)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return out, fmt.Errorf("/render: %s: %s", resp.Status, b)
	}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// postJSON calls a method with the proto3 JSON encoding over plain HTTP.
func postJSON(base, tenant, method string, req any, resp any) (int, error) {
	body, _ := json.Marshal(req)
	r, _ := http.NewRequest(http.MethodPost, base+method, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Connect-Protocol-Version", "1")
	res, err := client(tenant).Do(r)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	return res.StatusCode, json.NewDecoder(res.Body).Decode(resp)
}

func main() {
	base := flag.String("kiln", "", "daemon URL")
	testdata := flag.String("testdata", "../../testdata", "directory of go-cpu.pb.gz and go-heap.pb.gz")
	flag.Parse()
	if *base == "" {
		fatal("usage", fmt.Errorf("-kiln URL is required"))
	}
	ctx := context.Background()

	if err := ingest(*base, tenantA, cpuApp+".cpu{env=ci,region=eu}", filepath.Join(*testdata, "go-cpu.pb.gz")); err != nil {
		fatal("pushing go-cpu.pb.gz", err)
	}
	if err := ingest(*base, tenantA, heapApp+"{env=staging}", filepath.Join(*testdata, "go-heap.pb.gz")); err != nil {
		fatal("pushing go-heap.pb.gz", err)
	}
	end := time.Now().Add(time.Minute).UnixMilli()
	start := end - int64(time.Hour/time.Millisecond)

	q := querierv1connect.NewQuerierServiceClient(client(tenantA), *base)
	qb := querierv1connect.NewQuerierServiceClient(client(tenantB), *base)
	qj := querierv1connect.NewQuerierServiceClient(client(tenantA), *base, connect.WithProtoJSON())

	// ProfileTypes (also the data source's health check).
	types, err := q.ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{Start: start, End: end}))
	if err != nil {
		fatal("ProfileTypes", err)
	}
	var cpuType, memType string
	var ids []string
	for _, t := range types.Msg.ProfileTypes {
		ids = append(ids, t.ID)
		if strings.HasPrefix(t.ID, "process_cpu:") && (cpuType == "" || t.ID == "process_cpu:cpu:nanoseconds:cpu:nanoseconds") {
			cpuType = t.ID
		}
		if strings.HasPrefix(t.ID, "memory:") && t.Name == "memory" {
			memType = t.ID
		}
	}
	check(cpuType != "" && memType != "", "ProfileTypes lists a process_cpu and a memory type: %v", ids)
	if cpuType == "" {
		os.Exit(1)
	}

	// LabelNames, LabelValues, Series.
	names, err := q.LabelNames(ctx, connect.NewRequest(&typesv1.LabelNamesRequest{Start: start, End: end}))
	check(err == nil && contains(names.Msg.GetNames(), "service_name") && contains(names.Msg.GetNames(), "env") &&
		contains(names.Msg.GetNames(), "__name__"), "LabelNames has service_name, env, __name__: %v %v", names.Msg.GetNames(), err)
	apps, err := q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{Name: "service_name", Start: start, End: end}))
	check(err == nil && contains(apps.Msg.GetNames(), cpuApp) && contains(apps.Msg.GetNames(), heapApp),
		"LabelValues(service_name) lists both pushed services: %v %v", apps.Msg.GetNames(), err)
	envs, err := q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{
		Name: "env", Matchers: []string{`{service_name="` + cpuApp + `"}`}, Start: start, End: end}))
	check(err == nil && len(envs.Msg.GetNames()) == 1 && envs.Msg.GetNames()[0] == "ci",
		"LabelValues(env) for the CPU service is [ci]: %v %v", envs.Msg.GetNames(), err)
	regions, err := q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{
		Name: "region", Matchers: []string{`{env=~"c.*", region!="us"}`}, Start: start, End: end}))
	check(err == nil && len(regions.Msg.GetNames()) == 1 && regions.Msg.GetNames()[0] == "eu",
		"LabelValues(region) with =~ and != matchers is [eu]: %v %v", regions.Msg.GetNames(), err)
	series, err := q.Series(ctx, connect.NewRequest(&querierv1.SeriesRequest{
		Matchers: []string{`{service_name="` + cpuApp + `", __profile_type__="` + cpuType + `"}`}, Start: start, End: end}))
	check(err == nil && len(series.Msg.GetLabelsSet()) == 1, "Series finds the one CPU series of the service: %v %v", series.Msg.GetLabelsSet(), err)

	// SelectMergeStacktraces vs /render.
	selector := `{service_name="` + cpuApp + `", env="ci"}`
	fg, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Format: querierv1.ProfileFormat_PROFILE_FORMAT_FLAMEGRAPH}))
	if err != nil {
		fatal("SelectMergeStacktraces", err)
	}
	flame := fg.Msg.Flamegraph
	var levels [][]int64
	for _, l := range flame.Levels {
		levels = append(levels, l.Values)
	}
	r, err := render(*base, tenantA, cpuType+selector, start, end)
	if err != nil {
		fatal("/render", err)
	}
	check(flame.Total > 0 && flame.Total == r.Flamebearer.NumTicks,
		"SelectMergeStacktraces total %d equals /render's %d", flame.Total, r.Flamebearer.NumTicks)
	topQ := top(selfByName(flame.Names, levels), 5)
	topR := top(selfByName(r.Flamebearer.Names, r.Flamebearer.Levels), 5)
	check(len(topQ) > 0 && strings.Join(topQ, ",") == strings.Join(topR, ","),
		"same top functions as /render: %v vs %v", topQ, topR)

	tree, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Format: querierv1.ProfileFormat_PROFILE_FORMAT_TREE}))
	check(err == nil && len(tree.Msg.GetTree()) > 0, "SelectMergeStacktraces tree format answers %d bytes (%v)", len(tree.Msg.GetTree()), err)

	small := int64(10)
	capped, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, MaxNodes: &small}))
	check(err == nil && flame.Total > 0 && len(capped.Msg.GetFlamegraph().GetNames()) <= 12 && capped.Msg.GetFlamegraph().GetTotal() == flame.Total,
		"max_nodes=10 keeps the total and at most ~10 names: %d names (%v)", len(capped.Msg.GetFlamegraph().GetNames()), err)

	// SelectSeries: points add up to the flamegraph's total.
	sum := func(resp *connect.Response[querierv1.SelectSeriesResponse]) float64 {
		var s float64
		for _, series := range resp.Msg.Series {
			for _, p := range series.Points {
				s += p.Value
			}
		}
		return s
	}
	ss, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Step: 15}))
	check(err == nil && flame.Total > 0 && int64(sum(ss)) == flame.Total, "SelectSeries points sum to the total: %v vs %d (%v)", sum(ss), flame.Total, err)
	limit := int64(1)
	grouped, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: "{}", Start: start, End: end, Step: 60, GroupBy: []string{"env"}, Limit: &limit}))
	check(err == nil && len(grouped.Msg.Series) == 1 && len(grouped.Msg.Series[0].Labels) == 1 &&
		grouped.Msg.Series[0].Labels[0].Value == "ci", "SelectSeries group_by env, limit 1: %v (%v)", grouped.Msg.GetSeries(), err)

	// SelectMergeProfile: a pprof `go tool pprof` opens, with the same top function.
	prof, err := q.SelectMergeProfile(ctx, connect.NewRequest(&querierv1.SelectMergeProfileRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end}))
	if err != nil {
		fatal("SelectMergeProfile", err)
	}
	raw, _ := proto.Marshal(prof.Msg)
	dir, _ := os.MkdirTemp("", "grafana-client")
	defer os.RemoveAll(dir)
	pf := filepath.Join(dir, "merged.pb")
	os.WriteFile(pf, raw, 0o644)
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=1", pf).CombinedOutput()
	topPprof := ""
	seen := false
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if seen && len(f) >= 6 {
			topPprof = strings.Join(f[5:], " ")
			break
		}
		if len(f) > 0 && f[0] == "flat" {
			seen = true
		}
	}
	topFlame := ""
	if len(topQ) > 0 {
		topFlame = topQ[0]
	}
	check(err == nil && topPprof != "" && topPprof == topFlame,
		"go tool pprof -top of SelectMergeProfile: top %q, flamegraph top %q (%v)", topPprof, topFlame, err)

	// Diff of the selection with itself.
	side := &querierv1.SelectMergeStacktracesRequest{ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end}
	diff, err := q.Diff(ctx, connect.NewRequest(&querierv1.DiffRequest{Left: side, Right: side}))
	check(err == nil && diff.Msg.Flamegraph.LeftTicks == flame.Total && diff.Msg.Flamegraph.RightTicks == flame.Total,
		"Diff answers with both sides' ticks = %d (%v)", flame.Total, err)

	// The heap profile: memory type through the same path.
	heap, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: memType, LabelSelector: `{service_name="` + heapApp + `"}`, Start: start, End: end}))
	rh, rerr := render(*base, tenantA, memType+`{service_name="`+heapApp+`"}`, start, end)
	check(err == nil && rerr == nil && heap.Msg.Flamegraph.Total > 0 && heap.Msg.Flamegraph.Total == rh.Flamebearer.NumTicks,
		"heap %s total equals /render's (%v, %v)", memType, err, rerr)

	stats, err := q.GetProfileStats(ctx, connect.NewRequest(&typesv1.GetProfileStatsRequest{}))
	check(err == nil && stats.Msg.DataIngested, "GetProfileStats: data ingested (%v)", err)
	settings := settingsv1connect.NewSettingsServiceClient(client(tenantA), *base)
	_, err = settings.Get(ctx, connect.NewRequest(&settingsv1.GetSettingsRequest{}))
	check(err == nil, "SettingsService/Get answers (%v)", err)

	// Unknown profile type: an empty answer, not an error.
	unknown, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: "nope:nope:count:nope:count", LabelSelector: "{}", Start: start, End: end}))
	check(err == nil && unknown.Msg.GetFlamegraph().GetTotal() == 0, "unknown profile type: empty flamegraph (%v)", err)

	// A malformed selector: invalid_argument.
	_, err = q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: `{service_name=`, Start: start, End: end}))
	check(connect.CodeOf(err) == connect.CodeInvalidArgument, "malformed selector: invalid_argument (%v)", err)

	// Tenants: the second sees nothing of the first.
	tb, err := qb.ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{Start: start, End: end}))
	check(err == nil && len(tb.Msg.ProfileTypes) == 0, "tenant %s: no profile types (%v)", tenantB, err)
	vb, err := qb.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{Name: "service_name", Start: start, End: end}))
	check(err == nil && len(vb.Msg.Names) == 0, "tenant %s: no services (%v)", tenantB, err)
	fb, err := qb.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end}))
	check(err == nil && fb.Msg.GetFlamegraph().GetTotal() == 0, "tenant %s: empty flamegraph (%v)", tenantB, err)

	// JSON: the generated client with the proto3 JSON codec, and plain HTTP.
	fj, err := qj.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end}))
	check(err == nil && fj.Msg.GetFlamegraph().GetTotal() == flame.Total, "JSON codec: same total (%v)", err)
	sj, err := qj.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Step: 15,
		Aggregation: typesv1.TimeSeriesAggregationType_TIME_SERIES_AGGREGATION_TYPE_SUM.Enum()}))
	check(err == nil && int64(sum(sj)) == flame.Total, "JSON codec: SelectSeries sums to the total (%v)", err)
	var plain struct {
		Flamegraph struct {
			Total string `json:"total"`
		} `json:"flamegraph"`
	}
	status, err := postJSON(*base, tenantA, "/querier.v1.QuerierService/SelectMergeStacktraces", map[string]any{
		"profileTypeID": cpuType, "labelSelector": selector,
		"start": strconv.FormatInt(start, 10), "end": strconv.FormatInt(end, 10), "format": "PROFILE_FORMAT_FLAMEGRAPH",
	}, &plain)
	check(err == nil && status == 200 && plain.Flamegraph.Total == strconv.FormatInt(flame.Total, 10),
		"plain HTTP JSON: total %q as a string (%d, %v)", plain.Flamegraph.Total, status, err)
	var bad struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	status, err = postJSON(*base, tenantA, "/querier.v1.QuerierService/SelectMergeStacktraces", map[string]any{
		"profileTypeID": cpuType, "start": "soon"}, &bad)
	check(err == nil && status == 400 && bad.Code == "invalid_argument" && bad.Message != "",
		"plain HTTP JSON, bad int64: 400 invalid_argument %q", bad.Message)

	realAgent(ctx, *base, q)

	if failures > 0 {
		fmt.Printf("%d check(s) failed\n", failures)
		os.Exit(1)
	}
	fmt.Println("all querier checks passed")
}

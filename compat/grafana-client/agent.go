package main

import (
	"context"
	"crypto/sha256"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/grafana/pyroscope-go"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

const agentApp = "grafana-client-agent"

// agentBurn is the function the real agent's CPU profile must show on top.
func agentBurn(d time.Duration) {
	buf := make([]byte, 4096)
	for end := time.Now().Add(d); time.Now().Before(end); {
		s := sha256.Sum256(buf)
		buf[0] = s[0]
	}
}

// realAgent runs the official Go agent (pyroscope-go) in this process against Kiln under
// tenant A, burning CPU in agentBurn under a tag, then reads what it pushed back through the
// querier as Grafana does and compares it with /render.
func realAgent(ctx context.Context, base string, q querierv1connect.QuerierServiceClient) {
	p, err := pyroscope.Start(pyroscope.Config{
		ApplicationName: agentApp,
		ServerAddress:   base,
		TenantID:        tenantA,
		Tags:            map[string]string{"source": "pyroscope-go"},
		UploadRate:      2 * time.Second,
		ProfileTypes:    []pyroscope.ProfileType{pyroscope.ProfileCPU},
	})
	if err != nil {
		fatal("starting pyroscope-go", err)
	}
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); {
		pyroscope.TagWrapper(ctx, pyroscope.Labels("phase", "burn"), func(context.Context) {
			agentBurn(50 * time.Millisecond)
		})
	}
	if err := p.Stop(); err != nil {
		fatal("stopping pyroscope-go", err)
	}
	end := time.Now().Add(time.Minute).UnixMilli()
	start := end - int64(time.Hour/time.Millisecond)
	const cpuType = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
	selector := `{service_name="` + agentApp + `"}`

	var fg *connect.Response[querierv1.SelectMergeStacktracesResponse]
	// The agent's last upload is acknowledged before Stop returns; reads see every
	// acknowledged push.
	fg, err = q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end}))
	if err != nil {
		fatal("SelectMergeStacktraces of the agent's profiles", err)
	}
	flame := fg.Msg.GetFlamegraph()
	var levels [][]int64
	for _, l := range flame.GetLevels() {
		levels = append(levels, l.Values)
	}
	r, err := render(base, tenantA, cpuType+selector, start, end)
	if err != nil {
		fatal("/render of the agent's profiles", err)
	}
	check(flame.GetTotal() > 0 && flame.GetTotal() == r.Flamebearer.NumTicks,
		"real agent: SelectMergeStacktraces total %d equals /render's %d", flame.GetTotal(), r.Flamebearer.NumTicks)
	topQ := top(selfByName(flame.GetNames(), levels), 3)
	topR := top(selfByName(r.Flamebearer.Names, r.Flamebearer.Levels), 3)
	check(len(topQ) > 0 && strings.Join(topQ, ",") == strings.Join(topR, ","),
		"real agent: same top functions as /render: %v vs %v", topQ, topR)
	// Nearly all of the program's CPU is under agentBurn (its callees do the hashing).
	var burn int64
	for _, l := range levels {
		for i := 0; i+3 < len(l); i += 4 {
			if strings.HasSuffix(flame.GetNames()[l[i+3]], ".agentBurn") {
				burn += l[i+1]
			}
		}
	}
	check(flame.GetTotal() > 0 && burn*2 > flame.GetTotal(),
		"real agent: agentBurn holds most of the CPU: %d of %d", burn, flame.GetTotal())

	ss, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Step: 1}))
	var sum float64
	if err == nil {
		for _, s := range ss.Msg.Series {
			for _, p := range s.Points {
				sum += p.Value
			}
		}
	}
	check(err == nil && int64(sum) == flame.GetTotal(), "real agent: SelectSeries points sum to the total: %v vs %d (%v)", sum, flame.GetTotal(), err)

	phases, err := q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{
		Name: "phase", Matchers: []string{selector}, Start: start, End: end}))
	check(err == nil && contains(phases.Msg.GetNames(), "burn"), "real agent: LabelValues lists its tag phase=burn: %v (%v)", phases.Msg.GetNames(), err)
	sources, err := q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{
		Name: "source", Matchers: []string{selector}, Start: start, End: end}))
	check(err == nil && contains(sources.Msg.GetNames(), "pyroscope-go"), "real agent: LabelValues lists its static tag: %v (%v)", sources.Msg.GetNames(), err)
}

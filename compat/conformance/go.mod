module kiln/compat/conformance

go 1.24.0

require (
	github.com/felixge/fgprof v0.9.5
	github.com/google/pprof v0.0.0-20260202012954-cb029daf43ef
	github.com/grafana/jfr-parser v0.14.0
)

require (
	github.com/grafana/pyroscope/api v0.4.0 // indirect
	golang.org/x/text v0.22.0 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)

module github.com/kiln-profiler/kiln/examples/go-app

go 1.21

require github.com/kiln-profiler/kiln/sdk/go v0.0.0

replace github.com/kiln-profiler/kiln/sdk/go => ../../sdk/go

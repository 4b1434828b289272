module github.com/kiln-profiler/kiln/sdk/go

go 1.21

// Package kiln profiles a Go program with runtime/pprof and pushes the profiles to a Kiln daemon
// (or any Pyroscope-compatible server) every UploadRate.
//
//	p, err := kiln.Start(kiln.Config{
//		ApplicationName: "checkout",
//		ServerAddress:   "http://127.0.0.1:4040",
//		Tags:            map[string]string{"env": "prod"},
//	})
//	defer p.Stop()
//
// Dynamic tags ride on pprof labels: code run inside TagWrapper carries them in CPU profiles.
package kiln

import (
	"errors"
	"strings"
	"time"
)

// ProfileType selects what is profiled.
type ProfileType string

const (
	ProfileCPU           ProfileType = "cpu"
	ProfileAllocObjects  ProfileType = "alloc_objects"
	ProfileAllocSpace    ProfileType = "alloc_space"
	ProfileInuseObjects  ProfileType = "inuse_objects"
	ProfileInuseSpace    ProfileType = "inuse_space"
	ProfileGoroutines    ProfileType = "goroutines"
	ProfileMutexCount    ProfileType = "mutex_count"
	ProfileMutexDuration ProfileType = "mutex_duration"
	ProfileBlockCount    ProfileType = "block_count"
	ProfileBlockDuration ProfileType = "block_duration"
)

// DefaultProfileTypes are profiled when Config.ProfileTypes is empty.
var DefaultProfileTypes = []ProfileType{
	ProfileCPU, ProfileAllocObjects, ProfileAllocSpace, ProfileInuseObjects, ProfileInuseSpace, ProfileGoroutines,
}

// Logger receives the SDK's messages. The default discards them.
type Logger interface {
	Infof(format string, args ...interface{})
	Errorf(format string, args ...interface{})
}

type noopLogger struct{}

func (noopLogger) Infof(string, ...interface{})  {}
func (noopLogger) Errorf(string, ...interface{}) {}

// Config configures Start.
type Config struct {
	// ApplicationName names the service; required. Allowed characters: letters, digits, _ . / -.
	ApplicationName string
	// ServerAddress is the daemon's URL, e.g. http://127.0.0.1:4040; required.
	ServerAddress string
	// AuthToken, if set, is sent as "Authorization: Bearer AuthToken".
	AuthToken string
	// CAFile, if set, is a PEM file of CA certificates trusted for an https ServerAddress
	// instead of the system roots (e.g. a private CA).
	CAFile string
	// ClientCertFile and ClientKeyFile, if set, are a PEM certificate chain and its private key
	// presented to a daemon that requires mutual TLS. Both or neither.
	ClientCertFile, ClientKeyFile string
	// Tags are static labels added to every profile.
	Tags map[string]string
	// ProfileTypes to collect; DefaultProfileTypes when empty. Mutex and block profiling turn on
	// runtime.SetMutexProfileFraction / SetBlockProfileRate only when asked for.
	ProfileTypes []ProfileType
	// UploadRate is how often profiles are taken and pushed; 10 s when zero.
	UploadRate time.Duration
	// Logger receives messages; none are written when nil.
	Logger Logger
	// MaxQueuedUploads bounds memory while the server is unreachable: beyond it the oldest
	// upload is dropped (and counted). 64 when zero.
	MaxQueuedUploads int
}

func (c *Config) normalize() error {
	if c.ApplicationName == "" {
		return errors.New("kiln: ApplicationName is required")
	}
	for _, r := range c.ApplicationName {
		if !(r == '_' || r == '.' || r == '/' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return errors.New("kiln: ApplicationName may only contain letters, digits, _ . / -")
		}
	}
	if c.ServerAddress == "" {
		return errors.New("kiln: ServerAddress is required")
	}
	c.ServerAddress = strings.TrimRight(c.ServerAddress, "/")
	for k, v := range c.Tags {
		if strings.ContainsAny(v, ",}") || strings.ContainsAny(k, ",}={") {
			return errors.New("kiln: tag " + k + " has a character a name cannot carry (, } = {)")
		}
	}
	if len(c.ProfileTypes) == 0 {
		c.ProfileTypes = DefaultProfileTypes
	}
	if c.UploadRate <= 0 {
		c.UploadRate = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = noopLogger{}
	}
	if c.MaxQueuedUploads <= 0 {
		c.MaxQueuedUploads = 64
	}
	return nil
}

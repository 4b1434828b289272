package kiln

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"
)

// newHTTPClient returns the client pushes go through: Go's defaults (system roots) unless
// CAFile or a client certificate is configured.
func newHTTPClient(cfg Config) (*http.Client, error) {
	if cfg.CAFile == "" && cfg.ClientCertFile == "" && cfg.ClientKeyFile == "" {
		return &http.Client{Timeout: 10 * time.Second}, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kiln: reading CAFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kiln: CAFile %s holds no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if (cfg.ClientCertFile == "") != (cfg.ClientKeyFile == "") {
		return nil, fmt.Errorf("kiln: ClientCertFile and ClientKeyFile go together")
	}
	if cfg.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.ClientCertFile, cfg.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("kiln: loading the client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tc
	return &http.Client{Timeout: 10 * time.Second, Transport: transport}, nil
}

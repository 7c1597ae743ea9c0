package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// TLS profiles for keygate's listeners.
const (
	// ProfileDefault: TLS 1.2 and 1.3, ECDHE with AEAD suites only.
	ProfileDefault = "default"
	// ProfileCNSA: TLS 1.3 only, P-384 key exchange, and only TLS_AES_256_GCM_SHA384.
	// Go's crypto/tls cannot be told which TLS 1.3 suites to offer, so the handshake is
	// refused (in VerifyConnection) when any other suite was negotiated: CNSA clients
	// offer only AES-256-GCM and pass; others fail rather than downgrade.
	ProfileCNSA = "cnsa"
)

// ReloaderConfig names the files a Reloader watches.
type ReloaderConfig struct {
	CertFile, KeyFile string // the server certificate (chain) and key
	ClientCAFile      string // CA bundle for client certificates; "": no client certificates
	CRLFile           string // optional CRL for client certificates
	Profile           string // ProfileDefault ("" too) or ProfileCNSA
	// RequireClientCert refuses connections without a client certificate that verifies.
	RequireClientCert bool
	// OnReload, when set, is called after each reload that changed what is served (new
	// file contents loaded), from Reload or Watch.
	OnReload func()
}

// Reloader serves TLS with certificates read from files and reloaded when they change
// or Reload is called (SIGHUP). Without CertFile it only verifies client certificates
// (a CA bundle and CRL that reload the same way). A reload that fails keeps the old state and reports the
// error: a broken file never takes a listener down. Handshakes in flight keep the state
// they started with; existing connections are not touched.
type Reloader struct {
	cfg      ReloaderConfig
	cert     atomic.Pointer[tls.Certificate]
	verifier atomic.Pointer[Verifier]
	mu       sync.Mutex // serialises reloads
	stamp    []byte     // the files' contents at the last successful load
	failures atomic.Int64
	reloads  atomic.Int64
}

// NewReloader loads the files once; that first load must succeed.
func NewReloader(cfg ReloaderConfig) (*Reloader, error) {
	if cfg.Profile == "" {
		cfg.Profile = ProfileDefault
	}
	if cfg.Profile != ProfileDefault && cfg.Profile != ProfileCNSA {
		return nil, fmt.Errorf("certs: unknown TLS profile %q (want default or cnsa)", cfg.Profile)
	}
	if cfg.RequireClientCert && cfg.ClientCAFile == "" {
		return nil, errors.New("certs: requiring client certificates needs a client CA file")
	}
	if cfg.CertFile == "" && cfg.ClientCAFile == "" {
		return nil, errors.New("certs: nothing to load: no certificate and no client CA file")
	}
	if cfg.CRLFile != "" && cfg.ClientCAFile == "" {
		return nil, errors.New("certs: a CRL file needs a client CA file")
	}
	r := &Reloader{cfg: cfg}
	files, err := r.read()
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if err := r.load(files); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads every file again; on any error nothing changes. Files whose contents are
// those of the last load change nothing either: the verifier stays the same, so
// verifications cached against it stay valid.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	files, err := r.read()
	if err != nil {
		r.failures.Add(1)
		r.mu.Unlock()
		return fmt.Errorf("certs: reload: %w", err)
	}
	if stamp := stampOf(files); r.stamp != nil && bytes.Equal(stamp, r.stamp) {
		r.mu.Unlock()
		return nil
	}
	err = r.load(files)
	r.mu.Unlock()
	if err != nil {
		r.failures.Add(1)
		return err
	}
	r.reloads.Add(1)
	if r.cfg.OnReload != nil {
		r.cfg.OnReload()
	}
	return nil
}

// load installs the files' certificate and verifier; r.mu is held.
func (r *Reloader) load(files map[string][]byte) error {
	var cert *tls.Certificate
	if r.cfg.CertFile != "" {
		c, err := tls.X509KeyPair(files[r.cfg.CertFile], files[r.cfg.KeyFile])
		if err != nil {
			return fmt.Errorf("certs: reload %s: %w", r.cfg.CertFile, err)
		}
		if k, ok := c.Leaf.PublicKey.(*ecdsa.PublicKey); r.cfg.Profile == ProfileCNSA && (!ok || k.Curve != elliptic.P384()) {
			return fmt.Errorf("certs: reload %s: the cnsa profile needs a P-384 certificate", r.cfg.CertFile)
		}
		cert = &c
	}
	if r.cfg.CRLFile != "" && len(bytes.TrimSpace(files[r.cfg.CRLFile])) == 0 {
		// A file caught mid-write is not "nothing is revoked".
		return fmt.Errorf("certs: reload %s: %w: the file is empty", r.cfg.CRLFile, ErrBadCRL)
	}
	var v *Verifier
	if r.cfg.ClientCAFile != "" {
		var err error
		if v, err = NewVerifier(files[r.cfg.ClientCAFile], files[r.cfg.CRLFile], nil); err != nil {
			return fmt.Errorf("certs: reload %s: %w", r.cfg.ClientCAFile, err)
		}
	}
	r.cert.Store(cert)
	r.verifier.Store(v)
	r.stamp = stampOf(files)
	return nil
}

// stampOf is the files' contents in a fixed order, to compare loads.
func stampOf(files map[string][]byte) []byte {
	var b bytes.Buffer
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b.WriteString(name)
		b.WriteByte(0)
		b.Write(files[name])
	}
	return b.Bytes()
}

// read returns the contents of every configured file.
func (r *Reloader) read() (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, f := range []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile, r.cfg.CRLFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		files[f] = b
	}
	return files, nil
}

// changed reports whether any file differs from the last successful load.
func (r *Reloader) changed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := r.read()
	return err != nil || !bytes.Equal(stampOf(files), r.stamp) // an error: let Reload report it
}

// Watch checks the files every interval and reloads them when they change, until ctx
// ends. onError is told of failed reloads (the old state stays).
func (r *Reloader) Watch(ctx context.Context, every time.Duration, onError func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !r.changed() {
			continue
		}
		if err := r.Reload(); err != nil {
			if err.Error() != lastErr && onError != nil {
				onError(err)
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
	}
}

// Stats returns how many reloads succeeded and failed since the first load.
func (r *Reloader) Stats() (reloads, failures int64) { return r.reloads.Load(), r.failures.Load() }

// Verifier returns the current client certificate verifier; nil without a client CA.
func (r *Reloader) Verifier() *Verifier { return r.verifier.Load() }

// Certificate returns the current server certificate.
func (r *Reloader) Certificate() *tls.Certificate { return r.cert.Load() }

// TLSConfig returns a server configuration with the profile's settings, the current
// certificate, and client certificates checked in VerifyConnection (so resumed
// sessions are checked too) against the current CA bundle and CRL.
func (r *Reloader) TLSConfig(nextProtos ...string) *tls.Config {
	c := &tls.Config{
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.cert.Load(), nil },
		NextProtos:       nextProtos,
		MinVersion:       tls.VersionTLS12,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
		CipherSuites: []uint16{ // TLS 1.2; TLS 1.3's suites are all AEAD
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
	cnsa := r.cfg.Profile == ProfileCNSA
	if cnsa {
		c.MinVersion = tls.VersionTLS13
		c.CurvePreferences = []tls.CurveID{tls.CurveP384}
		c.CipherSuites = nil
	}
	switch {
	case r.cfg.RequireClientCert:
		c.ClientAuth = tls.RequireAnyClientCert
	case r.cfg.ClientCAFile != "":
		c.ClientAuth = tls.RequestClientCert
	}
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if cnsa && cs.CipherSuite != tls.TLS_AES_256_GCM_SHA384 {
			return fmt.Errorf("cnsa profile: cipher suite %s refused", tls.CipherSuiteName(cs.CipherSuite))
		}
		if len(cs.PeerCertificates) == 0 {
			if r.cfg.RequireClientCert {
				return errors.New("a client certificate is required")
			}
			return nil
		}
		v := r.verifier.Load()
		if v == nil {
			return errors.New("client certificates are not accepted here")
		}
		_, err := v.VerifyCert(cs.PeerCertificates[0])
		return err
	}
	return c
}

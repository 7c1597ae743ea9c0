package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/duration"
)

const certsUsage = `usage: keygate certs <command> [flags]

A private PKI for air-gapped sites (ECDSA P-384):
  init-ca --dir DIR [--name NAME] [--ttl 3650d]
            make a CA: DIR/ca.pem, DIR/ca-key.pem (0600), DIR/crl.pem
  issue   --ca-dir DIR (--server | --client) --out PREFIX [--cn NAME]
          [--spiffe-id spiffe://…] [--dns a,b] [--ttl 90d]
            issue a certificate: PREFIX.pem and PREFIX-key.pem (0600)
  inspect FILE [--ca CA.pem] [--crl CRL.pem | --ca-dir DIR]
            subject, SANs, issuer, validity, days to expiry, chain check;
            status: revoked when the CRL lists it
  revoke  --ca-dir DIR CERT.pem|SERIAL
            revoke a certificate and rewrite DIR/crl.pem
`

func runCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, certsUsage)
		return exitCode(2)
	}
	fs := flag.NewFlagSet("keygate certs "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "init-ca":
		return certsInitCA(fs, args[1:], stdout)
	case "issue":
		return certsIssue(fs, args[1:], stdout)
	case "inspect":
		return certsInspect(fs, args[1:], stdout)
	case "revoke":
		return certsRevoke(fs, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, certsUsage)
		return nil
	}
	fmt.Fprintf(stderr, "keygate certs: unknown command %q\n\n%s", args[0], certsUsage)
	return exitCode(2)
}

// parseWithArg parses flags around one positional argument.
func parseWithArg(fs *flag.FlagSet, args []string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", exitCode(2)
	}
	if fs.NArg() == 0 {
		return "", fmt.Errorf("%s: a file argument is required", fs.Name())
	}
	arg := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return "", exitCode(2)
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return arg, nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// revocations is DIR/revoked.json: what the CA has revoked, to rebuild the CRL from.
type revocations struct {
	Number  int64             `json:"crl_number"`
	Revoked map[string]string `json:"revoked"` // serial (decimal) → RFC 3339 time
}

func writeCRL(dir string, ca certs.Bundle, r revocations) error {
	var list []certs.Revoked
	for s, at := range r.Revoked {
		n, ok := new(big.Int).SetString(s, 10)
		t, err := time.Parse(time.RFC3339, at)
		if !ok || err != nil {
			return fmt.Errorf("%s: bad entry %q", filepath.Join(dir, "revoked.json"), s)
		}
		list = append(list, certs.Revoked{Serial: n, At: t})
	}
	crl, err := certs.CRL(ca, r.Number, list, 30*24*time.Hour)
	if err != nil {
		return err
	}
	js, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "revoked.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	// Written aside and renamed, so a reader never sees half a CRL.
	tmp := filepath.Join(dir, ".crl.pem.tmp")
	if err := os.WriteFile(tmp, crl, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "crl.pem"))
}

func loadCA(dir string) (certs.Bundle, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return certs.Bundle{}, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return certs.Bundle{}, err
	}
	return certs.Bundle{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

func certsInitCA(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("dir", "", "directory for the CA's files; required")
	name := fs.String("name", "keygate private CA", "the CA's common name")
	ttl := fs.String("ttl", "3650d", "the CA's lifetime")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if *dir == "" {
		return errors.New("certs init-ca: --dir is required")
	}
	life, err := duration.Parse(*ttl)
	if err != nil {
		return err
	}
	ca, err := certs.NewCA(*name, life)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if err := writeNew(filepath.Join(*dir, "ca-key.pem"), ca.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("certs init-ca: %w (an existing CA is never overwritten)", err)
	}
	if err := writeNew(filepath.Join(*dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	if err := writeCRL(*dir, ca, revocations{Number: 1, Revoked: map[string]string{}}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "CA %q in %s, valid until %s.\n", *name, *dir, ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func certsIssue(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("ca-dir", "", "the CA's directory (from init-ca); required")
	server := fs.Bool("server", false, "a server certificate (TLS listeners)")
	client := fs.Bool("client", false, "a client certificate (mTLS clients)")
	out := fs.String("out", "", "output prefix: PREFIX.pem and PREFIX-key.pem; required")
	cn := fs.String("cn", "", "subject common name")
	spiffe := fs.String("spiffe-id", "", "SPIFFE ID (URI SAN), e.g. spiffe://example.org/ns/prod/sa/billing")
	dns := fs.String("dns", "", "comma-separated DNS names or IP addresses (SANs)")
	ttl := fs.String("ttl", "90d", "lifetime")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if *server == *client || *dir == "" || *out == "" {
		return errors.New("certs issue: --ca-dir, --out and exactly one of --server and --client are required")
	}
	life, err := duration.Parse(*ttl)
	if err != nil {
		return err
	}
	ca, err := loadCA(*dir)
	if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	b, err := certs.Issue(ca, certs.IssueOptions{CommonName: *cn, Server: *server, SPIFFEID: *spiffe, DNSNames: splitScopes(*dns), TTL: life})
	if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := writeNew(*out+"-key.pem", b.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := writeNew(*out+".pem", b.CertPEM, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Issued %s (serial %s), valid until %s.\nfingerprint: %s\n", *out+".pem", b.Cert.SerialNumber,
		b.Cert.NotAfter.UTC().Format(time.RFC3339), certs.IdentityOf(b.Cert).Fingerprint)
	return nil
}

func certsInspect(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	caFile := fs.String("ca", "", "check the chain against this CA bundle")
	caDir := fs.String("ca-dir", "", "the CA's directory (from init-ca): its ca.pem and crl.pem")
	crlFile := fs.String("crl", "", "report the certificate revoked when this CRL (signed by the CA) lists it")
	file, err := parseWithArg(fs, args)
	if err != nil {
		return err
	}
	if *caDir != "" {
		if *caFile == "" {
			*caFile = filepath.Join(*caDir, "ca.pem")
		}
		if *crlFile == "" {
			*crlFile = filepath.Join(*caDir, "crl.pem")
		}
	}
	if *crlFile != "" && *caFile == "" {
		return errors.New("certs inspect: --crl needs --ca (or --ca-dir): the CRL's signature is checked against it")
	}
	certPEM, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var caPEM, crlPEM []byte
	if *caFile != "" {
		if caPEM, err = os.ReadFile(*caFile); err != nil {
			return err
		}
	}
	if *crlFile != "" {
		if crlPEM, err = os.ReadFile(*crlFile); err != nil {
			return err
		}
	}
	report, err := certs.Inspect(certPEM, caPEM, time.Now())
	if err != nil {
		return fmt.Errorf("certs inspect %s: %w", file, err)
	}
	if len(crlPEM) > 0 {
		v, err := certs.NewVerifier(caPEM, crlPEM, nil)
		if err != nil {
			return fmt.Errorf("certs inspect: %s: %w", *crlFile, err)
		}
		status := fmt.Sprintf("%-16s %s", "crl:", "not listed in "+*crlFile)
		if cs := certs.ParseCertificates(certPEM); len(cs) > 0 {
			if _, err := v.VerifyCert(cs[0]); errors.Is(err, certs.ErrRevoked) {
				status = fmt.Sprintf("%-16s %s", "crl:", "listed in "+*crlFile)
				report = replaceRow(report, "status:", fmt.Sprintf("%-16s %s", "status:", "revoked"))
			}
		}
		report += status + "\n"
	}
	fmt.Fprint(stdout, report)
	return nil
}

// replaceRow replaces the report line that starts with prefix.
func replaceRow(report, prefix, row string) string {
	lines := strings.SplitAfter(report, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = row + "\n"
		}
	}
	return strings.Join(lines, "")
}

func certsRevoke(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("ca-dir", "", "the CA's directory (from init-ca); required")
	what, err := parseWithArg(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("certs revoke: --ca-dir is required")
	}
	serial := what
	// A file names its certificate (whatever its extension); anything else is a serial.
	if raw, err := os.ReadFile(what); err == nil {
		found := certs.ParseCertificates(raw)
		if len(found) == 0 {
			return fmt.Errorf("certs revoke: no certificate in %s", what)
		}
		serial = found[0].SerialNumber.String()
	}
	if _, ok := new(big.Int).SetString(serial, 10); !ok {
		return fmt.Errorf("certs revoke: %q is neither a certificate file nor a decimal serial", what)
	}
	ca, err := loadCA(*dir)
	if err != nil {
		return fmt.Errorf("certs revoke: %w", err)
	}
	var r revocations
	raw, err := os.ReadFile(filepath.Join(*dir, "revoked.json"))
	if err == nil {
		err = json.Unmarshal(raw, &r)
	}
	if err != nil {
		return fmt.Errorf("certs revoke: %w", err)
	}
	if r.Revoked == nil {
		r.Revoked = map[string]string{}
	}
	if _, done := r.Revoked[serial]; !done {
		r.Revoked[serial] = time.Now().UTC().Format(time.RFC3339)
	}
	r.Number++
	if err := writeCRL(*dir, ca, r); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Revoked serial %s; %s lists %d certificate(s).\n", serial, filepath.Join(*dir, "crl.pem"), len(r.Revoked))
	return nil
}

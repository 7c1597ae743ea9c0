package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultAttemptTimeout bounds one attempt on one Vault address when the request's
// context has no deadline (the keys commands, rotate-due, renewals).
const DefaultAttemptTimeout = 5 * time.Second

// Failover is an http.RoundTripper for a Vault client that knows several Vault
// addresses, such as the nodes of a Raft cluster. In Vault OSS a standby forwards every
// request to the active node, so any unsealed node will do.
//
// A request goes to the address that last answered (or, after a failure, the one after
// the address that failed). When that address does not answer
// (refused, reset, or no answer within its share of the budget) or answers 502, 503
// (sealed, or no active node) or 504, the request goes to the next address, and so on
// once round the list. The budget is the request's context deadline: each attempt gets
// the time left divided by the addresses left to try (at most the attempt timeout, 5 s
// by default), so a hung node costs a share of the deadline, never more, and nothing is
// tried past the deadline. The last address tried gets all the time left.
//
// A write (any method but GET and HEAD) that may have reached a node is not sent again:
// it goes to the next address only when the connection was refused or the node answered
// 503 (a sealed node, or a standby with no active node, applies nothing).
type Failover struct {
	next    http.RoundTripper
	addrs   []*url.URL
	attempt time.Duration
	current atomic.Int64
}

// NewFailover returns a Failover over addresses (http or https URLs, as VAULT_ADDR)
// that sends through next. attempt is the per-address budget when a request has no
// deadline; 0 means DefaultAttemptTimeout.
func NewFailover(next http.RoundTripper, addresses []string, attempt time.Duration) (*Failover, error) {
	if len(addresses) == 0 {
		return nil, errors.New("vault failover: no address")
	}
	if attempt <= 0 {
		attempt = DefaultAttemptTimeout
	}
	f := &Failover{next: next, attempt: attempt}
	seen := map[string]bool{}
	for _, a := range addresses {
		u, err := url.Parse(a)
		if err == nil && u.User != nil {
			return nil, errors.New("vault failover: an address must not carry credentials")
		}
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("vault failover: %q is not an address such as https://vault-1:8200", a)
		}
		key := u.Scheme + "://" + strings.ToLower(u.Host)
		if seen[key] {
			return nil, fmt.Errorf("vault failover: address %q appears twice", a)
		}
		seen[key] = true
		f.addrs = append(f.addrs, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	return f, nil
}

// Current returns the address requests go to first: the last one that answered.
func (f *Failover) Current() string { return f.addrs[f.current.Load()].String() }

// RoundTrip implements http.RoundTripper.
func (f *Failover) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	first := int(f.current.Load())
	n := len(f.addrs)
	idempotent := req.Method == http.MethodGet || req.Method == http.MethodHead
	var lastErr error
	for i := range n {
		if err := ctx.Err(); err != nil {
			return nil, errors.Join(err, lastErr)
		}
		idx := (first + i) % n
		r, cancel, err := f.attemptRequest(req, f.addrs[idx], i, n-i)
		if err != nil {
			return nil, err
		}
		resp, err := f.next.RoundTrip(r)
		if err != nil {
			cancel()
			f.skip(idx)
			lastErr = fmt.Errorf("%s: %w", f.addrs[idx].Host, err)
			if i < n-1 && ctx.Err() == nil && (idempotent || refused(err)) {
				continue
			}
			return nil, lastErr
		}
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			if i < n-1 && (idempotent || resp.StatusCode == http.StatusServiceUnavailable) {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				cancel()
				f.skip(idx)
				lastErr = fmt.Errorf("%s: %s", f.addrs[idx].Host, resp.Status)
				continue
			}
		default:
			f.current.Store(int64(idx))
		}
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
		return resp, nil
	}
	return nil, lastErr
}

// skip moves the first address past idx after idx failed, unless another request has
// moved it already, so that the next request (or a retry of a write that was not sent
// again) does not start with the address that just failed.
func (f *Failover) skip(idx int) {
	f.current.CompareAndSwap(int64(idx), int64((idx+1)%len(f.addrs)))
}

// attemptRequest returns req aimed at addr, with its share of the deadline: the time
// left divided by the addresses left to try, at most the attempt timeout; the last
// address gets all the time left.
func (f *Failover) attemptRequest(req *http.Request, addr *url.URL, attempt, left int) (*http.Request, context.CancelFunc, error) {
	ctx := req.Context()
	actx, cancel := ctx, context.CancelFunc(func() {})
	if left > 1 {
		budget := f.attempt
		if dl, ok := ctx.Deadline(); ok {
			budget = min(budget, time.Until(dl)/time.Duration(left))
		}
		actx, cancel = context.WithTimeout(ctx, budget)
	}
	r := req.Clone(actx)
	r.URL.Scheme, r.URL.Host, r.Host = addr.Scheme, addr.Host, ""
	if attempt > 0 && req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			cancel()
			return nil, nil, errors.New("vault failover: request body cannot be sent again")
		}
		body, err := req.GetBody()
		if err != nil {
			cancel()
			return nil, nil, err
		}
		r.Body = body
	}
	return r, cancel, nil
}

// refused reports whether err means no connection was made, so nothing was sent.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// cancelBody ends an attempt's context when the response body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

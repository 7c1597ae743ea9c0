package vaultcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/internal/vaulttest"
)

// Size is the number of nodes in a cluster.
const Size = 3

// Cluster is a running Raft cluster of Size nodes. KV v2 is mounted at "secret/".
type Cluster struct {
	Nodes []*Node
	Token string // root token
	Bin   string // the vault binary

	unsealKey string
	dir       string
}

// Node is one Vault server of the cluster.
type Node struct {
	ID   string // node1, node2, node3
	Addr string // API address, e.g. http://127.0.0.1:41234

	bin, config, logPath string
	token                string // root token, for the CLI once known
	cmd                  *exec.Cmd
	done                 chan struct{}
}

// Start starts a cluster and stops it when the test ends. Setting it up takes a few
// seconds (Raft joins and unseals).
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := New()
	if err != nil {
		t.Fatalf("vaultcluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// New is Start for callers that stop the cluster themselves.
func New() (*Cluster, error) {
	bin, err := vaulttest.Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vaultcluster-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{Bin: bin, dir: dir}
	if err := c.setUp(); err != nil {
		logs := c.Logs()
		c.Stop()
		return nil, fmt.Errorf("%w\n%s", err, logs)
	}
	return c, nil
}

func (c *Cluster) setUp() error {
	for i := range Size {
		n, err := c.newNode(i + 1)
		if err != nil {
			return err
		}
		c.Nodes = append(c.Nodes, n)
		if err := n.start(); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitHealth(30*time.Second, http.StatusNotImplemented); err != nil { // up, not initialised
			return err
		}
	}
	out, err := c.Nodes[0].vault("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	if err != nil {
		return err
	}
	var init struct {
		Keys      []string `json:"unseal_keys_b64"`
		RootToken string   `json:"root_token"`
	}
	if err := json.Unmarshal(out, &init); err != nil || len(init.Keys) != 1 || init.RootToken == "" {
		return fmt.Errorf("operator init: unexpected answer (%v)", err)
	}
	c.unsealKey, c.Token = init.Keys[0], init.RootToken
	for _, n := range c.Nodes {
		n.token = c.Token
	}
	if err := c.unseal(c.Nodes[0], http.StatusOK); err != nil {
		return err
	}
	// Autopilot makes a joined node a voter once it has been healthy this long (10 s
	// by default); until then a lost leader could not be replaced.
	if _, err := c.Nodes[0].vault("operator", "raft", "autopilot", "set-config", "-server-stabilization-time=1s"); err != nil {
		return err
	}
	for _, n := range c.Nodes[1:] {
		if _, err := n.vault("operator", "raft", "join", c.Nodes[0].Addr); err != nil {
			return err
		}
		if err := c.unseal(n, http.StatusTooManyRequests); err != nil {
			return err
		}
	}
	if _, err := c.Nodes[0].vault("secrets", "enable", "-path=secret", "-version=2", "kv"); err != nil {
		return err
	}
	if err := c.waitVoters(60 * time.Second); err != nil {
		return err
	}
	// KV v2 upgrades its storage in the background after the mount; writes fail until
	// it is done.
	cl, err := c.NewClient(c.Nodes[0].Addr, nil)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cl.KVv2("secret").Put(context.Background(), "vaultcluster/ready", map[string]any{"ok": true})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kv v2 not writable: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) newNode(i int) (*Node, error) {
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	clusterPort, err := freePort()
	if err != nil {
		return nil, err
	}
	id := fmt.Sprintf("node%d", i)
	data := filepath.Join(c.dir, id)
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	n := &Node{ID: id, Addr: fmt.Sprintf("http://127.0.0.1:%d", apiPort), bin: c.Bin,
		config: filepath.Join(c.dir, id+".hcl"), logPath: filepath.Join(c.dir, id+".log")}
	hcl := fmt.Sprintf(`storage "raft" {
  path                   = %q
  node_id                = %q
  performance_multiplier = 1
}
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "https://127.0.0.1:%d"
disable_mlock = true
`, data, id, apiPort, clusterPort, apiPort, clusterPort)
	return n, os.WriteFile(n.config, []byte(hcl), 0o600)
}

func (n *Node) start() error {
	log, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	n.cmd = exec.Command(n.bin, "server", "-config", n.config, "-log-level", "warn")
	n.cmd.Env = append(os.Environ(), "VAULT_ADDR=", "VAULT_TOKEN=", "HOME="+os.TempDir())
	n.cmd.Stdout, n.cmd.Stderr = log, log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.ID, err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(n.cmd, n.done)
	return nil
}

// vault runs the vault CLI against the node.
func (n *Node) vault(args ...string) ([]byte, error) {
	cmd := exec.Command(n.bin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+n.Addr, "VAULT_TOKEN="+n.token, "HOME="+os.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("vault %s on %s: %w: %s", args[0]+" "+args[1], n.ID, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// unseal unseals n and waits until sys/health answers want (200 active, 429 standby).
func (c *Cluster) unseal(n *Node, want ...int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		// A node that has just joined may refuse the key until it has the keyring.
		_, err := n.vault("operator", "unseal", c.unsealKey)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return n.waitHealth(30*time.Second, want...)
}

// waitVoters waits until the Raft configuration lists every node as a voter.
func (c *Cluster) waitVoters(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last []byte
	for time.Now().Before(deadline) {
		out, err := c.Nodes[0].vault("operator", "raft", "list-peers", "-format=json")
		if err == nil {
			var peers struct {
				Data struct {
					Config struct {
						Servers []struct {
							NodeID string `json:"node_id"`
							Voter  bool   `json:"voter"`
						} `json:"servers"`
					} `json:"config"`
				} `json:"data"`
			}
			voters := 0
			if json.Unmarshal(out, &peers) == nil {
				for _, s := range peers.Data.Config.Servers {
					if s.Voter {
						voters++
					}
				}
			}
			if voters == Size {
				return nil
			}
			last = out
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not every node is a voter after %s: %s", limit, last)
}

// Health returns the node's sys/health status: 200 active, 429 standby, 503 sealed,
// 501 not initialised; 0 when it does not answer within a second.
func (n *Node) Health() int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Addr+"/v1/sys/health", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (n *Node) waitHealth(limit time.Duration, want ...int) error {
	deadline := time.Now().Add(limit)
	last := 0
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			return fmt.Errorf("%s exited", n.ID)
		default:
		}
		if last = n.Health(); contains(want, last) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: sys/health %d after %s, want %v", n.ID, last, limit, want)
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Addresses returns the API addresses of every node, node 1 first.
func (c *Cluster) Addresses() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

// Active returns the index of the active node as sys/leader reports it, asking each
// node that answers; -1 when none knows of an active node.
func (c *Cluster) Active() int {
	for _, n := range c.Nodes {
		addr, ok := n.leader()
		if !ok {
			continue
		}
		for i, m := range c.Nodes {
			if m.Addr == addr {
				return i
			}
		}
	}
	return -1
}

// leader asks n for the active node's address (sys/leader).
func (n *Node) leader() (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.Addr+"/v1/sys/leader", nil)
	if err != nil {
		return "", false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var l struct {
		HAEnabled     bool   `json:"ha_enabled"`
		IsSelf        bool   `json:"is_self"`
		LeaderAddress string `json:"leader_address"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&l) != nil || l.LeaderAddress == "" {
		return "", false
	}
	return l.LeaderAddress, true
}

// WaitActive waits until a node other than those in not is active and answers as such
// on sys/health, and returns its index.
func (c *Cluster) WaitActive(limit time.Duration, not ...int) (int, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if i := c.Active(); i >= 0 && !contains(not, i) && c.Nodes[i].Health() == http.StatusOK {
			return i, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1, fmt.Errorf("no active node after %s", limit)
}

// Kill ends node i at once (SIGKILL), as a crash would.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// Pause freezes node i (SIGSTOP): the kernel accepts connections that are never
// answered, as with a hung server. It returns once every thread has stopped.
func (c *Cluster) Pause(i int) error {
	n := c.Nodes[i]
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !vaulttest.Stopped(n.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			return errors.New("vault did not stop after SIGSTOP")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Resume lets a paused node run again (SIGCONT).
func (c *Cluster) Resume(i int) error { return c.Nodes[i].cmd.Process.Signal(syscall.SIGCONT) }

// Restart starts node i again after Kill, unseals it and waits until it serves as a
// standby or as the active node. It keeps its Raft data and rejoins the cluster.
func (c *Cluster) Restart(i int) error {
	n := c.Nodes[i]
	select {
	case <-n.done:
	default:
		return fmt.Errorf("%s is running", n.ID)
	}
	if err := n.start(); err != nil {
		return err
	}
	if err := n.waitHealth(30*time.Second, http.StatusServiceUnavailable); err != nil { // up, sealed
		return err
	}
	return c.unseal(n, http.StatusOK, http.StatusTooManyRequests)
}

// Stop stops every node and removes the cluster's files.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.cmd == nil || n.cmd.Process == nil {
			continue
		}
		select {
		case <-n.done:
			continue
		default:
		}
		_ = n.cmd.Process.Signal(syscall.SIGCONT)
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	}
	os.RemoveAll(c.dir)
}

// Logs returns what every node has written so far.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, n := range c.Nodes {
		out, _ := os.ReadFile(n.logPath)
		fmt.Fprintf(&b, "--- %s\n%s\n", n.ID, bytes.TrimSpace(out))
	}
	return b.String()
}

// NewClient returns a root-token client for addr. transport, when non-nil, wraps the
// client's HTTP transport.
func (c *Cluster) NewClient(addr string, transport func(http.RoundTripper) http.RoundTripper) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	if transport != nil {
		cfg.HttpClient.Transport = transport(cfg.HttpClient.Transport)
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	cl.SetToken(c.Token)
	return cl, nil
}

// EnableAudit turns on a file audit device writing to path: one JSON line per request
// and per response, on every node (audit devices are replicated).
func (c *Cluster) EnableAudit(path string) error {
	i := c.Active()
	if i < 0 {
		return errors.New("no active node")
	}
	cmd := exec.Command(c.Bin, "audit", "enable", "file", "file_path="+path)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+c.Nodes[i].Addr, "VAULT_TOKEN="+c.Token, "HOME="+os.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("audit enable: %w: %s", err, out)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

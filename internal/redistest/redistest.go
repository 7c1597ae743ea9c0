// Package redistest starts a real redis-server (Debian's redis-server package) on a
// free loopback port for tests, with persistence off.
package redistest

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/safebuf"
)

// Server is a running redis-server.
type Server struct {
	Addr string // host:port on 127.0.0.1
	Port int
	cmd  *exec.Cmd
	out  safebuf.Buffer
	done chan struct{}
}

// Start starts redis-server and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, "redis-server")
}

// start runs bin (redis-server or redis-sentinel) on a free loopback port with extra
// arguments (a config file must come first, as redis-server wants it).
func start(t testing.TB, bin string, extra ...string) *Server {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s is not installed (apt-get install redis-server redis-sentinel; .ci/run does it)", bin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &Server{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, done: make(chan struct{})}
	var args []string
	if len(extra) > 0 && strings.HasSuffix(extra[0], ".conf") {
		args, extra = append(args, extra[0]), extra[1:]
	}
	args = append(args, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", t.TempDir())
	if bin != "redis-sentinel" {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	args = append(args, extra...)
	s.cmd = exec.Command(path, args...)
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for !s.ping() {
		select {
		case <-s.done:
			t.Fatalf("%s exited: %s", bin, s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering on %s", bin, s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *Server) ping() bool {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 16)
	n, _ := c.Read(buf)
	return strings.HasPrefix(string(buf[:n]), "+PONG")
}

// Stop stops the server; Stop on a stopped server does nothing.
func (s *Server) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// Kill ends the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Output returns what the server has written so far.
func (s *Server) Output() string { return s.out.String() }

//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sslci/caddy-sslci/internal/testport"
)

// The README's "Try it with the simulator" runs as written: its three
// commands, each with `sh -c` in the checkout, the simulator and Caddy as
// real processes (`go run`), stopped with Ctrl-C's signal at the end. Only
// the ports change: free ones in place of 8555, 8080 and 8443, in the
// commands and in a copy of the Caddyfile. The page must come with a
// certificate that verifies against the root the simulator wrote.
func TestTryItWithTheSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs Caddy and the simulator with go run")
	}
	blocks := sectionBlocks(t, "Try it with the simulator", "sh")
	if len(blocks) != 3 {
		t.Fatalf("the section has %d sh blocks, want 3: the simulator, Caddy, curl", len(blocks))
	}
	var simCmd, caddyCmd, curlCmd string
	for i, dst := range []*string{&simCmd, &caddyCmd, &curlCmd} {
		*dst = oneCommand(t, blocks[i])
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	ports := map[string]string{}
	for _, p := range []string{"8555", "8080", "8443"} {
		ports[p] = strconv.Itoa(testport.Get(t))
	}
	movePorts := func(s string, want ...string) string {
		for _, p := range want {
			if !strings.Contains(s, p) {
				t.Fatalf("%q does not mention port %s", s, p)
			}
			s = strings.ReplaceAll(s, p, ports[p])
		}
		return s
	}
	const config = "testdata/readme/simulator.caddyfile"
	caddyfile, err := os.ReadFile(filepath.Join(root, config))
	if err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(work, "simulator.caddyfile")
	if err := os.WriteFile(moved, []byte(movePorts(string(caddyfile), "8555", "8080", "8443")), 0o644); err != nil {
		t.Fatal(err)
	}
	simCmd = movePorts(simCmd, "8555", "8080")
	if !strings.Contains(caddyCmd, " "+config) {
		t.Fatalf("%q does not run %s", caddyCmd, config)
	}
	caddyCmd = strings.Replace(caddyCmd, " "+config, " "+moved, 1)
	curlCmd = movePorts(curlCmd, "8443")

	// The simulator writes its root into the checkout, as it would for you:
	// keep whatever file is there and put it back.
	rootPEM := filepath.Join(root, "sslci-sim-root.pem")
	if old, err := os.ReadFile(rootPEM); err == nil {
		t.Cleanup(func() { os.WriteFile(rootPEM, old, 0o644) })
	} else {
		t.Cleanup(func() { os.Remove(rootPEM) })
	}
	os.Remove(rootPEM)

	sim := startShell(t, root, simCmd)
	waitFor(t, 5*time.Minute, "the simulator to start", sim, func() bool {
		_, err := os.Stat(rootPEM)
		return err == nil && strings.Contains(sim.out.String(), "API URL:")
	})
	caddy := startShell(t, root, caddyCmd)

	cacert, resolve, target := parseCurl(t, curlCmd)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(root, cacert))
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("reading the root named by --cacert: %v", err)
	}
	const want = "Hello from demo.sslci.test, certificate by the SSLCI simulator"
	var body string
	waitFor(t, 8*time.Minute, "Caddy to serve a verified certificate", caddy, func() bool {
		body, err = getVia(target, resolve, pool)
		return err == nil
	})
	if body != want {
		t.Errorf("GET %s = %q, want %q", target, body, want)
	}
	if !strings.Contains(caddy.out.String(), "certificate obtained successfully") {
		t.Errorf("Caddy did not log what the README says to wait for:\n%s", caddy.out.String())
	}
	if _, err := exec.LookPath("curl"); err == nil {
		curl := exec.Command("sh", "-c", curlCmd)
		curl.Dir = root
		var stderr bytes.Buffer
		curl.Stderr = &stderr
		out, err := curl.Output()
		if err != nil || string(out) != want {
			t.Errorf("%s: %v\n%s%s", curlCmd, err, out, stderr.String())
		}
	} else {
		t.Log("curl is not installed: the curl line was checked with Go's TLS client only")
	}

	caddy.stop(t)
	sim.stop(t)
	if !strings.Contains(sim.out.String(), "shutting down") {
		t.Errorf("the simulator did not shut down on SIGINT:\n%s", sim.out.String())
	}
}

// oneCommand is the only command line of a README block.
func oneCommand(t *testing.T, b block) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(b.body), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("README line %d: want one command, got %q", b.line, lines)
	}
	return lines[0]
}

// parseCurl reads --cacert, --resolve name:port:addr and the URL of the
// README's curl line.
func parseCurl(t *testing.T, line string) (cacert, resolve string, target *url.URL) {
	t.Helper()
	f := strings.Fields(line)
	for i := 1; i+1 < len(f); i++ {
		switch f[i] {
		case "--cacert":
			cacert = f[i+1]
		case "--resolve":
			resolve = f[i+1]
		}
	}
	target, err := url.Parse(f[len(f)-1])
	if f[0] != "curl" || cacert == "" || resolve == "" || err != nil {
		t.Fatalf("%q is not curl --cacert FILE --resolve NAME:PORT:ADDR URL", line)
	}
	return cacert, resolve, target
}

// getVia does what the curl line asks: GET target, connecting to the
// address --resolve gives, verifying the server against pool.
func getVia(target *url.URL, resolve string, pool *x509.CertPool) (string, error) {
	parts := strings.SplitN(resolve, ":", 3)
	if len(parts) != 3 || net.JoinHostPort(parts[0], parts[1]) != target.Host {
		return "", errors.New("--resolve does not match the URL's host and port")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(parts[2], parts[1]))
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(target.String())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// process is a command run with sh -c in its own process group, so that
// the signal reaches go run and the program it runs.
type process struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	once sync.Once
}

func startShell(t *testing.T, dir, line string) *process {
	t.Helper()
	p := &process{cmd: exec.Command("sh", "-c", line), done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Caddy's storage and autosave go to the test's folder; GOENV keeps
	// the go command's settings, which XDG_CONFIG_HOME would move.
	goenv, err := exec.Command("go", "env", "GOENV").Output()
	if err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	p.cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+data, "XDG_CONFIG_HOME="+data, "GOENV="+strings.TrimSpace(string(goenv)))
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGINT to the process group, and SIGKILL if it is still
// there 30 seconds later.
func (p *process) stop(t *testing.T) {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
			t.Errorf("%s did not stop on SIGINT:\n%s", p.cmd.Args[2], p.out.String())
		}
	})
}

// waitFor polls ready until it holds, failing if p exits or time runs out.
func waitFor(t *testing.T, limit time.Duration, what string, p *process, ready func() bool) {
	t.Helper()
	deadline := time.After(limit)
	for !ready() {
		select {
		case <-p.done:
			t.Fatalf("waiting for %s: %s exited:\n%s", what, p.cmd.Args[2], p.out.String())
		case <-deadline:
			t.Fatalf("waiting for %s: gave up after %s:\n%s", what, limit, p.out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sslci/caddy-sslci/internal/testport"
)

// caddyProc is a Caddy process, configured through its admin API on
// loopback.
type caddyProc struct {
	cmd     *exec.Cmd
	admin   string // "127.0.0.1:port"
	logPath string
	exited  chan struct{}
}

// startCaddy runs bin with only an admin endpoint, its home, data and
// config folders in dir, its output in dir/caddy-<n>.log, and returns once
// the admin API answers.
func startCaddy(ctx context.Context, bin, dir string, env []string) (*caddyProc, error) {
	port, err := testport.Free()
	if err != nil {
		return nil, err
	}
	p := &caddyProc{admin: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), exited: make(chan struct{})}
	initial, err := json.Marshal(map[string]any{"admin": p.adminConfig()})
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, fmt.Sprintf("caddy-initial-%d.json", port))
	if err := os.WriteFile(cfgPath, initial, 0o644); err != nil {
		return nil, err
	}
	p.logPath = filepath.Join(dir, fmt.Sprintf("caddy-%d.log", port))
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	p.cmd = exec.Command(bin, "run", "--config", cfgPath)
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	dieWithParent(p.cmd)
	if err := startOn(p.cmd, pinned.caddy, pinned.bench); err != nil {
		return nil, fmt.Errorf("starting Caddy: %w", err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/config/")
		if err == nil {
			resp.Body.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("Caddy exited at start: %s", p.logTail())
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("Caddy's admin API did not answer in 30s: %s", p.logTail())
		}
	}
}

// adminConfig keeps the admin endpoint where it is across loads, and the
// config out of the home folder.
func (p *caddyProc) adminConfig() map[string]any {
	return map[string]any{"listen": p.admin, "config": map[string]any{"persist": false}}
}

// load replaces Caddy's config; Caddy answers once the new config runs.
func (p *caddyProc) load(ctx context.Context, cfg map[string]any) error {
	cfg["admin"] = p.adminConfig()
	body, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.admin+"/load", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("loading Caddy's config: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("loading Caddy's config: %s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// peakRSS is the process's peak resident memory (VmHWM) in KiB, or 0
// where /proc is not there.
func (p *caddyProc) peakRSS() int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// cpuSeconds is the user and system CPU time the process used so far, or 0
// where /proc is not there.
func (p *caddyProc) cpuSeconds() float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 12th and 13th, in clock ticks of 1/100 s on Linux.
	_, rest, _ := bytes.Cut(data, []byte(") "))
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return float64(utime+stime) / 100
}

// stop asks Caddy to stop, and kills it if it has not within 10 seconds.
func (p *caddyProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	client := http.Client{Timeout: 5 * time.Second}
	if resp, err := client.Post("http://"+p.admin+"/stop", "", nil); err == nil {
		resp.Body.Close()
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// errorsLogged counts the lines Caddy logged at level error, failed
// attempts to obtain a certificate among them (Caddy retries those).
func (p *caddyProc) errorsLogged() int {
	data, _ := os.ReadFile(p.logPath)
	return bytes.Count(data, []byte(`"level":"error"`))
}

// logTail is the end of Caddy's output, for errors.
func (p *caddyProc) logTail() string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return fmt.Sprintf("log %s ends with:\n%s", p.logPath, data)
}

// withLog adds where Caddy's log is to err.
func (p *caddyProc) withLog(err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w (%s)", err, p.logTail())
}

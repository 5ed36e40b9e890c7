package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// profiler captures, from Caddy's admin endpoint, a CPU profile over one
// issuance run and the allocations of Caddy's process once it is done.
type profiler struct {
	dir     string
	seconds int // the CPU profile's length, a bit over the run's
}

// get fetches path from Caddy's admin endpoint.
func (p *caddyProc) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, err
}

// startCPUProfile starts a CPU profile of Caddy for seconds and returns
// once it runs, with a function that waits for it. The profile runs from
// its handler's start, so that is awaited: its goroutine asleep in it. (A
// config load replaces the admin server, but lets its requests finish.)
func (p *caddyProc) startCPUProfile(ctx context.Context, seconds int) (wait func() ([]byte, error), err error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := p.get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds))
		done <- result{data, err}
	}()
	wait = func() ([]byte, error) {
		r := <-done
		if r.err != nil {
			return nil, fmt.Errorf("Caddy's CPU profile: %w", r.err)
		}
		return r.data, nil
	}
	for {
		stacks, err := p.get(ctx, "/debug/pprof/goroutine?debug=1")
		if err != nil {
			return nil, err
		}
		if bytes.Contains(stacks, []byte("net/http/pprof.sleep")) {
			return wait, nil
		}
		select {
		case r := <-done:
			done <- r
			_, err := wait()
			return nil, fmt.Errorf("Caddy's CPU profile ended at once: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// startBenchProfile starts a CPU profile of this process: the CA's work
// (the simulator's or Pebble's), which a real CA does on its own machines,
// and the polling of storage. stop ends it and returns it.
func startBenchProfile() (stop func() []byte, err error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil, fmt.Errorf("the benchmark's CPU profile: %w", err)
	}
	return func() []byte { pprof.StopCPUProfile(); return buf.Bytes() }, nil
}

// save writes Caddy's allocations so far, then its CPU profile once
// cpuProfile has it, as dir/<name>-allocs.pprof and -cpu.pprof, and the
// benchmark's own (if any) as -benchmark-cpu.pprof, with the top 25 of
// each beside them (.txt).
func (pr *profiler) save(ctx context.Context, p *caddyProc, name string, cpuProfile func() ([]byte, error), benchCPU []byte) error {
	allocs, err := p.get(ctx, "/debug/pprof/allocs")
	if err != nil {
		return fmt.Errorf("Caddy's allocations: %w", err)
	}
	cpu, err := cpuProfile()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(pr.dir, 0o755); err != nil {
		return err
	}
	for _, prof := range []struct {
		kind string
		data []byte
	}{{"cpu", cpu}, {"allocs", allocs}, {"benchmark-cpu", benchCPU}} {
		if prof.data == nil {
			continue
		}
		file := filepath.Join(pr.dir, name+"-"+prof.kind+".pprof")
		if err := os.WriteFile(file, prof.data, 0o644); err != nil {
			return err
		}
		// By own time, then with callees: syscalls lead the first.
		var top []byte
		for _, order := range [][]string{{"-top"}, {"-top", "-cum"}} {
			args := append(append([]string{"tool", "pprof"}, order...), "-nodecount=25", file)
			out, err := exec.CommandContext(ctx, "go", args...).Output()
			if err != nil {
				return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
			}
			top = append(append(top, fmt.Sprintf("$ go %s\n", strings.Join(args, " "))...), out...)
		}
		txt := filepath.Join(pr.dir, name+"-"+prof.kind+".txt")
		if err := os.WriteFile(txt, top, 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "wrote", file, "and its top 25 (-top, -top -cum) in", txt)
	}
	return nil
}

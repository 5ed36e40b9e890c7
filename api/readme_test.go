package api_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The README's example of the client ("## The API client") compiles
// against this package as it is: it is built as the body of a function, in
// a module of its own that uses this checkout (a go.work), as a program
// using the package would be. Each call in it is run against the
// simulator by the tests of this package.
func TestREADMEClientExampleBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## The API client\n")
	_, block, ok2 := strings.Cut(section, "\n```go\n")
	block, _, ok3 := strings.Cut(block, "\n```\n")
	if !ok || !ok2 || !ok3 {
		t.Fatal("README: no go block in the section \"The API client\"")
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	var goLine string // the checkout's "go" directive, which the workspace must meet
	for line := range strings.SplitSeq(string(gomod), "\n") {
		if strings.HasPrefix(line, "go ") {
			goLine = line
		}
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":  "module readmeexample\n\n" + goLine + "\n",
		"go.work": goLine + "\n\nuse (\n\t.\n\t" + repo + "\n)\n",
		"main.go": `package main

import (
	"context"
	"os"

	"github.com/sslci/caddy-sslci/api"
)

func main() {
	ctx := context.Background()
` + block + `
	_, _, _ = cert, list, err
}
`,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", os.DevNull, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK="+filepath.Join(dir, "go.work"), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the README's example does not build: %v\n%s\n%s", err, out, files["main.go"])
	}
}

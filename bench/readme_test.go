package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The READMEs' benchmark command lines (`go run .` and its flags, in fenced
// code blocks and inline code spans) parse with the benchmark's own flags,
// and the README's Benchmark section names every flag there is.

// readmes are the READMEs that show benchmark command lines: the project's,
// and those of the results kept in results/.
func readmes(t *testing.T) []string {
	t.Helper()
	files := []string{filepath.Join("..", "README.md")}
	err := filepath.WalkDir("results", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "README.md" {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// shownAs is how a test message names a README: from the repository's root.
func shownAs(file string) string {
	if rel, ok := strings.CutPrefix(file, ".."+string(filepath.Separator)); ok {
		return filepath.ToSlash(rel)
	}
	return "bench/" + filepath.ToSlash(file)
}

func TestREADMECommands(t *testing.T) {
	total := 0
	for _, file := range readmes(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		cmds := benchCommands(string(data))
		if file == filepath.Join("..", "README.md") && len(cmds) == 0 {
			t.Errorf("%s: no `go run .` command line found: the README's benchmark commands went unchecked", shownAs(file))
		}
		for _, c := range cmds {
			if err := checkArgs(c.args); err != nil {
				t.Errorf("%s:%d: `%s`: %v", shownAs(file), c.line, c.text, err)
				continue
			}
			t.Logf("%s:%d: %s", shownAs(file), c.line, c.text)
		}
		t.Logf("%s: %d command lines", shownAs(file), len(cmds))
		total += len(cmds)
	}
	t.Logf("%d command lines in all", total)
}

// TestREADMEFlags checks the README's list of the benchmark's flags (in its
// Benchmark section): every flag the benchmark defines is there, and every
// flag there is one the benchmark defines.
func TestREADMEFlags(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	from, to, ok := section(doc, "Benchmark")
	if !ok {
		t.Fatal("README.md: no `## Benchmark` section")
	}
	defined, _ := newFlags()
	mentioned := map[string]bool{}
	for _, s := range codeSpans(doc[:to]) {
		if s.at < from {
			continue
		}
		m := flagSpan.FindStringSubmatch(s.text)
		if m == nil {
			continue
		}
		mentioned[m[1]] = true
		if defined.Lookup(m[1]) == nil {
			t.Errorf("README.md:%d: `%s`: the benchmark has no flag -%s", lineAt(doc, s.at), s.text, m[1])
		}
	}
	for _, c := range benchCommands(doc[:to]) {
		if c.at < from {
			continue
		}
		for _, a := range c.args {
			if name, ok := flagName(a); ok {
				mentioned[name] = true
			}
		}
	}
	defined.VisitAll(func(f *flag.Flag) {
		if !mentioned[f.Name] {
			t.Errorf("README.md, Benchmark section (line %d): flag -%s (%s) is not mentioned", lineAt(doc, from), f.Name, f.Usage)
		}
	})
}

// flagSpan is a code span that names a flag, with or without a value:
// `-restart N`, `-pin`; not `-allocs.pprof` or `-1`.
var flagSpan = regexp.MustCompile(`^--?([a-z][a-z0-9-]*)(?:[ =]|$)`)

// flagName is the flag an argument sets, if it is one.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
		return "", false
	}
	name := strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, _, _ = strings.Cut(name, "=")
	return name, true
}

// checkArgs parses a command line's arguments as run does: with the
// benchmark's flags, then -sizes and -issuers.
func checkArgs(args []string) error {
	set, o := newFlags()
	set.SetOutput(io.Discard)
	if err := set.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // -h: the usage, a fine thing to show
			return nil
		}
		return err
	}
	if set.NArg() > 0 {
		return fmt.Errorf("%q: the benchmark takes flags only, and ignores what follows the first argument that is not one", set.Args())
	}
	if _, err := parseSizes(o.sizes); err != nil {
		return err
	}
	if _, err := parseIssuers(o.issuers); err != nil {
		return err
	}
	return nil
}

// command is one benchmark command line a document shows.
type command struct {
	at   int    // the offset of its `go` in the document
	line int    // its line, from 1
	text string // from `go` on, as shown (continuation lines joined)
	args []string
}

// benchCommands are the `go run .` command lines of a Markdown document,
// in its fenced code blocks and its inline code spans.
func benchCommands(doc string) []command {
	var out []command
	for _, b := range fencedBlocks(doc) {
		// A backslash-newline continues a shell line: two spaces keep
		// every offset.
		text := strings.ReplaceAll(doc[b.from:b.to], "\\\n", "  ")
		out = append(out, commandsIn(doc, text, b.from)...)
	}
	for _, s := range codeSpans(doc) {
		out = append(out, commandsIn(doc, s.raw, s.at)...)
	}
	slices.SortFunc(out, func(a, b command) int { return a.at - b.at })
	return out
}

// commandsIn finds `go run .` in text, shell code at offset base of doc,
// and takes the words after it up to the end of the shell command.
func commandsIn(doc, text string, base int) []command {
	var out []command
	words := shellWords(text)
	for i := 0; i+2 < len(words); i++ {
		if words[i].op || words[i].s != "go" || words[i+1].op || words[i+1].s != "run" || words[i+2].op || words[i+2].s != "." {
			continue
		}
		c := command{at: base + words[i].at, line: lineAt(doc, base+words[i].at), args: []string{}}
		end := words[i+2].end
		j := i + 3
		for ; j < len(words) && !words[j].op; j++ {
			c.args = append(c.args, words[j].s)
			end = words[j].end
		}
		c.text = strings.Join(strings.Fields(text[words[i].at:end]), " ")
		out = append(out, c)
		i = j - 1
	}
	return out
}

// word is a shell word, or an operator (newline, ;, &, |, <, >, parentheses)
// that ends a command's arguments.
type word struct {
	s       string
	op      bool
	at, end int // its offsets in the text
}

// shellWords splits shell code into words, with its quotes removed, and
// operators; a # at a word's start comments out the rest of the line.
func shellWords(text string) []word {
	var out []word
	var cur strings.Builder
	start, in := -1, false
	flush := func(end int) {
		if in {
			out = append(out, word{s: cur.String(), at: start, end: end})
		}
		cur.Reset()
		start, in = -1, false
	}
	begin := func(i int) {
		if !in {
			start, in = i, true
		}
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\n' || c == ';' || c == '&' || c == '|' || c == '<' || c == '>' || c == '(' || c == ')':
			if (c == '<' || c == '>') && in && strings.Trim(cur.String(), "0123456789") == "" {
				cur.Reset() // 2>file: the 2 is the redirection's
				in = false
			}
			flush(i)
			out = append(out, word{s: string(c), op: true, at: i, end: i + 1})
		case c == ' ' || c == '\t' || c == '\r':
			flush(i)
		case c == '#' && !in:
			for i < len(text) && text[i] != '\n' {
				i++
			}
			i--
		case c == '\'' || c == '"':
			begin(i)
			j := strings.IndexByte(text[i+1:], c)
			if j < 0 {
				j = len(text) - i - 1
			}
			cur.WriteString(text[i+1 : i+1+j])
			i += j + 1
		case c == '\\' && i+1 < len(text):
			begin(i)
			cur.WriteByte(text[i+1])
			i++
		default:
			begin(i)
			cur.WriteByte(c)
		}
	}
	flush(len(text))
	return out
}

// docLine is one of a document's lines, at its offset, without its newline.
type docLine struct {
	at   int
	text string
}

func docLines(doc string) []docLine {
	var out []docLine
	for at := 0; at < len(doc); {
		end := strings.IndexByte(doc[at:], '\n')
		if end < 0 {
			end = len(doc) - at
		}
		out = append(out, docLine{at: at, text: strings.TrimSuffix(doc[at:at+end], "\r")})
		at += end + 1
	}
	return out
}

func lineAt(doc string, offset int) int {
	return strings.Count(doc[:offset], "\n") + 1
}

// block is a fenced code block's content: doc[from:to].
type block struct{ from, to int }

// fence is a line's opening or closing code fence (``` or ~~~, 3 or more),
// if it has one, and what follows it.
func fence(line string) (marker, rest string) {
	s := strings.TrimLeft(line, " \t")
	for _, ch := range []string{"`", "~"} {
		n := len(s) - len(strings.TrimLeft(s, ch))
		if n >= 3 {
			return s[:n], s[n:]
		}
	}
	return "", ""
}

// fencedBlocks are the contents of a document's fenced code blocks.
func fencedBlocks(doc string) []block {
	var out []block
	lines := docLines(doc)
	for i := 0; i < len(lines); i++ {
		open, _ := fence(lines[i].text)
		if open == "" {
			continue
		}
		b := block{from: len(doc), to: len(doc)}
		if i+1 < len(lines) {
			b.from = lines[i+1].at
		}
		for i++; i < len(lines); i++ {
			closing, rest := fence(lines[i].text)
			if closing != "" && closing[0] == open[0] && len(closing) >= len(open) && strings.TrimSpace(rest) == "" {
				b.to = lines[i].at
				break
			}
		}
		out = append(out, b)
	}
	return out
}

// prose is the document with its fenced code blocks, fences included,
// blanked out: every offset kept, and no code span across a block.
func prose(doc string) string {
	b := []byte(doc)
	lines := docLines(doc)
	inside := ""
	for _, l := range lines {
		marker, rest := fence(l.text)
		switch {
		case inside == "" && marker != "":
			inside = marker
		case inside != "" && marker != "" && marker[0] == inside[0] && len(marker) >= len(inside) && strings.TrimSpace(rest) == "":
			inside = ""
		case inside == "":
			continue
		}
		for i := l.at; i < l.at+len(l.text); i++ {
			b[i] = ' '
		}
	}
	return string(b)
}

// span is an inline code span: raw is its content with newlines as spaces,
// at its offset in the document; text is that content as Markdown shows it.
type span struct {
	at        int
	raw, text string
}

// codeSpans are a document's inline code spans, outside its fenced code
// blocks: a run of backticks up to the next run of as many, within a
// paragraph (no blank line between).
func codeSpans(doc string) []span {
	text := prose(doc)
	var out []span
	for i := 0; i < len(text); {
		if text[i] == '\\' {
			i += 2
			continue
		}
		if text[i] != '`' {
			i++
			continue
		}
		n := len(text[i:]) - len(strings.TrimLeft(text[i:], "`"))
		from := i + n
		closing := -1
		for j := from; j < len(text); {
			if text[j] != '`' {
				j++
				continue
			}
			m := len(text[j:]) - len(strings.TrimLeft(text[j:], "`"))
			if m == n {
				closing = j
				break
			}
			j += m
		}
		if closing < 0 || blankLine.MatchString(text[from:closing]) {
			i = from // literal backticks
			continue
		}
		raw := strings.ReplaceAll(text[from:closing], "\n", " ")
		shown := raw
		if len(shown) >= 2 && shown[0] == ' ' && shown[len(shown)-1] == ' ' && strings.TrimSpace(shown) != "" {
			shown = shown[1 : len(shown)-1]
		}
		out = append(out, span{at: from, raw: raw, text: shown})
		i = closing + n
	}
	return out
}

var blankLine = regexp.MustCompile(`\n[ \t]*\n`)

// section is the offsets of a document's level-two section of that title,
// from its heading to the next heading of level one or two.
func section(doc, title string) (from, to int, ok bool) {
	text := prose(doc)
	from = -1
	for _, l := range docLines(text) {
		h, isHeading := strings.CutPrefix(l.text, "## ")
		if from < 0 {
			if isHeading && strings.TrimSpace(h) == title {
				from = l.at
			}
			continue
		}
		if isHeading || strings.HasPrefix(l.text, "# ") {
			return from, l.at, true
		}
	}
	return from, len(doc), from >= 0
}

func TestBenchCommandsFound(t *testing.T) {
	doc := "# T\n" + // 1
		"Run `go run . -sizes 1 -repeat 2` or `go run ./cmd/x -v`.\n" + // 2
		"```sh\n" + // 3
		"cd bench && go run . -pin 2>&1 | tee log # a comment\n" + // 4
		"TMPDIR=/dev/shm go run . -sizes 10 \\\n" + // 5
		"  -out '/tmp/a b'\n" + // 6
		"go run .\n" + // 7
		"```\n" + // 8
		"from `go run . -sizes 1000 -issuers internal\n" + // 9
		"-restart 0`, and ``go run . -keep``; `unclosed\n" + // 10
		"\n" +
		"go run . -x` not a span.\n" + // 12
		"~~~\n`go run . -in-block`\n~~~\n" // 13-15
	want := []command{
		{line: 2, text: "go run . -sizes 1 -repeat 2", args: []string{"-sizes", "1", "-repeat", "2"}},
		{line: 4, text: "go run . -pin", args: []string{"-pin"}},
		{line: 5, text: "go run . -sizes 10 -out '/tmp/a b'", args: []string{"-sizes", "10", "-out", "/tmp/a b"}},
		{line: 7, text: "go run .", args: []string{}},
		{line: 9, text: "go run . -sizes 1000 -issuers internal -restart 0", args: []string{"-sizes", "1000", "-issuers", "internal", "-restart", "0"}},
		{line: 10, text: "go run . -keep", args: []string{"-keep"}},
	}
	got := benchCommands(doc)
	if len(got) != len(want) {
		t.Fatalf("found %d commands, want %d: %+v", len(got), len(want), got)
	}
	for i, g := range got {
		w := want[i]
		if g.line != w.line || !slices.Equal(g.args, w.args) || g.text != w.text {
			t.Errorf("command %d: line %d %q %q, want line %d %q %q", i, g.line, g.text, g.args, w.line, w.text, w.args)
		}
	}
	doc = "# A\n## Benchmark\nx\n```\n## not a heading\n```\n## Next\n"
	wantFrom, wantTo := strings.Index(doc, "## Benchmark"), strings.Index(doc, "## Next")
	if from, to, ok := section(doc, "Benchmark"); !ok || from != wantFrom || to != wantTo {
		t.Errorf("section: %d, %d, %t, want %d, %d, true", from, to, ok, wantFrom, wantTo)
	}
}

func TestCheckArgs(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-sizes", "1,10,100,1000", "-repeat", "5", "-acme-max", "10", "-restart", "1000", "-restart-sweep"},
		{"-pin", "-issuers", "internal,sslci", "-on-demand", "0", "-out", "DIR", "-profile=DIR", "--keep", "-repeat-small=3"},
		{"-h"},
	} {
		if err := checkArgs(args); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	for _, args := range [][]string{
		{"-nope"},
		{"-sizes", "1,x"},
		{"-sizes", "0"},
		{"-repeat", "many"},
		{"-pin=maybe"},
		{"-issuers", "internal,letsencrypt"},
		{"-sizes", "10", "repeat", "3"},
		{"-out"},
	} {
		if err := checkArgs(args); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

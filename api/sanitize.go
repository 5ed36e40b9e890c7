package api

import (
	"fmt"
	"html"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxExcerpt bounds how much of a server's text reaches an error message.
const maxExcerpt = 200

// pemRemoved replaces a PEM block (a private key, say) in an excerpt.
const pemRemoved = "[PEM block removed]"

// sanitize turns server text into a short single line fit for an error or a
// log: the secret and PEM blocks removed, HTML tags dropped (their text
// kept), control characters and runs of space folded, and the result cut.
// Secret and PEM are removed again at the end, in case the rest made one.
func sanitize(s, secret string) string {
	s = stripPEM(redact(s, secret))
	s = foldSpace(stripTags(s))
	s = stripPEM(redact(s, secret))
	if len(s) > maxExcerpt {
		cut := maxExcerpt
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// excerpt describes a body that is not the JSON we expect: its type, its
// size and the start of its text, sanitized.
func excerpt(contentType string, body []byte, secret string) string {
	desc := fmt.Sprintf("%d bytes", len(body))
	if ct, _, _ := strings.Cut(contentType, ";"); ct != "" {
		desc = strings.TrimSpace(ct) + ", " + desc
	}
	text := sanitize(string(body), secret)
	if text == "" {
		text = "(empty body)"
	}
	return desc + ": " + text
}

func redact(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "[REDACTED]")
}

// stripPEM replaces every PEM block, from its BEGIN line to the end of its
// END line, or to the end of s when it is cut short. A "PRIVATE KEY" seen
// alone starts a block too.
func stripPEM(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "BEGIN")
		if k := strings.Index(s, "PRIVATE KEY"); k >= 0 && (i < 0 || k < i) {
			i = k
		}
		if i < 0 {
			if b.Len() == 0 {
				return s
			}
			b.WriteString(s)
			return b.String()
		}
		start := i
		for start > 0 && s[start-1] == '-' {
			start--
		}
		b.WriteString(s[:start])
		b.WriteString(pemRemoved)
		end := len(s)
		if k := strings.Index(s[i:], "-----END"); k >= 0 {
			after := i + k + len("-----END")
			if m := strings.Index(s[after:], "-----"); m >= 0 {
				end = after + m + len("-----")
			}
		}
		s = s[end:]
	}
}

// inlineTags are HTML elements that do not separate words.
var inlineTags = map[string]bool{"a": true, "b": true, "i": true, "em": true, "strong": true, "span": true, "code": true, "tt": true, "u": true, "small": true, "font": true}

// stripTags drops HTML tags, comments, and the content of script and style
// elements, keeping the text; a "<" that starts no tag is text.
func stripTags(s string) string {
	if !strings.Contains(s, "<") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(s)
			break
		}
		b.WriteString(s[:i])
		rest := s[i+1:]
		if strings.HasPrefix(rest, "!--") {
			if j := strings.Index(rest, "-->"); j >= 0 {
				s = rest[j+3:]
				continue
			}
		}
		j := strings.IndexByte(rest, '>')
		if j < 0 || !isTagStart(rest) {
			b.WriteByte('<')
			s = rest
			continue
		}
		name := tagName(rest[:j])
		if !inlineTags[name] {
			b.WriteByte(' ')
		}
		s = rest[j+1:]
		if (name == "script" || name == "style") && rest[0] != '/' {
			s = s[indexClosing(s, name):]
		}
	}
	return html.UnescapeString(b.String())
}

func isTagStart(s string) bool {
	if s == "" {
		return false
	}
	c := s[0]
	return (isAlnum(c) && c > '9') || c == '/' || c == '!' || c == '?'
}

// tagName is the lower-case name of the tag whose inside is s, e.g.
// "/TD" -> "td", `a href="x"` -> "a".
func tagName(s string) string {
	s = strings.TrimPrefix(s, "/")
	end := 0
	for end < len(s) && isAlnum(s[end]) {
		end++
	}
	return strings.ToLower(s[:end])
}

func isAlnum(c byte) bool {
	lower := c | 0x20
	return ('a' <= lower && lower <= 'z') || ('0' <= c && c <= '9')
}

// indexClosing finds "</name" in s, in any case; len(s) when there is none.
func indexClosing(s, name string) int {
	for off := 0; ; {
		k := strings.Index(s[off:], "</")
		if k < 0 {
			return len(s)
		}
		k += off
		if end := k + 2 + len(name); end <= len(s) && strings.EqualFold(s[k+2:end], name) {
			return k
		}
		off = k + 2
	}
}

// foldSpace folds control characters and runs of space into one space, and
// trims.
func foldSpace(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

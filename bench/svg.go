package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

var issuerColor = map[string]string{issuerInternal: "#7570b3", issuerSSLCI: "#1b9e77", issuerACME: "#d95f02"}

// The plot's size and the plotting area inside it.
const (
	svgW                             = 720
	plotL, plotR, plotTop, plotBelow = 90, 690, 50, 370
)

// svg plots seconds against names, both on log scales, a line per issuer.
func (r *results) svg() string {
	sizes := r.sizes()
	if len(sizes) == 0 {
		return ""
	}
	x0, x1 := 0.0, math.Max(1, math.Ceil(math.Log10(float64(sizes[len(sizes)-1]))))
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range r.Issuance {
		lo, hi = math.Min(lo, x.Seconds), math.Max(hi, x.Seconds)
	}
	if len(r.Issuance) == 0 {
		lo, hi = 1, 10
	}
	y0, y1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if y1 <= y0 {
		y1 = y0 + 1
	}
	px := func(n float64) float64 { return plotL + (math.Log10(n)-x0)/(x1-x0)*(plotR-plotL) }
	py := func(s float64) float64 { return plotBelow - (math.Log10(s)-y0)/(y1-y0)*(plotBelow-plotTop) }

	svgH := plotBelow + 56 + 14*len(r.Skipped)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n",
		svgW, svgH, svgW, svgH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="16" font-weight="bold">Time for Caddy to obtain certificates for N new names</text>`+"\n", plotL)
	for e := x0; e <= x1; e++ {
		x := px(math.Pow10(int(e)))
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, plotTop, x, plotBelow)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotBelow+20, strconv.Itoa(int(math.Pow10(int(e)))))
	}
	for e := y0; e <= y1; e++ {
		y := py(math.Pow10(int(e)))
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", plotL, y, plotR, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s s</text>`+"\n", plotL-8, y+4,
			strconv.FormatFloat(math.Pow10(int(e)), 'f', -1, 64))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>`+"\n",
		plotL, plotTop, plotR-plotL, plotBelow-plotTop)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">new names (log scale)</text>`+"\n", (plotL+plotR)/2, plotBelow+42)
	fmt.Fprintf(&b, `<text transform="translate(22 %d) rotate(-90)" text-anchor="middle">seconds, config load to last certificate (log scale)</text>`+"\n",
		(plotTop+plotBelow)/2)

	for i, iss := range r.issuersRun() {
		color := issuerColor[iss]
		var pts []string
		var marks strings.Builder // drawn over the line
		for _, n := range sizes {
			x, ok := r.find(iss, n)
			if !ok {
				continue
			}
			cx, cy := px(float64(n)), py(x.Seconds)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", cx, cy))
			fmt.Fprintf(&marks, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", cx, cy, color)
			lx, anchor := cx+7, "start"
			if cx > plotR-60 { // keep the label inside
				lx, anchor = cx-7, "end"
			}
			fmt.Fprintf(&marks, `<text x="%.1f" y="%.1f" text-anchor="%s" fill="%s" font-size="11" stroke="white" stroke-width="3" paint-order="stroke">%s</text>`+"\n",
				lx, cy-7, anchor, color, seconds(x.Seconds))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), color)
		b.WriteString(marks.String())
		ly := plotTop + 20 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", plotL+12, ly-4, plotL+36, ly-4, color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", plotL+42, ly, issuerTitle[iss])
	}
	for i, s := range r.Skipped {
		short, _, _ := strings.Cut(s.Reason, ":") // the why is in results.md
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#555">%s, %d names: %s</text>`+"\n",
			plotL, plotBelow+62+14*i, issuerTitle[s.Issuer], s.Names, short)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Sample is the spread of one side of a measurement.
type Sample struct {
	N int
	// Median is the median, or the percentile the row names (exec p99).
	Median   time.Duration
	Min, Max time.Duration
	raw      []time.Duration
}

func sampleOf(ds []time.Duration) Sample {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return Sample{}
	}
	return Sample{N: len(s), Median: s[len(s)/2], Min: s[0], Max: s[len(s)-1], raw: s}
}

// percentile replaces the median with the q-th percentile (nearest rank).
func (s Sample) percentile(q float64) Sample {
	if s.N == 0 {
		return s
	}
	i := int(float64(s.N)*q+0.999999) - 1
	s.Median = s.raw[min(max(i, 0), s.N-1)]
	return s
}

// Row is one line of the table.
type Row struct {
	// What is measured, and on which storage pool driver ("" when the pool
	// does not matter).
	What, Pool string
	// Ours is incusexec; Ref the reference, named by RefName.
	Ours    Sample
	RefName string
	Ref     Sample
	// Ratio is Ours.Median / Ref.Median.
	Ratio float64
	// Target is the highest ratio that meets the target (0: none).
	Target float64
	// Met reports Ratio <= Target (false without a target).
	Met bool
}

// Table is the outcome of Run.
type Table struct {
	Date    time.Time
	Machine string
	Quick   bool
	Rows    []Row
	// Notes break measurements down where a target needs explaining.
	Notes []string
}

func (t *Table) note(format string, args ...any) {
	t.Notes = append(t.Notes, fmt.Sprintf(format, args...))
}

func (t *Table) add(what, pool string, ours Sample, refName string, ref Sample, target float64) {
	r := Row{What: what, Pool: pool, Ours: ours, RefName: refName, Ref: ref, Target: target}
	if ref.Median > 0 {
		r.Ratio = float64(ours.Median) / float64(ref.Median)
	}
	r.Met = target > 0 && r.Ratio > 0 && r.Ratio <= target
	t.Rows = append(t.Rows, r)
}

func fmtD(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}

func fmtS(s Sample) string {
	if s.N <= 1 {
		return fmtD(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtD(s.Median), fmtD(s.Min), fmtD(s.Max))
}

// Print writes the table as aligned text.
func (t *Table) Print(w io.Writer) error {
	fmt.Fprintf(w, "incusexec bench — %s — %s%s\n", t.Date.UTC().Format(time.RFC3339), t.Machine,
		map[bool]string{true: " — QUICK (a check, not a measurement)", false: ""}[t.Quick])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tpool\tincusexec median (min–max)\treference\treference median (min–max)\tratio\ttarget\tmet")
	for _, r := range t.Rows {
		target, met := "—", "—"
		if r.Target > 0 {
			target = fmt.Sprintf("≤ %.2fx", r.Target)
			met = map[bool]string{true: "yes", false: "NO"}[r.Met]
		}
		pool := r.Pool
		if pool == "" {
			pool = "any"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2fx\t%s\t%s\n", r.What, pool, fmtS(r.Ours), r.RefName, fmtS(r.Ref), r.Ratio, target, met)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var n []string
	for _, r := range t.Rows {
		if r.Ours.N > 0 {
			n = append(n, fmt.Sprintf("%d/%d", r.Ours.N, r.Ref.N))
		}
	}
	_, err := fmt.Fprintf(w, "runs per row (incusexec/reference): %s\n", strings.Join(n, " "))
	for _, note := range t.Notes {
		fmt.Fprintf(w, "note: %s\n", note)
	}
	return err
}

package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Verdict is a scan held against the triage file.
type Verdict struct {
	Triaged   []Finding // found and excused by an entry
	Untriaged []Finding // found with no entry
	Applies   []Finding // found, and the entry says it reaches the project
	Stale     []string  // entries the scan no longer reports
}

// OK reports whether every finding is excused.
func (v Verdict) OK() bool { return len(v.Untriaged) == 0 && len(v.Applies) == 0 }

// Check sorts each finding of s by the entries of the triage file.
func Check(s Scan, entries map[string]string) Verdict {
	var v Verdict
	seen := map[string]bool{}
	for _, f := range s.Findings {
		seen[f.ID] = true
		reason, ok := entries[f.ID]
		switch {
		case !ok:
			v.Untriaged = append(v.Untriaged, f)
		case strings.HasPrefix(reason, appliesPrefix):
			v.Applies = append(v.Applies, f)
		default:
			v.Triaged = append(v.Triaged, f)
		}
	}
	for id := range entries {
		if !seen[id] {
			v.Stale = append(v.Stale, id)
		}
	}
	sort.Strings(v.Stale)
	return v
}

// Write prints the verdict for a person: each group with the advisory, its
// level, module and fix.
func (v Verdict) Write(w io.Writer) {
	line := func(f Finding) {
		fixed := f.Fixed
		if fixed == "" {
			fixed = "no fix"
		}
		fmt.Fprintf(w, "  %-14s %-7s %s (%s) %s\n", f.ID, f.Level, f.Module, fixed, f.Summary)
	}
	fmt.Fprintf(w, "vulntriage: %d finding(s): %d triaged, %d untriaged, %d marked APPLIES\n",
		len(v.Triaged)+len(v.Untriaged)+len(v.Applies), len(v.Triaged), len(v.Untriaged), len(v.Applies))
	if len(v.Untriaged) > 0 {
		fmt.Fprintln(w, "UNTRIAGED (check the upstream fix, then add an entry with the reason, or upgrade):")
		for _, f := range v.Untriaged {
			line(f)
		}
	}
	if len(v.Applies) > 0 {
		fmt.Fprintln(w, "APPLIES (reaches this project; fix it, it cannot be triaged away):")
		for _, f := range v.Applies {
			line(f)
		}
	}
	if len(v.Triaged) > 0 {
		fmt.Fprintln(w, "triaged (reason in the triage file):")
		for _, f := range v.Triaged {
			line(f)
		}
	}
	if len(v.Stale) > 0 {
		fmt.Fprintf(w, "no longer reported, remove from the triage file: %s\n", strings.Join(v.Stale, " "))
	}
}

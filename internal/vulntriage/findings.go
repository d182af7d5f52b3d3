package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// ErrNotScan marks input that is not govulncheck's JSON output.
var ErrNotScan = errors.New("not a govulncheck -format json stream")

// Level says how close a finding comes to the project's code.
type Level int

// The levels, weakest first, as govulncheck distinguishes them.
const (
	LevelModule  Level = iota // a required module has the advisory
	LevelPackage              // an imported package has it
	LevelSymbol               // a vulnerable symbol is reachable (or, with no symbol data, assumed so)
)

func (l Level) String() string {
	return [...]string{"module", "package", "called"}[l]
}

// Finding is the strongest finding of one advisory in a scan.
type Finding struct {
	ID      string
	Level   Level
	Module  string
	Fixed   string // the module version that fixes it, "" when none is published
	Summary string
}

// Scan is what one govulncheck run reported.
type Scan struct {
	Findings []Finding // sorted by ID
}

// The parts of govulncheck's message stream this command reads.
type message struct {
	Config *struct {
		ScannerName string `json:"scanner_name"`
	} `json:"config"`
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string `json:"osv"`
		FixedVersion string `json:"fixed_version"`
		Trace        []struct {
			Module   string `json:"module"`
			Package  string `json:"package"`
			Function string `json:"function"`
		} `json:"trace"`
	} `json:"finding"`
}

// ParseFindings reads govulncheck's -format json stream. A stream without
// the config message that every run starts with is refused, so that an
// empty or foreign input can never pass as a clean scan.
func ParseFindings(r io.Reader) (Scan, error) {
	dec := json.NewDecoder(r)
	sawConfig := false
	summaries := map[string]string{}
	byID := map[string]*Finding{}
	for {
		var m message
		err := dec.Decode(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return Scan{}, fmt.Errorf("%w: %v", ErrNotScan, err)
		}
		if m.Config != nil {
			sawConfig = true
		}
		if m.OSV != nil {
			summaries[m.OSV.ID] = m.OSV.Summary
		}
		if f := m.Finding; f != nil {
			if f.OSV == "" || len(f.Trace) == 0 {
				return Scan{}, fmt.Errorf("%w: a finding without advisory or trace", ErrNotScan)
			}
			top := f.Trace[0]
			lvl := LevelModule
			switch {
			case top.Function != "":
				lvl = LevelSymbol
			case top.Package != "":
				lvl = LevelPackage
			}
			cur, ok := byID[f.OSV]
			if !ok {
				cur = &Finding{ID: f.OSV, Level: lvl, Module: top.Module, Fixed: f.FixedVersion}
				byID[f.OSV] = cur
			}
			if lvl > cur.Level {
				cur.Level = lvl
			}
		}
	}
	if !sawConfig {
		return Scan{}, fmt.Errorf("%w: no config message (did govulncheck run?)", ErrNotScan)
	}
	var s Scan
	for id, f := range byID {
		f.Summary = summaries[id]
		s.Findings = append(s.Findings, *f)
	}
	sort.Slice(s.Findings, func(i, j int) bool { return s.Findings[i].ID < s.Findings[j].ID })
	return s, nil
}

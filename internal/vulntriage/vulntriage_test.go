package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// testdata/scan.json is cut from a real govulncheck v1.9.0 run on this
// module: GO-2026-5810 (incus, no symbol data, so reported as called, with
// package and module findings too) and GO-2026-5841 (klauspost/compress,
// module level only, fixed in v1.18.7).
func readScan(t *testing.T) Scan {
	t.Helper()
	f, err := os.Open("testdata/scan.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseFindings(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseFindingsKeepsTheStrongestLevel(t *testing.T) {
	is := is.New(t)
	s := readScan(t)
	is.Equal(len(s.Findings), 2)
	is.Equal(s.Findings[0].ID, "GO-2026-5810")
	is.Equal(s.Findings[0].Level, LevelSymbol)
	is.Equal(s.Findings[0].Module, "github.com/lxc/incus/v6")
	is.Equal(s.Findings[0].Fixed, "")
	is.True(strings.HasPrefix(s.Findings[0].Summary, "Incus: CreateCustomVolumeFromBackup"))
	is.Equal(s.Findings[1].ID, "GO-2026-5841")
	is.Equal(s.Findings[1].Level, LevelModule)
	is.Equal(s.Findings[1].Fixed, "v1.18.7")
}

func TestParseFindingsRefusesWhatIsNoScan(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          "",
		"no config":      `{"osv":{"id":"GO-2026-0001"}}`,
		"not json":       "Your code is affected by 3 vulnerabilities",
		"finding, bare":  `{"config":{}} {"finding":{"osv":"GO-2026-0001"}}`,
		"truncated json": `{"config":{"scanner_name":"govulncheck"}} {"finding":`,
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			_, err := ParseFindings(strings.NewReader(in))
			is.True(errors.Is(err, ErrNotScan))
		})
	}
}

func TestParseTriage(t *testing.T) {
	is := is.New(t)
	got, err := ParseTriage(strings.NewReader(`# comment

GO-2026-5810 daemon only: the fix changes internal/server/backup,
  which this project does not compile.
GO-2026-5841 APPLIES: s2.NewDict is reached
`))
	is.NoErr(err)
	is.Equal(got["GO-2026-5810"], "daemon only: the fix changes internal/server/backup, which this project does not compile.")
	is.Equal(got["GO-2026-5841"], "APPLIES: s2.NewDict is reached")
}

func TestParseTriageRejects(t *testing.T) {
	for name, in := range map[string]string{
		"no reason":         "GO-2026-5810\n",
		"not an id":         "CVE-2026-1 something\n",
		"twice":             "GO-2026-5810 a\nGO-2026-5810 b\n",
		"orphaned continue": "  continues nothing\n",
	} {
		t.Run(name, func(t *testing.T) {
			is := is.New(t)
			_, err := ParseTriage(strings.NewReader(in))
			is.True(errors.Is(err, ErrTriage))
		})
	}
}

func TestCheck(t *testing.T) {
	s := readScan(t)
	for _, tc := range []struct {
		name                               string
		triage                             map[string]string
		ok                                 bool
		triaged, untriaged, applies, stale int
	}{
		{"all triaged", map[string]string{"GO-2026-5810": "daemon only", "GO-2026-5841": "not imported"}, true, 2, 0, 0, 0},
		{"one missing", map[string]string{"GO-2026-5810": "daemon only"}, false, 1, 1, 0, 0},
		{"nothing triaged", map[string]string{}, false, 0, 2, 0, 0},
		{"applies is never excused", map[string]string{"GO-2026-5810": "daemon only", "GO-2026-5841": "APPLIES: reached"}, false, 1, 0, 1, 0},
		{"stale entry is listed, not fatal", map[string]string{"GO-2026-5810": "a", "GO-2026-5841": "b", "GO-2025-0001": "c"}, true, 2, 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			v := Check(s, tc.triage)
			is.Equal(v.OK(), tc.ok)
			is.Equal(len(v.Triaged), tc.triaged)
			is.Equal(len(v.Untriaged), tc.untriaged)
			is.Equal(len(v.Applies), tc.applies)
			is.Equal(len(v.Stale), tc.stale)
		})
	}
}

func TestRunExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := write("full.txt", "GO-2026-5810 daemon only\nGO-2026-5841 not imported\n")
	partial := write("partial.txt", "GO-2026-5810 daemon only\n")
	for _, tc := range []struct {
		name string
		args []string
		want int
		says string
	}{
		{"clean", []string{"-triage", full, "testdata/scan.json"}, 0, "2 triaged, 0 untriaged"},
		{"untriaged finding fails", []string{"-triage", partial, "testdata/scan.json"}, 1, "UNTRIAGED"},
		{"missing triage file", []string{"-triage", filepath.Join(dir, "nope"), "testdata/scan.json"}, 2, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			var out, errb bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &out, &errb)
			is.Equal(code, tc.want)
			is.True(strings.Contains(out.String()+errb.String(), tc.says))
		})
	}
	t.Run("empty stdin is no scan", func(t *testing.T) {
		is := is.New(t)
		var out, errb bytes.Buffer
		is.Equal(run([]string{"-triage", full}, strings.NewReader(""), &out, &errb), 2)
	})
}

// FuzzParseTriage: any text either parses into entries that all have an
// advisory ID and a reason, or is refused with ErrTriage.
func FuzzParseTriage(f *testing.F) {
	f.Add("GO-2026-5810 reason\n  more\n# c\n")
	f.Add("  x\n")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTriage(strings.NewReader(s))
		if err != nil {
			if !errors.Is(err, ErrTriage) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		for id, reason := range got {
			if !idPattern.MatchString(id) || reason == "" {
				t.Fatalf("entry %q %q passed", id, reason)
			}
		}
	})
}

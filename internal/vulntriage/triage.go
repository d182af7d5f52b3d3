package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// ErrTriage marks a triage file that cannot be read as one.
var ErrTriage = errors.New("malformed triage file")

// An advisory ID as the Go vulnerability database writes it.
var idPattern = regexp.MustCompile(`^GO-[0-9]{4}-[0-9]{4,}$`)

// appliesPrefix starts the reason of an advisory that does reach the
// project; such an entry documents it but never excuses it.
const appliesPrefix = "APPLIES:"

// ParseTriage reads the triage file: lines starting with '#' and blank lines
// are comments; an entry starts at column 0 with an advisory ID, a space and
// the reason; lines starting with white space continue the entry above. It
// returns the reason of each ID.
func ParseTriage(r io.Reader) (map[string]string, error) {
	entries := map[string]string{}
	var cur string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if cur == "" {
				return nil, fmt.Errorf("%w: line %d continues no entry", ErrTriage, n)
			}
			entries[cur] += " " + trimmed
		default:
			id, reason, _ := strings.Cut(trimmed, " ")
			if !idPattern.MatchString(id) {
				return nil, fmt.Errorf("%w: line %d: %q is not an advisory ID (GO-YYYY-NNNN)", ErrTriage, n, id)
			}
			if _, dup := entries[id]; dup {
				return nil, fmt.Errorf("%w: line %d: %s is triaged twice", ErrTriage, n, id)
			}
			cur = id
			entries[id] = strings.TrimSpace(reason)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for id, reason := range entries {
		if reason == "" {
			return nil, fmt.Errorf("%w: %s has no reason", ErrTriage, id)
		}
	}
	return entries, nil
}

package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// trackerRef matches a pointer into the project's issue tracker ("issue 9",
// "issues #12"), which a user reading help or package docs cannot follow.
var trackerRef = regexp.MustCompile(`(?i)\bissues? #?[0-9]+`)

func TestHelpAndDocsNameNoTrackerIssue(t *testing.T) {
	var out, errb strings.Builder
	if code := run(t.Context(), []string{"help"}, nil, &out, &errb); code != 0 {
		t.Fatalf("incusexec help: exit %d, stderr %s", code, errb.String())
	}
	texts := map[string]string{"incusexec help": out.String()}
	for _, f := range []string{"doc.go", "../../internal/bench/doc.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		texts[f] = string(b)
	}
	for where, text := range texts {
		if m := trackerRef.FindAllString(text, -1); m != nil {
			t.Errorf("%s points users at the issue tracker (%q): say what is meant instead", where, m)
		}
	}
}

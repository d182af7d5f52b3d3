package executor

import (
	"errors"
	"fmt"
	"testing"
)

func TestMapErrKeepsBothSentinels(t *testing.T) {
	for _, s := range partSentinels {
		err := mapErr(fmt.Errorf("instance x: %w", s.part))
		if !errors.Is(err, s.part) || !errors.Is(err, s.ours) || err.Error() != "instance x: "+s.part.Error() {
			t.Errorf("mapErr(%v) = %v; want it to wrap %v and %v with the message unchanged", s.part, err, s.part, s.ours)
		}
	}
	if mapErr(nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
	plain := errors.New("plain")
	if mapErr(plain) != plain {
		t.Error("mapErr changed an error of no part")
	}
}

package instance

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/incusexec/incusexec/executor"
)

// checkName is executor.CheckName, its error also wrapping ErrInvalid.
func checkName(name string) error {
	if err := executor.CheckName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// nameSuffixLen is the number of random hex digits after a prefix.
const nameSuffixLen = 10

// randomName returns prefix followed by random hex digits from r.
func randomName(r io.Reader, prefix string) (string, error) {
	b := make([]byte, nameSuffixLen/2)
	if r == nil {
		r = rand.Reader
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("random instance name: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// validatePrefix checks that prefix plus a random suffix makes valid names.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: empty name prefix", ErrInvalid)
	}
	if len(prefix)+nameSuffixLen > 63 {
		return fmt.Errorf("%w: name prefix %q is longer than %d characters", ErrInvalid, prefix, 63-nameSuffixLen)
	}
	// A prefix may end with a hyphen; the suffix follows it.
	if err := checkName(prefix + "a"); err != nil {
		return fmt.Errorf("%w: name prefix %q cannot start an instance name", ErrInvalid, prefix)
	}
	return nil
}

// cleanAbs checks that p is an absolute path inside the instance and returns
// it cleaned.
func cleanAbs(p, what string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: empty %s path", ErrInvalid, what)
	}
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%w: %s path %q is not absolute", ErrInvalid, what, p)
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: %s path %q contains NUL", ErrInvalid, what, p)
	}
	return path.Clean(p), nil
}

// validateLabel checks an owner or ID value: it goes into an API filter, so
// it is kept to characters that need no quoting.
func validateLabel(what, v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	}
	if len(v) > 128 {
		return fmt.Errorf("%w: %s %q longer than 128 characters", ErrInvalid, what, v)
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':' || c == '/') {
			return fmt.Errorf("%w: %s %q contains %q (want letters, digits, - _ . : /)", ErrInvalid, what, v, c)
		}
	}
	return nil
}

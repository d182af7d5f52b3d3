package netbridge

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxNameLen is the longest bridge name: the kernel's interface name limit
// (IFNAMSIZ-1 bytes).
const MaxNameLen = 15

// bridgeSuffix is appended to a host's prefix to name its bridge.
const bridgeSuffix = "-br"

// MaxPrefixLen is the longest prefix BridgeName accepts.
const MaxPrefixLen = MaxNameLen - len(bridgeSuffix)

// BridgeName derives the bridge name of a host-chosen prefix (ISM's
// executors.incus.prefix, say): prefix + "-br". The prefix must be 1 to
// MaxPrefixLen ASCII letters, digits and hyphens, start with a letter and not
// end with a hyphen, so that the name is a valid interface, Incus network and
// ACL name.
func BridgeName(prefix string) (string, error) {
	if err := checkLabel("prefix", prefix, MaxPrefixLen); err != nil {
		return "", err
	}
	return prefix + bridgeSuffix, nil
}

// ACLName is the name of the isolation ACL of network.
func ACLName(network string) string { return network + "-isolation" }

// ValidateNetworkName checks name as a bridge name: 2 to MaxNameLen ASCII
// letters, digits and hyphens, starting with a letter and not ending with a
// hyphen (stricter than Incus, so that ACL names derived from it are valid).
func ValidateNetworkName(name string) error {
	if len(name) < 2 {
		return fmt.Errorf("%w: network name %q: shorter than 2 bytes", ErrInvalid, name)
	}
	return checkLabel("network name", name, MaxNameLen)
}

// checkLabel checks a hostname-like label of at most max bytes.
func checkLabel(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s %q is %d bytes, longer than %d (the bridge name must fit the %d-byte interface limit)",
			ErrInvalid, what, s, len(s), max, MaxNameLen)
	case !isLetter(s[0]):
		return fmt.Errorf("%w: %s %q must start with an ASCII letter", ErrInvalid, what, s)
	case s[len(s)-1] == '-':
		return fmt.Errorf("%w: %s %q must not end with a hyphen", ErrInvalid, what, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !isDigit(c) && c != '-' {
			return fmt.Errorf("%w: %s %q: byte %q at %d is not an ASCII letter, digit or hyphen", ErrInvalid, what, s, c, i)
		}
	}
	return nil
}

// validateProfileName accepts 1-63 ASCII letters, digits, '-', '_' and '.',
// starting with a letter.
func validateProfileName(name string) error {
	return checkToken("profile name", name, 63)
}

// validateDeviceName accepts device names the same way as profile names.
func validateDeviceName(name string) error {
	return checkToken("device name", name, 63)
}

// validateInterfaceName checks a NIC's name inside the instance.
func validateInterfaceName(name string) error {
	if len(name) < 2 {
		return fmt.Errorf("%w: interface name %q: shorter than 2 bytes", ErrInvalid, name)
	}
	return checkToken("interface name", name, MaxNameLen)
}

func checkToken(what, s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s %q is longer than %d bytes", ErrInvalid, what, s, max)
	case !isLetter(s[0]):
		return fmt.Errorf("%w: %s %q must start with an ASCII letter", ErrInvalid, what, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLetter(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("%w: %s %q: byte %q at %d is not allowed", ErrInvalid, what, s, c, i)
		}
	}
	return nil
}

// validateOwner accepts 1-255 bytes of printable UTF-8 without control
// characters.
func validateOwner(owner string) error {
	if owner == "" {
		return fmt.Errorf("%w: owner is empty", ErrInvalid)
	}
	if len(owner) > 255 || !utf8.ValidString(owner) || strings.ContainsFunc(owner, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: owner %q: want 1-255 bytes of printable UTF-8", ErrInvalid, owner)
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

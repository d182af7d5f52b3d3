package reliability

import (
	"os"
	"strconv"
)

// EnvSoak selects the long variant of the fault loops: "1" runs SoakRounds
// rounds, a number runs that many.
const EnvSoak = "INCUSEXEC_SOAK"

// SoakRounds is the number of kill rounds of the long variant.
const SoakRounds = 100

// Rounds returns how many rounds a fault loop runs: short in ordinary test
// runs, SoakRounds (or the number in EnvSoak) in the soak variant.
func Rounds(short int) int {
	v := os.Getenv(EnvSoak)
	switch {
	case v == "" || v == "0":
		return short
	case v == "1":
		return SoakRounds
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return n
	}
	return SoakRounds
}

// Soak reports whether the long variant runs.
func Soak() bool { return Rounds(0) > 0 }

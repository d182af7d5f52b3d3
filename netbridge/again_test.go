package netbridge

import (
	"errors"
	"testing"

	"github.com/lxc/incus/v6/shared/api"
	"github.com/matryer/is"
)

// TestAgainGivesVanishedLinksTheLongerBudget: the vanished-link failure of
// incusd 6.0.4 is retried transientTries times, other server errors
// otherServerErrorTries times, and a refusal of the request not at all.
func TestAgainGivesVanishedLinksTheLongerBudget(t *testing.T) {
	is := is.New(t)
	vanished := api.StatusErrorf(500, `Failed to delete bridge children interfaces: Failed to run: ip -d -j link show veth4d56a39b: exit status 1 (Device "veth4d56a39b" does not exist.)`)
	other := api.StatusErrorf(500, "Failed to start dnsmasq")
	refused := api.StatusErrorf(400, `Invalid value for network "ipv4.address"`)
	tries := func(err error) int {
		n := 1
		for again(err, n) {
			n++
		}
		return n
	}
	is.Equal(tries(vanished), transientTries)
	is.Equal(tries(other), otherServerErrorTries)
	is.Equal(tries(refused), 1)
	is.Equal(tries(errors.New("parent interface eth9 does not exist")), otherServerErrorTries) // not a vanished link
}

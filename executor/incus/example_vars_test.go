package incus_test

import "github.com/incusexec/incusexec/netbridge"

// The bridge and profile of Example.
var (
	netbridgeSpec = netbridge.NetworkSpec{Prefix: "debusine"}
	profileSpec   = netbridge.DebusineProfile("worker-1", "", "default")
)

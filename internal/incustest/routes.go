package incustest

import (
	"encoding/binary"
	"encoding/hex"
	"math/bits"
	"net/netip"
	"strings"
)

// parseRoutes reads the destinations of /proc/net/route (little-endian hex).
func parseRoutes(table string) []netip.Prefix {
	var out []netip.Prefix
	for i, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 {
			continue
		}
		dst, err1 := hex.DecodeString(f[1])
		mask, err2 := hex.DecodeString(f[7])
		if err1 != nil || err2 != nil || len(dst) != 4 || len(mask) != 4 {
			continue
		}
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], binary.LittleEndian.Uint32(dst))
		ones := bits.OnesCount32(binary.LittleEndian.Uint32(mask))
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(a), ones).Masked())
	}
	return out
}

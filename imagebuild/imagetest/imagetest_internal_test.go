package imagetest

import (
	"testing"

	"github.com/matryer/is"
)

func TestMirrorFromSources(t *testing.T) {
	is := is.New(t)
	deb822 := "Types: deb\nURIs: http://a.example/debian-security\nSuites: bookworm-security\n\n" +
		"Types: deb\nURIs: http://a.example/debian http://b.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
	is.Equal(mirrorFromDeb822(deb822, "bookworm"), "http://a.example/debian")
	is.Equal(mirrorFromDeb822(deb822, "trixie"), "")
	oneLine := "# x\ndeb [signed-by=/k.gpg arch=amd64] http://c.example/debian bookworm main\n"
	is.Equal(mirrorFromOneLine(oneLine, "bookworm"), "http://c.example/debian")
	is.Equal(mirrorFromOneLine(oneLine, "trixie"), "")
}

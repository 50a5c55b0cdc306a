// Package version says which jobgate this is: the release (set at build
// time with -ldflags "-X github.com/jobgate/jobgate/internal/version.Version=…",
// as `task build` does from git describe), the commit and the Go version
// (from the binary's build info).
package version

import (
	"runtime/debug"
)

// Version is the release; "dev" for a plain go build.
var Version = "dev"

// Info is what `jobgate version` and jobgate_build_info report.
type Info struct {
	Version   string
	Commit    string // "" when the binary was built outside a VCS checkout
	Modified  bool   // the checkout had uncommitted changes
	GoVersion string
}

// Get returns the running binary's Info.
func Get() Info {
	i := Info{Version: Version}
	if bi, ok := debug.ReadBuildInfo(); ok {
		i.GoVersion = bi.GoVersion
		if Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version // go install …@vX.Y.Z
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Commit = s.Value
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	return i
}

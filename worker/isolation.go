package worker

import (
	"strconv"
	"strings"

	"github.com/jobgate/jobgate/internal/config"
	"github.com/jobgate/jobgate/worker/runtime"
)

// isolation is fn's runtime isolation (the config has checked the
// forms): its /tmp tmpfs, when the rootfs is read-only, gets the disk
// limit.
func isolation(fn config.Function, cfg *config.Config) runtime.Isolation {
	iso := runtime.Isolation{CPU: fn.CPU, ReadonlyRootfs: fn.ReadonlyRootfs, TmpfsMB: cfg.Worker.DiskLimitMB, CapAdd: fn.CapAdd,
		Restricted: cfg.Restricted(&fn)}
	if fn.User != "" {
		uid, gid, hasGID := strings.Cut(fn.User, ":")
		u, _ := strconv.ParseUint(uid, 10, 32)
		g := u // "uid" alone: the group of the same number (not root's)
		if hasGID {
			g, _ = strconv.ParseUint(gid, 10, 32)
		}
		iso.User = &runtime.User{UID: uint32(u), GID: uint32(g)}
	}
	return iso
}

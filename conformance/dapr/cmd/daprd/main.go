// Command daprd is Dapr's sidecar exactly as github.com/dapr/dapr/cmd/daprd builds it without
// component build tags, plus one component: the SQLite name resolver.
//
// Without build tags daprd registers no name resolver at all, so one sidecar cannot find
// another, and self-hosted mode's default resolver (mDNS) multicasts on the machine's network
// interfaces. The SQLite resolver keeps discovery in a local file: two sidecars on loopback
// find each other and nothing leaves the machine. The registration is the one Dapr's own
// stablecomponents/allcomponents builds make; everything else is Dapr's app.Run.
package main

import (
	"github.com/dapr/components-contrib/nameresolution/sqlite"
	"github.com/dapr/dapr/cmd/daprd/app"
	nrloader "github.com/dapr/dapr/pkg/components/nameresolution"
)

func init() {
	nrloader.DefaultRegistry.RegisterComponent(sqlite.NewResolver, "sqlite")
}

func main() {
	app.Run()
}

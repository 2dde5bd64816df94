// etcd: the server of go.etcd.io/etcd/server/v3, at the version Kubernetes 1.34 is tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

// Package clustertest holds the cluster tests of executor/incus,
// imagebuild, mount/incus and netbridge (one each). They share one
// three-member cluster (incustest.SharedCluster), started once for them
// all instead of once per package: each start is three daemons, a raft
// database and a bridge on every member, and was most of what each of
// those tests cost. (instance's cluster tests, several, keep the package's
// own cluster and its test helpers.) The package has no code of its own.
package clustertest

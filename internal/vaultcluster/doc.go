// Package vaultcluster starts a real three-node Vault cluster on loopback for tests,
// with integrated storage (Raft), and can kill, pause, resume and restart any node.
//
// The binary is the pinned Vault that scripts/vault-build.sh builds (or the one named by
// KEYGATE_VAULT), the same one internal/vaulttest runs in dev mode. Unlike a dev server,
// a Raft cluster is set up the way an operator sets one up, with the CLI of that binary:
//
//  1. Each node gets its own config file and data directory:
//
//     storage "raft" { path = "DIR/nodeN"  node_id = "nodeN"  performance_multiplier = 1 }
//     listener "tcp" { address = "127.0.0.1:API"  cluster_address = "127.0.0.1:CLUSTER"  tls_disable = true }
//     api_addr      = "http://127.0.0.1:API"
//     cluster_addr  = "https://127.0.0.1:CLUSTER"
//     disable_mlock = true
//
//     Ports are free loopback ports. performance_multiplier = 1 is Raft's production
//     timing (the default, 5, multiplies heartbeat and election timeouts by five).
//     cluster_addr is always https: Vault secures node-to-node traffic (request
//     forwarding and Raft) with its own certificates even when the API listener is plain
//     HTTP.
//
//  2. `vault server -config FILE` on every node. They start sealed and uninitialised.
//
//  3. `vault operator init -key-shares=1 -key-threshold=1 -format=json` on node 1: one
//     unseal key and a root token; `vault operator unseal KEY`; node 1 becomes active.
//
//  4. `vault operator raft join http://NODE1` on nodes 2 and 3, then `vault operator
//     unseal KEY` on each: they fetch the keyring from the leader through Raft's
//     challenge, join as voters and run as standbys.
//
//  5. `vault secrets enable -path=secret -version=2 kv`, as a dev server has it.
//
// A standby answers every request by forwarding it to the active node (request
// forwarding over the cluster port), so a client may talk to any unsealed node. A node
// that is killed and restarted comes back sealed; Restart unseals it again and it
// rejoins from its own Raft data. Killing the active node makes the two others elect a
// new leader (about 1 to 3 s with performance_multiplier = 1); the new active node then
// takes the HA lock and finishes its post-unseal set-up before it serves.
package vaultcluster

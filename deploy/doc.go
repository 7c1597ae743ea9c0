// Package deploy holds keygate's deployment files (the container image's Containerfile,
// Kubernetes manifests, a systemd unit) and the tests that check them. It is a separate
// Go module so that the Kubernetes API types it validates against stay out of keygate's
// own dependencies.
package deploy

// Package kubernetes holds jobgate's Kubernetes manifests (jobgate.yaml)
// and the test that decodes them strictly into the API's types.
package kubernetes

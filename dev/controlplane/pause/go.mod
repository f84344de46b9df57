// The sandbox ("pause") process of the test node's Pods: it holds the Pod's
// namespaces open and reaps orphaned children. No registry is reachable from
// the test machines, so the harness builds this image itself.
module driftwarden.io/testcontrolplane/pause

go 1.25.0

// The harness shared by the peer programs: fixtures, timing, the result
// format and the combined table. Standard library only, on purpose: each
// peer is its own module (argocd/, flux/) because gitops-engine needs the
// k8s.io modules at v0.34 and fluxcd/pkg/ssa at v0.37, and one go.mod can
// hold only one version of each; a dependency here would leak into both.
module driftwarden.dev/benches/peers

go 1.24.0

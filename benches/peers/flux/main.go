// Command flux times Flux's diff (github.com/fluxcd/pkg/ssa) on the
// captured fixtures: declared vs live ("in sync") and declared vs drifted.
//
//	flux -data benches/data [-kubeconfig FILE]
//
// Flux has no diff of a manifest against a live object: its drift check
// (ResourceManager.Diff, jsondiff.Unstructured) sends the manifest to the
// API server as a server-side apply dry run and compares the object the
// server returns with the live one. The part that runs in memory is that
// comparison, exported as jsondiff.DiffUnstructured (spec and the rest,
// metadata and status left out), after normalize.Unstructured, which Flux
// runs on every manifest before it applies it. Timed here:
//
//   - without a server: normalize.Unstructured + jsondiff.DiffUnstructured
//     of live against the manifest itself, standing in for the dry run's
//     result (what Flux could do in memory; it lacks the server's defaults);
//   - with -kubeconfig (a scratch cluster: it creates namespace "bench" and
//     the fixtures' objects, then deletes them): ResourceManager.Diff, one
//     dry-run apply per call, and jsondiff.DiffUnstructured of live
//     against the dry run's result captured once (Flux's in-memory part).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"reflect"

	"github.com/fluxcd/pkg/ssa/jsondiff"
	"github.com/fluxcd/pkg/ssa/normalize"
	wi2l "github.com/wI2L/jsondiff"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"driftwarden.dev/benches/peers"
)

// version is the fluxcd/pkg/ssa module version in go.mod, for the table.
const version = "fluxcd/pkg/ssa v0.78.0"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "a scratch cluster for ResourceManager.Diff (skipped without)")
	flags := peers.ParseFlags()
	fixtures, err := peers.LoadFixtures(flags.Data)
	check(err)

	var results []peers.Result
	for _, f := range fixtures {
		declared, live, drifted := parse(f)
		results = append(results, inMemory(f.Name, declared, live, drifted, flags))
	}
	if *kubeconfig != "" {
		withServer, err := againstServer(context.Background(), *kubeconfig, fixtures, flags)
		check(err)
		results = append(results, withServer...)
	}
	fmt.Printf("%s (k8s.io/* v0.37.0)\n\n", version)
	peers.PrintTable(os.Stdout, results, nil)
	check(peers.WriteJSON(flags.JSON, results))
}

const inMemoryPeer = "Flux `normalize.Unstructured` + `jsondiff.DiffUnstructured`, no server"

// inMemory: the manifest, normalized as Flux normalizes it, in place of
// the dry run's result.
func inMemory(name string, declared, live, drifted *unstructured.Unstructured, flags peers.Flags) peers.Result {
	r := peers.Result{Fixture: name, Peer: inMemoryPeer}
	compare := func(l *unstructured.Unstructured) (bool, error) {
		d := declared.DeepCopy() // normalize.Unstructured rewrites its argument
		if err := normalize.Unstructured(d); err != nil {
			return false, err
		}
		patch, err := jsondiff.DiffUnstructured(l, d)
		if err != nil {
			return false, err
		}
		if len(patch) > 0 {
			report(name, inMemoryPeer, patch)
		}
		return len(patch) > 0, nil
	}
	var err error
	if r.InSyncDiff, err = compare(live); err == nil {
		r.DriftedDiff, err = compare(drifted)
	}
	if err != nil {
		r.Error = err.Error()
		return r
	}
	timed := func(l *unstructured.Unstructured) func() any {
		return func() any {
			d := declared.DeepCopy()
			_ = normalize.Unstructured(d)
			patch, _ := jsondiff.DiffUnstructured(l, d)
			return patch
		}
	}
	r.InSyncNs = peers.Time(timed(live), flags.Runs, flags.MinRun)
	r.DriftedNs = peers.Time(timed(drifted), flags.Runs, flags.MinRun)
	return r
}

// report prints, on stderr, where the peer saw a difference.
func report(fixture, peer string, patch wi2l.Patch) {
	fmt.Fprintf(os.Stderr, "%s, %s: %d operations:", fixture, peer, len(patch))
	for i, op := range patch {
		if i == 6 {
			fmt.Fprint(os.Stderr, " ...")
			break
		}
		fmt.Fprintf(os.Stderr, " %s %s", op.Type, op.Path)
	}
	fmt.Fprintln(os.Stderr)
}

func parse(f peers.Fixture) (declared, live, drifted *unstructured.Unstructured) {
	js, err := yaml.YAMLToJSON(f.Declared)
	check(err)
	return decode(js), decode(f.Live), decode(f.Drifted)
}

func decode(b []byte) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	check(u.UnmarshalJSON(b))
	return u
}

// unchanged fails when a call changed an input the loop reuses.
func unchanged(name string, before, after *unstructured.Unstructured) {
	if !reflect.DeepEqual(before.Object, after.Object) {
		check(fmt.Errorf("%s: the diff changed its input", name))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

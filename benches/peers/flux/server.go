package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/jsondiff"
	"github.com/fluxcd/pkg/ssa/normalize"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"driftwarden.dev/benches/peers"
)

const (
	diffPeer      = "Flux `ResourceManager.Diff` (dry-run apply to the API server)"
	afterDryRun   = "Flux `jsondiff.DiffUnstructured`, live vs the dry run's result"
	namespace     = "bench"
	fluxManager   = "kustomize-controller"
	applyManager  = "kubectl-client-side-apply"
	handEditedBy  = "kubectl-patch"
	lastApplied   = "kubectl.kubernetes.io/last-applied-configuration"
	deleteTimeout = 60 * time.Second
)

// againstServer recreates each fixture's history on a real API server, as
// `driftwarden-bench fixtures` captured it: the object created as `kubectl
// apply` creates it, timed in sync; the hand edit made by another field
// manager, timed drifted; the object deleted.
func againstServer(ctx context.Context, kubeconfig string, fixtures []peers.Fixture, flags peers.Flags) ([]peers.Result, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	// The default client-side rate limit (QPS 5) would time the limiter.
	cfg.QPS, cfg.Burst = 1e6, 1e6
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return nil, err
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": namespace}}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	manager := ssa.NewResourceManager(c, nil, ssa.Owner{Field: fluxManager, Group: "kustomize.toolkit.fluxcd.io"})

	var results []peers.Result
	for _, f := range fixtures {
		declared, live, drifted := parse(f)
		rd := peers.Result{Fixture: f.Name, Peer: diffPeer}
		rm := peers.Result{Fixture: f.Name, Peer: afterDryRun}
		err := func() error {
			if err := create(ctx, c, declared, live); err != nil {
				return err
			}
			defer remove(ctx, c, declared)
			for i, cell := range []struct {
				verdict, mem *bool
				ns, memNs    *float64
			}{{&rd.InSyncDiff, &rm.InSyncDiff, &rd.InSyncNs, &rm.InSyncNs}, {&rd.DriftedDiff, &rm.DriftedDiff, &rd.DriftedNs, &rm.DriftedNs}} {
				if i == 1 {
					if err := handEdit(ctx, c, declared, live, drifted); err != nil {
						return err
					}
				}
				// ResourceManager.Diff, whole: a GET and a dry-run PATCH.
				before := declared.DeepCopy()
				entry, _, _, err := manager.Diff(ctx, declared.DeepCopy(), ssa.DefaultDiffOptions())
				if err != nil {
					return err
				}
				*cell.verdict = entry.Action == ssa.ConfiguredAction
				unchanged(f.Name, before, declared)
				*cell.ns = peers.Time(func() any {
					entry, _, _, _ := manager.Diff(ctx, declared.DeepCopy(), ssa.DefaultDiffOptions())
					return entry
				}, flags.Runs, flags.MinRun)

				// Its in-memory part, on the server's answers captured once.
				existing, dryRun, err := dryRunPair(ctx, c, declared)
				if err != nil {
					return err
				}
				patch, err := jsondiff.DiffUnstructured(existing, dryRun)
				if err != nil {
					return err
				}
				if len(patch) > 0 {
					report(f.Name, afterDryRun, patch)
				}
				*cell.mem = len(patch) > 0
				*cell.memNs = peers.Time(func() any {
					patch, _ := jsondiff.DiffUnstructured(existing, dryRun)
					return patch
				}, flags.Runs, flags.MinRun)
			}
			return nil
		}()
		if err != nil {
			rd.Error, rm.Error = err.Error(), err.Error()
		}
		results = append(results, rd, rm)
	}
	return results, nil
}

// create makes the object as `kubectl apply` makes a new one: the manifest
// with its last-applied annotation (the capture's own text), created by
// kubectl's field manager.
func create(ctx context.Context, c client.Client, declared, live *unstructured.Unstructured) error {
	obj := declared.DeepCopy()
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[lastApplied] = live.GetAnnotations()[lastApplied]
	obj.SetAnnotations(annotations)
	if err := c.Create(ctx, obj, client.FieldOwner(applyManager)); err != nil {
		return fmt.Errorf("create %s: %w", obj.GetName(), err)
	}
	return nil
}

// handEdit makes the capture's hand edit (live -> drifted) as a merge
// patch by another field manager, as `kubectl patch` did.
func handEdit(ctx context.Context, c client.Client, declared, live, drifted *unstructured.Unstructured) error {
	strip := func(u *unstructured.Unstructured) []byte {
		u = u.DeepCopy()
		for _, field := range []string{"resourceVersion", "generation", "uid", "creationTimestamp", "managedFields"} {
			unstructured.RemoveNestedField(u.Object, "metadata", field)
		}
		unstructured.RemoveNestedField(u.Object, "status")
		b, _ := json.Marshal(u.Object)
		return b
	}
	patch, err := jsonpatch.CreateMergePatch(strip(live), strip(drifted))
	if err != nil {
		return err
	}
	obj := declared.DeepCopy()
	if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(handEditedBy)); err != nil {
		return fmt.Errorf("hand edit of %s: %w", obj.GetName(), err)
	}
	return nil
}

// dryRunPair returns what Flux compares: the object in the cluster and the
// dry run of the manifest's apply, normalized as jsondiff.Unstructured does.
func dryRunPair(ctx context.Context, c client.Client, declared *unstructured.Unstructured) (existing, dryRun *unstructured.Unstructured, err error) {
	existing = &unstructured.Unstructured{}
	existing.SetGroupVersionKind(declared.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(declared), existing); err != nil {
		return nil, nil, err
	}
	dryRun = declared.DeepCopy()
	if err := c.Patch(ctx, dryRun, client.Apply, client.DryRunAll, client.ForceOwnership, client.FieldOwner(fluxManager)); err != nil {
		return nil, nil, err
	}
	return existing, dryRun, normalize.DryRunUnstructured(dryRun)
}

// remove deletes the object and waits until it is gone, so a later run
// can create it again (a CRD takes a moment).
func remove(ctx context.Context, c client.Client, declared *unstructured.Unstructured) {
	obj := declared.DeepCopy()
	_ = c.Delete(ctx, obj)
	for deadline := time.Now().Add(deleteTimeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(declared), obj); apierrors.IsNotFound(err) {
			return
		}
	}
}

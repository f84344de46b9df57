// Command argocd times Argo CD's diff (gitops-engine pkg/diff) on the
// captured fixtures: declared vs live ("in sync") and declared vs drifted.
//
//	argocd -data benches/data -openapi .../k8s.io/kubernetes@v1.34.2/api/openapi-spec/swagger.json
//
// Two modes of diff.Diff, as the Argo CD controller calls it:
//   - the default: a three-way diff against the last-applied annotation
//     (kubectl's client-side apply semantics);
//   - WithStructuredMergeDiff: structured-merge-diff's Apply of the
//     manifest onto live, as Argo CD does for ServerSideApply=true
//     applications. It needs a GvkParser; Argo CD builds it from the
//     cluster's OpenAPI document, here it is built from the same document
//     as shipped in the k8s.io/kubernetes module (no cluster needed).
//
// Server-side diff (WithServerSideDiff) needs an API server for its
// dry-run apply and is not timed here.
package main

import (
	"flag"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/argoproj/gitops-engine/pkg/diff"
	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/kube-openapi/pkg/util/proto"
	"sigs.k8s.io/yaml"

	"driftwarden.dev/benches/peers"
)

// version is the gitops-engine module version in go.mod, for the table.
const version = "gitops-engine v0.7.1-0.20251217140045-5baed5604d2d"

func main() {
	openapiPath := flag.String("openapi", "", "swagger.json for the structured-merge-diff mode's GvkParser")
	flags := peers.ParseFlags()
	openapi := *openapiPath
	fixtures, err := peers.LoadFixtures(flags.Data)
	check(err)

	modes := []struct {
		name string
		opts []diff.Option
	}{{"Argo CD `diff.Diff`, default (three-way, last-applied)", nil}}
	if openapi != "" {
		parser, err := gvkParser(openapi)
		check(err)
		modes = append(modes, struct {
			name string
			opts []diff.Option
		}{"Argo CD `diff.Diff`, `WithStructuredMergeDiff`", []diff.Option{
			diff.WithStructuredMergeDiff(true), diff.WithGVKParser(parser), diff.WithManager("argocd-controller"),
		}})
	} else {
		fmt.Fprintln(os.Stderr, "no -openapi: the structured-merge-diff mode is skipped")
	}

	var results []peers.Result
	for _, f := range fixtures {
		declared, live, drifted := parse(f)
		for _, m := range modes {
			r := peers.Result{Fixture: f.Name, Peer: m.name}
			run := func(l *unstructured.Unstructured) (bool, error) {
				res, err := diff.Diff(declared, l, m.opts...)
				if err != nil {
					return false, err
				}
				if res.Modified {
					why := peers.Changed(res.NormalizedLive, res.PredictedLive, 6)
					fmt.Fprintf(os.Stderr, "%s, %s: modified at %s\n", f.Name, m.name, strings.Join(why, " "))
				}
				return res.Modified, nil
			}
			// One checked call each first: the verdicts, and that the
			// inputs are left as they were (so the loop can reuse them).
			before := declared.DeepCopy()
			if r.InSyncDiff, err = run(live); err == nil {
				r.DriftedDiff, err = run(drifted)
			}
			if err != nil {
				r.Error = err.Error()
				results = append(results, r)
				continue
			}
			if !reflect.DeepEqual(before.Object, declared.Object) {
				check(fmt.Errorf("%s: diff.Diff changed its input", f.Name))
			}
			r.InSyncNs = peers.Time(func() any { res, _ := diff.Diff(declared, live, m.opts...); return res }, flags.Runs, flags.MinRun)
			r.DriftedNs = peers.Time(func() any { res, _ := diff.Diff(declared, drifted, m.opts...); return res }, flags.Runs, flags.MinRun)
			results = append(results, r)
		}
	}
	fmt.Printf("%s (%s)\n\n", version, "k8s.io/* v0.34.0")
	peers.PrintTable(os.Stdout, results, nil)
	check(peers.WriteJSON(flags.JSON, results))
}

// parse turns a fixture into the objects Argo CD diffs: the manifest as
// its repo server renders it, the live objects as its cluster cache holds them.
func parse(f peers.Fixture) (declared, live, drifted *unstructured.Unstructured) {
	js, err := yaml.YAMLToJSON(f.Declared)
	check(err)
	decode := func(b []byte) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		check(u.UnmarshalJSON(b))
		return u
	}
	return decode(js), decode(f.Live), decode(f.Drifted)
}

// gvkParser builds the parser Argo CD's cluster cache builds from
// /openapi/v2, from the same document in swagger.json form.
func gvkParser(path string) (*managedfields.GvkParser, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := openapi_v2.ParseDocument(b)
	if err != nil {
		return nil, err
	}
	models, err := proto.NewOpenAPIData(doc)
	if err != nil {
		return nil, err
	}
	return managedfields.NewGVKParser(models, false)
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// Package peers is the harness the peer programs share: it loads the
// captured fixtures of benches/data, times a call, and prints the results
// as a markdown table, next to driftwarden's criterion figures when given.
package peers

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Names are the captured fixtures, in the order of benches/diff.rs.
var Names = []string{"deployment", "service", "configmap-100-keys", "role-20-rules", "crd-50kb"}

// Fixture is one captured object: the declared manifest (YAML, as in Git)
// and the live object as the API server returned it after `kubectl apply`
// (Live) and after a hand edit by another field manager (Drifted).
type Fixture struct {
	Name                    string
	Declared, Live, Drifted []byte
}

// Result is one peer's entry point on one fixture.
type Result struct {
	Fixture string `json:"fixture"`
	Peer    string `json:"peer"`
	// Median ns per call, declared vs live and declared vs drifted.
	InSyncNs  float64 `json:"in_sync_ns"`
	DriftedNs float64 `json:"drifted_ns"`
	// What the peer answered: did it see a difference?
	InSyncDiff  bool   `json:"in_sync_diff"`
	DriftedDiff bool   `json:"drifted_diff"`
	Error       string `json:"error,omitempty"`
}

// Flags are the options every peer program takes.
type Flags struct {
	Data   string
	Runs   int
	MinRun time.Duration
	JSON   string
}

// ParseFlags registers and parses the common flags.
func ParseFlags() Flags {
	var f Flags
	flag.StringVar(&f.Data, "data", "benches/data", "directory of the captured fixtures")
	flag.IntVar(&f.Runs, "runs", 5, "timed runs per cell; the median is reported")
	flag.DurationVar(&f.MinRun, "min-run", 200*time.Millisecond, "least duration of one run (iterations are scaled to it)")
	flag.StringVar(&f.JSON, "json", "", "also write the results here, one JSON object a line")
	flag.Parse()
	return f
}

// LoadFixtures reads every fixture of Names from dir.
func LoadFixtures(dir string) ([]Fixture, error) {
	var all []Fixture
	for _, name := range Names {
		f := Fixture{Name: name}
		for _, part := range []struct {
			suffix string
			into   *[]byte
		}{{".yaml", &f.Declared}, {".live.json", &f.Live}, {".drifted.json", &f.Drifted}} {
			b, err := os.ReadFile(filepath.Join(dir, name+part.suffix))
			if err != nil {
				return nil, err
			}
			*part.into = b
		}
		all = append(all, f)
	}
	return all, nil
}

// Sink keeps what a timed call returns reachable, so the call is not
// optimized away.
var Sink any

// Time returns the median ns per call of f over runs runs. The iterations
// of a run are scaled until one run lasts at least minRun, so each cell
// runs for at least runs*minRun (the calibration run is the first sample).
func Time(f func() any, runs int, minRun time.Duration) float64 {
	n := 1
	var elapsed time.Duration
	for {
		elapsed = loop(f, n)
		if elapsed >= minRun {
			break
		}
		if elapsed < minRun/100 {
			n *= 100
		} else {
			n = int(float64(n)*1.2*float64(minRun)/float64(elapsed)) + 1
		}
	}
	samples := []float64{float64(elapsed.Nanoseconds()) / float64(n)}
	for len(samples) < runs {
		samples = append(samples, float64(loop(f, n).Nanoseconds())/float64(n))
	}
	sort.Float64s(samples)
	return samples[len(samples)/2]
}

func loop(f func() any, n int) time.Duration {
	start := time.Now()
	for i := 0; i < n; i++ {
		Sink = f()
	}
	return time.Since(start)
}

// WriteJSON writes results to path, one a line (nothing when path is "").
func WriteJSON(path string, results []Result) error {
	if path == "" {
		return nil
	}
	var b strings.Builder
	for _, r := range results {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// ReadJSON reads the results WriteJSON wrote.
func ReadJSON(path string) ([]Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Criterion holds driftwarden's medians (ns) per fixture, from
// `cargo bench --bench diff`.
type Criterion map[string][2]float64

// ReadCriterion reads target/criterion/diff/<fixture>_{in_sync,drifted}/new/estimates.json
// (criterion writes the benchmark "diff/<fixture>/in_sync" there).
func ReadCriterion(dir string) (Criterion, error) {
	out := Criterion{}
	for _, name := range Names {
		var pair [2]float64
		for i, cell := range []string{"in_sync", "drifted"} {
			path := filepath.Join(dir, "diff", name+"_"+cell, "new", "estimates.json")
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, err
			}
			var est struct {
				Median struct {
					PointEstimate float64 `json:"point_estimate"`
				} `json:"median"`
			}
			if err := json.Unmarshal(b, &est); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			pair[i] = est.Median.PointEstimate
		}
		out[name] = pair
	}
	return out, nil
}

// PrintTable writes one row per fixture and peer; with driftwarden's
// figures (crit != nil) a driftwarden row heads each fixture and every peer
// row says how many times driftwarden's time it took.
func PrintTable(w io.Writer, results []Result, crit Criterion) {
	if crit != nil {
		fmt.Fprintln(w, "| object | engine | in sync | / driftwarden | drifted | / driftwarden | verdicts (in sync, drifted) |")
		fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | --- |")
	} else {
		fmt.Fprintln(w, "| object | engine | in sync | drifted | verdicts (in sync, drifted) |")
		fmt.Fprintln(w, "| --- | --- | ---: | ---: | --- |")
	}
	for _, name := range Names {
		if d, ok := crit[name]; ok {
			fmt.Fprintf(w, "| %s | driftwarden `drift::diff` | %s | 1x | %s | 1x | no diff, diff |\n", name, Duration(d[0]), Duration(d[1]))
		}
		for _, r := range results {
			if r.Fixture != name {
				continue
			}
			if r.Error != "" {
				cols := "| - | - |"
				if crit != nil {
					cols = "| - | - | - | - |"
				}
				fmt.Fprintf(w, "| %s | %s %s **error**: %s |\n", name, r.Peer, cols, strings.ReplaceAll(r.Error, "|", "\\|"))
				continue
			}
			if crit != nil {
				d := crit[name]
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", name, r.Peer,
					Duration(r.InSyncNs), Ratio(r.InSyncNs, d[0]), Duration(r.DriftedNs), Ratio(r.DriftedNs, d[1]), Verdicts(r))
			} else {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", name, r.Peer, Duration(r.InSyncNs), Duration(r.DriftedNs), Verdicts(r))
			}
		}
	}
}

// Verdicts says what the peer answered, marking (**...**) every answer that
// disagrees with what the fixture is.
func Verdicts(r Result) string {
	say := func(diff, want bool) string {
		s := "no diff"
		if diff {
			s = "diff"
		}
		if diff != want {
			s = "**" + s + "** (wrong)"
		}
		return s
	}
	return say(r.InSyncDiff, false) + ", " + say(r.DriftedDiff, true)
}

// Duration formats ns as criterion does, to three significant digits.
func Duration(ns float64) string {
	switch {
	case ns >= 1e9:
		return fmt.Sprintf("%.3g s", ns/1e9)
	case ns >= 1e6:
		return fmt.Sprintf("%.3g ms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.3g µs", ns/1e3)
	default:
		return fmt.Sprintf("%.3g ns", ns)
	}
}

// Ratio is a/b as "12.3x".
func Ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	r := a / b
	if r >= 100 {
		return fmt.Sprintf("%.0fx", r)
	}
	return fmt.Sprintf("%.2gx", r)
}

// Changed lists the JSON pointers at which two JSON documents differ (at
// most limit of them), to say why a peer answered as it did.
func Changed(a, b []byte, limit int) []string {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return []string{"(not JSON)"}
	}
	var out []string
	var walk func(path string, x, y any)
	walk = func(path string, x, y any) {
		if len(out) >= limit {
			return
		}
		switch xv := x.(type) {
		case map[string]any:
			if yv, ok := y.(map[string]any); ok {
				keys := map[string]bool{}
				for k := range xv {
					keys[k] = true
				}
				for k := range yv {
					keys[k] = true
				}
				sorted := make([]string, 0, len(keys))
				for k := range keys {
					sorted = append(sorted, k)
				}
				sort.Strings(sorted)
				for _, k := range sorted {
					walk(path+"/"+k, xv[k], yv[k])
				}
				return
			}
		case []any:
			if yv, ok := y.([]any); ok && len(xv) == len(yv) {
				for i := range xv {
					walk(fmt.Sprintf("%s/%d", path, i), xv[i], yv[i])
				}
				return
			}
		}
		if xs, ys := jsonText(x), jsonText(y); xs != ys {
			out = append(out, path)
		}
	}
	walk("", x, y)
	return out
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

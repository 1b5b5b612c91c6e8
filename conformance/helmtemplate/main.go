// Command helmtemplate renders a Helm chart client-side and prints the manifests the way
// `helm template` does.
//
// It exists because Dapr's Sentry integration suite (tests/integration/suite/sentry/helm)
// shells out to a helper named by DAPR_INTEGRATION_HELMTEMPLATE_PATH, and Dapr keeps its
// own helper outside the github.com/dapr/dapr module, so a module that imports the suite
// cannot build it. This is Sigil's replacement, written against Helm as a library.
//
// Usage, as Dapr's framework (tests/integration/framework/process/helm) calls it:
//
//	helmtemplate [--set k=v]... [--set-json k=json]... [--show-only path]... [--namespace ns] CHART_DIR
//
// As with `helm template CHART_DIR`, the release is named "release-name", the namespace
// defaults to "default", --set-json values are applied before --set values, and each
// --show-only pattern must match at least one rendered template path (relative to the
// chart directory, e.g. charts/dapr_sentry/templates/dapr_sentry_deployment.yaml).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
)

// releaseName is the name `helm template` gives a release when none is passed.
const releaseName = "release-name"

// sourceLine finds the template path in a rendered document's "# Source: chart/path"
// comment; the first path element is the top-level chart's name.
var sourceLine = regexp.MustCompile(`# Source: [^/]+/(.+)`)

// repeated collects every occurrence of a flag, like Helm's string-array flags.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	var sets, setJSONs, showOnly repeated
	fs := flag.NewFlagSet("helmtemplate", flag.ExitOnError)
	fs.Var(&sets, "set", "set a value (key=value, as helm --set); repeatable")
	fs.Var(&setJSONs, "set-json", "set a JSON value (key=json, as helm --set-json); repeatable")
	fs.Var(&showOnly, "show-only", "only print manifests rendered from templates matching this path; repeatable")
	namespace := fs.String("namespace", "default", "namespace of the release")
	fs.Parse(os.Args[1:])
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helmtemplate [flags] CHART_DIR")
		os.Exit(2)
	}
	if err := run(os.Stdout, fs.Arg(0), *namespace, sets, setJSONs, showOnly); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

func run(out io.Writer, chartDir, namespace string, sets, setJSONs, showOnly []string) error {
	// The same order Helm merges command-line values in: --set-json, then --set.
	vals := map[string]any{}
	for _, v := range setJSONs {
		if err := strvals.ParseJSON(v, vals); err != nil {
			return fmt.Errorf("failed parsing --set-json data %s: %w", v, err)
		}
	}
	for _, v := range sets {
		if err := strvals.ParseInto(v, vals); err != nil {
			return fmt.Errorf("failed parsing --set data: %w", err)
		}
	}

	chrt, err := loader.Load(chartDir)
	if err != nil {
		return err
	}
	if deps := chrt.Metadata.Dependencies; deps != nil {
		if err := action.CheckDependencies(chrt, deps); err != nil {
			return err
		}
	}

	// A client-only dry-run install is what `helm template` runs: no cluster is contacted,
	// capabilities are Helm's defaults, and the release lives in an in-memory store.
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.DryRunOption = "true"
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = releaseName
	install.Namespace = namespace
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return err
	}

	all := renderAll(rel)
	if len(showOnly) == 0 {
		_, err := io.WriteString(out, all)
		return err
	}
	docs, err := selectDocs(all, showOnly)
	if err != nil {
		return err
	}
	for _, d := range docs {
		if _, err := fmt.Fprintf(out, "---\n%s\n", d); err != nil {
			return err
		}
	}
	return nil
}

// renderAll is the full `helm template` output: the release manifest followed by its
// hooks, each hook headed by its own Source comment.
func renderAll(rel *release.Release) string {
	var b strings.Builder
	b.WriteString(strings.TrimSpace(rel.Manifest))
	b.WriteString("\n")
	for _, h := range rel.Hooks {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return b.String()
}

// selectDocs returns, for each pattern in turn, the documents whose template path matches
// it (path.Match syntax), in Helm's manifest order. A pattern that matches nothing is an
// error, as it is for `helm template --show-only`.
func selectDocs(all string, patterns []string) ([]string, error) {
	split := releaseutil.SplitManifests(all)
	keys := make([]string, 0, len(split))
	for k := range split {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))

	var docs []string
	for _, p := range patterns {
		p = filepath.ToSlash(p) // template paths always use '/'
		found := false
		for _, k := range keys {
			m := sourceLine.FindStringSubmatch(split[k])
			if m == nil {
				continue
			}
			if ok, _ := path.Match(p, m[1]); ok {
				docs = append(docs, split[k])
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("could not find template %s in chart", p)
		}
	}
	return docs, nil
}

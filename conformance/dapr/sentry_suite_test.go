// Package dapr runs Dapr's own Sentry integration suite against the Sigil binary.
//
// The cases are Dapr's (github.com/dapr/dapr/tests/integration/suite/sentry/...), imported
// as a module dependency; this file only drives them the way Dapr's own runner does: each
// case gets a fresh instance, its Setup options start the processes, and Run gets a
// 45-second context. DAPR_INTEGRATION_SENTRY_PATH names the binary under test.
package dapr

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dapr/dapr/tests/integration/framework"
	"github.com/dapr/dapr/tests/integration/suite"
	_ "github.com/dapr/dapr/tests/integration/suite/sentry"
)

// caseTimeout is the budget Dapr's runner gives each case.
const caseTimeout = 45 * time.Second

// sentryOptions are the Sigil flags the wrapper adds to Dapr's arguments. The framework's
// fake API server answers TokenReview without status.audiences (a real API server confirms
// them, and Sigil requires that by default); this flag is Sigil's documented way to accept
// such an authenticator. Everything else runs on Sigil's defaults.
var sentryOptions = []string{"--token-review-audiences-optional"}

func TestSentrySuite(t *testing.T) {
	if sigil := os.Getenv("SIGIL_BIN"); sigil != "" {
		// The framework runs the binary with only the variables a case names (no PATH), so
		// the flags go into a wrapper named like Dapr's binary rather than the environment.
		wrapper := writeWrapper(t, sigil)
		t.Setenv("DAPR_INTEGRATION_SENTRY_PATH", wrapper)
	}
	if os.Getenv("DAPR_INTEGRATION_SENTRY_PATH") == "" {
		t.Fatal("set SIGIL_BIN to the Sigil binary under test (target/release/sigil), or DAPR_INTEGRATION_SENTRY_PATH to a sentry binary")
	}
	t.Logf("sentry under test: %s", os.Getenv("DAPR_INTEGRATION_SENTRY_PATH"))
	focus := regexp.MustCompile(envOr("SENTRY_SUITE_FOCUS", ".*"))
	ran := 0
	for _, named := range suite.All(t) {
		if !focus.MatchString(named.Name()) {
			continue
		}
		ran++
		// A fresh value per case, as Dapr's runner does: cases keep state in their fields.
		tcase := reflect.New(reflect.TypeOf(named.Case).Elem()).Interface().(suite.Case)
		t.Run(named.Name(), func(t *testing.T) {
			t.Parallel()
			options := tcase.Setup(t)
			ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
			t.Cleanup(cancel)
			framework.Run(t, ctx, options...)
			t.Run("run", func(t *testing.T) {
				tcase.Run(t, ctx)
			})
		})
	}
	if ran == 0 {
		t.Fatalf("no case matched %q", focus)
	}
}

// writeWrapper writes an executable `sentry` that runs sigil with Dapr's arguments
// followed by sentryOptions.
func writeWrapper(t *testing.T, sigil string) string {
	t.Helper()
	abs, err := filepath.Abs(sigil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abs); err != nil {
		t.Fatalf("SIGIL_BIN: %v", err)
	}
	script := "#!/bin/sh\nexec " + shellQuote(abs) + ` "$@"`
	for _, o := range sentryOptions {
		script += " " + shellQuote(o)
	}
	path := filepath.Join(t.TempDir(), "sentry")
	if err := os.WriteFile(path, []byte(script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

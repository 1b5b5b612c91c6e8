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
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/dapr/dapr/tests/integration/framework"
	"github.com/dapr/dapr/tests/integration/suite"
	_ "github.com/dapr/dapr/tests/integration/suite/sentry"
)

// caseTimeout is the budget Dapr's runner gives each case.
const caseTimeout = 45 * time.Second

func TestSentrySuite(t *testing.T) {
	if os.Getenv("DAPR_INTEGRATION_SENTRY_PATH") == "" {
		t.Fatal("DAPR_INTEGRATION_SENTRY_PATH must name the sentry binary under test (target/release/sigil)")
	}
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

func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

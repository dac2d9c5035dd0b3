// Command ferretdb runs FerretDB, a server that speaks MongoDB's wire protocol
// and stores documents in PostgreSQL, so that the MongoDB adapters can be tested
// on a machine where MongoDB itself cannot be installed. scripts/services.sh
// builds and starts it.
//
// It embeds the server through the package github.com/FerretDB/FerretDB/ferretdb
// instead of building the module's own cmd/ferretdb: that command panics at start
// unless build/version/version.txt was generated in the module's source tree,
// which a build from the Go module proxy does not have. The embedded server
// reports its version as "unknown" and keeps its telemetry off.
//
// Usage:
//
//	ferretdb -listen-addr 127.0.0.1:27017 -postgresql-url postgres://user:pass@127.0.0.1:5432/ferretdb
//
// Each flag falls back to an environment variable of the same name as the one
// FerretDB's own command reads (FERRETDB_LISTEN_ADDR, FERRETDB_POSTGRESQL_URL,
// FERRETDB_LOG_LEVEL). SIGTERM or SIGINT stops the server: it closes its
// listener, waits for open connections to end and closes its PostgreSQL pool.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// env returns the value of the environment variable name, or def when it is
// unset or empty.
func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	listenAddr := flag.String("listen-addr", env("FERRETDB_LISTEN_ADDR", "127.0.0.1:27017"),
		"TCP address to listen on")
	postgresqlURL := flag.String("postgresql-url", env("FERRETDB_POSTGRESQL_URL", ""),
		"PostgreSQL connection string of the database FerretDB stores its data in")
	logLevel := flag.String("log-level", env("FERRETDB_LOG_LEVEL", "info"),
		"one of debug, info, warn, error")
	flag.Parse()

	if *postgresqlURL == "" {
		fmt.Fprintln(os.Stderr, "ferretdb: -postgresql-url (or FERRETDB_POSTGRESQL_URL) is required")
		os.Exit(2)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad -log-level %q: %v\n", *logLevel, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// The context ends on the first SIGTERM or SIGINT.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// ferretdb.New turns telemetry off by itself (and locks it off); the
	// Config has no field for it.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{
			TCP: *listenAddr,
		},
		Logger:        logger,
		Handler:       "postgresql",
		PostgreSQLURL: *postgresqlURL,
	})
	if err != nil {
		logger.Error("cannot start", "error", err)
		os.Exit(1)
	}

	logger.Info("FerretDB (embedded, v1.24.2) listening", "addr", *listenAddr)

	// Once the first signal has ended the context, the default handling comes
	// back, so that a second signal ends a shutdown stuck on a connection.
	go func() {
		<-ctx.Done()
		stop()
	}()

	if err := f.Run(ctx); err != nil {
		logger.Error("stopped with an error", "error", err)
		os.Exit(1)
	}

	logger.Info("stopped")
}

// Command catalog is the demo's product service: GET /product/{id} reads the
// product from SQLite, then asks pricing (gRPC), reviews (HTTP) and
// inventory (HTTP) in parallel and returns the combined JSON. It has no tracing code and does
// not propagate trace context: latscope sees it only through uprobes.
// (Built with -tags otel it is instead instrumented with the OpenTelemetry
// SDK, for the overhead comparison in scripts/benchdemo; see trace_otel.go.)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/latscope/latscope/examples/demo/internal/pricingpb"
	"github.com/latscope/latscope/examples/demo/internal/service"
)

func main() {
	listen := flag.String("listen", service.Env("LISTEN_ADDR", "127.0.0.1:8081"), "HTTP listen address (env LISTEN_ADDR)")
	pricingAddr := flag.String("pricing", service.Env("PRICING_ADDR", "127.0.0.1:8082"), "pricing gRPC address (env PRICING_ADDR)")
	reviewsURL := flag.String("reviews", service.Env("REVIEWS_URL", "http://127.0.0.1:8083"), "reviews base URL (env REVIEWS_URL)")
	inventoryURL := flag.String("inventory", service.Env("INVENTORY_URL", "http://127.0.0.1:8084"), "inventory base URL (env INVENTORY_URL)")
	dbPath := flag.String("db", service.Env("CATALOG_DB", ""), "SQLite database file, seeded at start (env CATALOG_DB; default: a fresh file in a temporary directory)")
	products := flag.Int64("products", 100, "seed products with ids 1..N (match pricing's -products)")
	timeout := flag.Duration("upstream-timeout", 2*time.Second, "deadline of each call to pricing, reviews and inventory")
	flag.Parse()

	log := service.Logger("catalog")
	if err := run(log, *listen, *pricingAddr, *reviewsURL, *inventoryURL, *dbPath, *products, *timeout); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, listen, pricingAddr, reviewsURL, inventoryURL, dbPath string, products int64, timeout time.Duration) error {
	ctx, stop := service.SignalContext()
	defer stop()

	if dbPath == "" {
		dir, err := os.MkdirTemp("", "catalog-")
		if err != nil {
			return fmt.Errorf("create database directory: %w", err)
		}
		defer os.RemoveAll(dir)
		dbPath = filepath.Join(dir, "catalog.db")
	}
	db, err := openStore(ctx, dbPath, products)
	if err != nil {
		return err
	}
	defer db.Close()
	log.Info("database seeded", "path", dbPath, "products", products)

	shutdown, err := setupTracing(ctx, log)
	if err != nil {
		return err
	}
	defer shutdown(context.Background())

	// NewClient connects lazily: pricing may start after catalog.
	cc, err := grpc.NewClient(pricingAddr, append(tracedDialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		return fmt.Errorf("create pricing client for %s: %w", pricingAddr, err)
	}
	defer cc.Close()

	h := &handler{
		store:        db,
		pricing:      pricingpb.NewClient(cc),
		reviewsURL:   reviewsURL,
		inventoryURL: inventoryURL,
		http:         &http.Client{Transport: tracedTransport(upstreamTransport()), Timeout: timeout},
		timeout:      timeout,
		log:          log,
	}
	mux := http.NewServeMux()
	routes(mux, h)
	return service.ServeHTTP(ctx, log, listen, tracedHandler(mux))
}

// ping serves GET /ping/{id}: a trivial handler, what tracing costs a
// request that does nothing (scripts/benchdemo). GET /work/{id} (h.work)
// is the overhead goal's reference shape: ~200 µs of CPU and one
// downstream GET; /work/{id}?rounds=1500 the ~1 ms variant of it.
func ping(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "pong\n") }

// upstreamTransport keeps as many idle connections to reviews, and to
// inventory, as requests run at once (http.DefaultTransport keeps 2 per
// host: under concurrency every other call would open a new connection).
func upstreamTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

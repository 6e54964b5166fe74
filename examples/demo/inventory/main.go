// Command inventory is the demo's stock service, written with CloudWeGo
// Hertz: its own HTTP/1 server and client on its own network layer
// (netpoll, Hertz's default on Linux), not net/http. GET /stock/:id asks
// reviews how many reviews the product has, with one shared Hertz client,
// and answers {"id","in_stock","reviews"}. It has no tracing code and
// propagates no trace context: latscope sees it only through uprobes.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/cloudwego/hertz/pkg/app"
	"github.com/cloudwego/hertz/pkg/app/client"
	"github.com/cloudwego/hertz/pkg/app/server"
	"github.com/cloudwego/hertz/pkg/common/hlog"

	"github.com/latscope/latscope/examples/demo/internal/service"
)

// Stock is the JSON body of GET /stock/:id.
type Stock struct {
	ID      int64 `json:"id"`
	InStock int64 `json:"in_stock"` // units on hand
	Reviews int   `json:"reviews"`  // how many reviews the product has
}

func main() {
	listen := flag.String("listen", service.Env("LISTEN_ADDR", "127.0.0.1:8084"), "HTTP listen address (env LISTEN_ADDR)")
	reviewsURL := flag.String("reviews", service.Env("REVIEWS_URL", "http://127.0.0.1:8083"), "reviews base URL (env REVIEWS_URL)")
	products := flag.Int64("products", 100, "ids 1..N have stock; others are 404 (match catalog's -products)")
	timeout := flag.Duration("upstream-timeout", 2*time.Second, "read and write deadline of each call to reviews")
	flag.Parse()

	log := service.Logger("inventory")
	// Hertz logs its start and shutdown steps at Info through its own
	// logger (hlog), in its own format; only its warnings are of interest.
	hlog.SetLevel(hlog.LevelWarn)
	if err := run(log, *listen, *reviewsURL, *products, *timeout); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, listen, reviewsURL string, products int64, timeout time.Duration) error {
	ctx, stop := service.SignalContext()
	defer stop()

	// One client for every request: it keeps its connections to reviews
	// alive between them. Dialer: netpoll, like the server.
	hc, err := client.NewClient(
		client.WithDialTimeout(timeout),
		client.WithClientReadTimeout(timeout),
		client.WithWriteTimeout(timeout),
	)
	if err != nil {
		return fmt.Errorf("create the reviews client: %w", err)
	}
	st := &stock{reviews: hc, reviewsURL: reviewsURL, products: products, log: log}

	ln, err := service.Listen(log, listen)
	if err != nil {
		return err
	}
	// Spin would wait for signals itself; Run and Shutdown keep the
	// shutdown the other services have (SignalContext, ShutdownTimeout).
	h := server.New(
		server.WithListener(ln),
		server.WithExitWaitTime(service.ShutdownTimeout),
		server.WithDisablePrintRoute(true),
	)
	h.GET("/stock/:id", st.get)

	serveErr := make(chan error, 1)
	go func() { serveErr <- h.Run() }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Closes idle connections at once and waits up to ShutdownTimeout
	// for requests in flight (Hertz does not say whether any were left).
	if err := h.Shutdown(context.Background()); err != nil {
		return fmt.Errorf("shut down the server on %s: %w", ln.Addr(), err)
	}
	if err := <-serveErr; err != nil { // Run returns once the listener is closed
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	}
	return nil
}

type stock struct {
	reviews    *client.Client
	reviewsURL string
	products   int64
	log        *slog.Logger
}

// get serves GET /stock/:id: 404 for an id outside 1..products, 502 when
// reviews does not answer.
func (s *stock) get(ctx context.Context, c *app.RequestContext) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id < 1 || id > s.products {
		c.JSON(http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no product %q", c.Param("id"))})
		return
	}
	n, err := s.reviewCount(ctx, id)
	if err != nil {
		if ctx.Err() == nil { // else the caller gave up: not our failure
			s.log.Warn("get stock", "id", id, "err", err)
		}
		c.JSON(http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	c.JSON(http.StatusOK, Stock{ID: id, InStock: unitsInStock(id), Reviews: n})
}

// reviewCount asks reviews for product id's reviews and counts them.
func (s *stock) reviewCount(ctx context.Context, id int64) (int, error) {
	url := s.reviewsURL + "/reviews/" + strconv.FormatInt(id, 10)
	status, body, err := s.reviews.Get(ctx, nil, url)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", url, err)
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("get %s: status %d", url, status)
	}
	var reviews []json.RawMessage
	if err := json.Unmarshal(body, &reviews); err != nil {
		return 0, fmt.Errorf("decode reviews from %s: %w", url, err)
	}
	return len(reviews), nil
}

// unitsInStock is a stable stock level between 0 and 24 derived from the
// id, standing in for a warehouse count; every seventh product is out of
// stock.
func unitsInStock(id int64) int64 {
	if id%7 == 0 {
		return 0
	}
	return (id*13)%24 + 1
}

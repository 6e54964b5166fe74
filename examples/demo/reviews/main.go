// Command reviews is the demo's review service: GET /reviews/{id} returns a
// small JSON list of reviews. It is instrumented with the OpenTelemetry SDK
// and otelhttp (server side), and continues an incoming W3C traceparent.
package main

import (
	"context"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/latscope/latscope/examples/demo/internal/service"
	"github.com/latscope/latscope/examples/demo/internal/telemetry"
)

// Review is one entry of the list GET /reviews/{id} returns.
type Review struct {
	Author string `json:"author"`
	Rating int    `json:"rating"`
	Text   string `json:"text"`
}

func main() {
	listen := flag.String("listen", service.Env("LISTEN_ADDR", "127.0.0.1:8083"), "HTTP listen address (env LISTEN_ADDR)")
	delay := flag.Duration("delay", 2*time.Millisecond, "simulated storage latency per request")
	flag.Parse()

	log := service.Logger("reviews")
	if err := run(log, *listen, *delay); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, listen string, delay time.Duration) error {
	ctx, stop := service.SignalContext()
	defer stop()

	shutdown, err := telemetry.Setup(ctx, log, "reviews")
	if err != nil {
		return err
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.Background(), service.ShutdownTimeout)
		defer cancel()
		if err := shutdown(flushCtx); err != nil {
			log.Warn("flush spans", "err", err)
		}
	}()

	h := &handler{tracer: otel.Tracer("github.com/latscope/latscope/examples/demo/reviews"), delay: delay}
	mux := http.NewServeMux()
	mux.Handle("/reviews/", h)
	// otelhttp extracts the incoming traceparent with the global
	// propagator, so this server span continues the caller's trace.
	traced := otelhttp.NewHandler(mux, "reviews",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " /reviews/{id}"
		}))
	return service.ServeHTTP(ctx, log, listen, traced)
}

type handler struct {
	tracer trace.Tracer
	delay  time.Duration
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		service.WriteError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	id, ok := service.PathID(r.URL.Path, "/reviews/")
	if !ok {
		service.WriteError(w, http.StatusBadRequest, "want /reviews/{id} with a positive integer id")
		return
	}
	service.WriteJSON(w, http.StatusOK, h.load(r.Context(), id))
}

// load returns the reviews of product id: zero to three, chosen
// deterministically from the id, after the simulated storage delay.
func (h *handler) load(ctx context.Context, id int64) []Review {
	_, span := h.tracer.Start(ctx, "load reviews", trace.WithAttributes(attribute.Int64("product.id", id)))
	defer span.End()

	time.Sleep(h.delay)
	authors := []string{"ada", "grace", "linus", "ken", "barbara"}
	texts := []string{"does the job", "arrived late", "would buy again", "too expensive", "exactly as described"}
	reviews := make([]Review, 0, 3)
	for i := int64(0); i < id%4; i++ {
		k := (id + i) % int64(len(authors))
		reviews = append(reviews, Review{
			Author: authors[k],
			Rating: int(1 + (id*7+i*3)%5),
			Text:   texts[(id*3+i)%int64(len(texts))],
		})
	}
	span.SetAttributes(attribute.Int("reviews.count", len(reviews)))
	return reviews
}

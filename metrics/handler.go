package metrics

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves g's metrics for GET /metrics: the OpenMetrics text when
// the scraper accepts it (Prometheus does; exemplars are only visible
// there), else the Prometheus text format. A collector's error does not
// fail the scrape: it is logged through slog at error level and the other
// metrics are served.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
		ErrorLog:          errorLog{},
	})
}

// errorLog hands promhttp's errors to slog's default logger.
type errorLog struct{}

func (errorLog) Println(v ...any) {
	slog.Error("serving metrics: a collector failed; the other metrics were served", "err", fmt.Sprint(v...))
}

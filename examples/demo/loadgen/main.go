// Command loadgen sends GET requests at a fixed concurrency to a URL pattern
// whose %d is replaced by product ids, cycling over a range; with -rate, at
// most that many per second (request i starts no earlier than i/rate
// seconds in: a service compared at one rate does the same work in the
// same time whatever else slows it). It stops after
// -n requests or -duration, whichever comes first, and prints requests,
// errors, requests per second and latency percentiles. It only talks to
// loopback addresses.
//
//	loadgen -url 'http://127.0.0.1:8080/product/%d' -ids 1-20 -n 1000 -c 8
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/latscope/latscope/examples/demo/internal/service"
)

func main() {
	cfg := config{}
	flag.StringVar(&cfg.pattern, "url", "http://127.0.0.1:8080/product/%d", "URL pattern; %d is replaced by a product id")
	ids := flag.String("ids", "1-20", "product ids to cycle over: LO-HI")
	flag.IntVar(&cfg.requests, "n", 1000, "stop after this many requests")
	flag.DurationVar(&cfg.duration, "duration", 30*time.Second, "stop after this long, even if -n is not reached")
	flag.IntVar(&cfg.concurrency, "c", 8, "requests in flight at once")
	flag.Float64Var(&cfg.rate, "rate", 0, "requests per second at most (0: as fast as -c allows)")
	flag.DurationVar(&cfg.timeout, "timeout", 5*time.Second, "deadline of each request")
	asJSON := flag.Bool("json", false, "print the result as one JSON object")
	flag.Parse()

	var err error
	if cfg.lo, cfg.hi, err = parseRange(*ids); err != nil {
		fail(err)
	}
	if err := cfg.check(); err != nil {
		fail(err)
	}
	ctx, stop := service.SignalContext()
	defer stop()

	res := run(ctx, cfg)
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Println(res)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "loadgen:", err)
	os.Exit(2)
}

type config struct {
	pattern     string
	lo, hi      int
	requests    int
	duration    time.Duration
	concurrency int
	rate        float64 // requests/s at most; 0: no pacing
	timeout     time.Duration
}

func (c config) check() error {
	if c.requests < 1 || c.duration <= 0 || c.concurrency < 1 || c.timeout <= 0 {
		return fmt.Errorf("-n, -duration, -c and -timeout must be positive")
	}
	if c.rate < 0 {
		return fmt.Errorf("-rate %v: want requests per second, or 0 for no pacing", c.rate)
	}
	if strings.Count(c.pattern, "%d") != 1 {
		return fmt.Errorf("-url %q must contain %%d exactly once", c.pattern)
	}
	u, err := url.Parse(fmt.Sprintf(c.pattern, c.lo))
	if err != nil {
		return fmt.Errorf("-url %q: %w", c.pattern, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("-url %q: scheme must be http or https", c.pattern)
	}
	if !loopbackHost(u.Hostname()) {
		return fmt.Errorf("-url %q: host %q is not a loopback address; loadgen only targets 127.0.0.0/8, ::1 or localhost", c.pattern, u.Hostname())
	}
	return nil
}

// loopbackHost reports whether host is localhost or a loopback IP literal.
// Other names are refused rather than resolved, so DNS cannot redirect load.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func parseRange(s string) (lo, hi int, err error) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		b = a
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || lo > hi {
		return 0, 0, fmt.Errorf("-ids %q: want LO-HI with LO <= HI, or one id", s)
	}
	return lo, hi, nil
}

// Result is what loadgen prints.
type Result struct {
	Requests int            `json:"requests"`
	Errors   int            `json:"errors"` // transport errors and non-2xx answers
	Status   map[string]int `json:"status"` // answers by HTTP status code; "error" for no answer
	Seconds  float64        `json:"seconds"`
	RPS      float64        `json:"rps"`
	P50ms    float64        `json:"p50_ms"`
	P90ms    float64        `json:"p90_ms"`
	P99ms    float64        `json:"p99_ms"`
	MaxMs    float64        `json:"max_ms"`
}

func (r Result) String() string {
	return fmt.Sprintf("requests=%d errors=%d rps=%.1f p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms elapsed=%.2fs",
		r.Requests, r.Errors, r.RPS, r.P50ms, r.P90ms, r.P99ms, r.MaxMs, r.Seconds)
}

type sample struct {
	latency time.Duration
	status  string
	ok      bool
}

func run(ctx context.Context, cfg config) Result {
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()

	dialer := &net.Dialer{Timeout: cfg.timeout, Control: refuseNonLoopback}
	transport := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: cfg.concurrency,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: cfg.timeout}

	var next atomic.Int64 // request sequence number; ticket i is request i
	samples := make([]sample, cfg.requests)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.requests {
					return
				}
				if cfg.rate > 0 {
					at := start.Add(time.Duration(float64(i) * float64(time.Second) / cfg.rate))
					if d := time.Until(at); d > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(d):
						}
					}
				}
				id := cfg.lo + i%(cfg.hi-cfg.lo+1)
				s := get(ctx, client, fmt.Sprintf(cfg.pattern, id))
				if ctx.Err() != nil && !s.ok {
					return // cut short by -duration or a signal: not a server error
				}
				samples[i] = s
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	return summarize(samples, elapsed)
}

func get(ctx context.Context, client *http.Client, u string) sample {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return sample{latency: time.Since(t0), status: "error"}
	}
	resp, err := client.Do(req)
	if err != nil {
		return sample{latency: time.Since(t0), status: "error"}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return sample{
		latency: time.Since(t0),
		status:  strconv.Itoa(resp.StatusCode),
		ok:      resp.StatusCode >= 200 && resp.StatusCode < 300,
	}
}

// refuseNonLoopback is the dialer's last check, after name resolution:
// even "localhost" must resolve to a loopback address.
func refuseNonLoopback(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to connect to non-loopback address %s", address)
	}
	return nil
}

func summarize(samples []sample, elapsed time.Duration) Result {
	res := Result{Status: map[string]int{}, Seconds: elapsed.Seconds()}
	lat := make([]time.Duration, 0, len(samples))
	for _, s := range samples {
		if s.status == "" {
			continue // never sent, or cut short by the deadline
		}
		res.Requests++
		res.Status[s.status]++
		if !s.ok {
			res.Errors++
		}
		lat = append(lat, s.latency)
	}
	if elapsed > 0 {
		res.RPS = float64(res.Requests) / elapsed.Seconds()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.P50ms = ms(percentile(lat, 50))
	res.P90ms = ms(percentile(lat, 90))
	res.P99ms = ms(percentile(lat, 99))
	if len(lat) > 0 {
		res.MaxMs = ms(lat[len(lat)-1])
	}
	return res
}

// percentile returns the nearest-rank p-th percentile of sorted latencies.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

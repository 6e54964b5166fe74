// Command pricing is the demo's gRPC price service (demo.Pricing/GetPrice).
// It reads a product's price from Redis (GET price:<id>); on a miss it
// computes a deterministic price and stores it with a TTL. It has no tracing
// code: latscope sees it only through uprobes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/latscope/latscope/examples/demo/internal/pricingpb"
	"github.com/latscope/latscope/examples/demo/internal/service"
)

func main() {
	listen := flag.String("listen", service.Env("LISTEN_ADDR", "127.0.0.1:8082"), "gRPC listen address (env LISTEN_ADDR)")
	redisAddr := flag.String("redis", service.Env("REDIS_ADDR", "127.0.0.1:6379"), "Redis address (env REDIS_ADDR)")
	products := flag.Int64("products", 100, "ids 1..N have a price; others are NotFound (match catalog's -products)")
	ttl := flag.Duration("ttl", 5*time.Minute, "how long a computed price stays cached in Redis")
	delay := flag.Duration("delay", envDuration("PRICING_DELAY"), "sleep this long in every GetPrice before asking Redis: an injected slowdown for latency analyses (env PRICING_DELAY)")
	flag.Parse()

	log := service.Logger("pricing")
	if *delay < 0 {
		log.Error("exit", "err", fmt.Sprintf("-delay %s is negative; give a duration ≥ 0 (e.g. 50ms)", *delay))
		os.Exit(2)
	}
	if err := run(log, *listen, *redisAddr, *products, *ttl, *delay); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
}

// envDuration reads a duration from the environment variable key; unset
// or unparsable is 0 (a bad value is reported by the flag's own check
// when given as -delay).
func envDuration(key string) time.Duration {
	d, _ := time.ParseDuration(os.Getenv(key))
	return d
}

func run(log *slog.Logger, listen, redisAddr string, products int64, ttl, delay time.Duration) error {
	ctx, stop := service.SignalContext()
	defer stop()

	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	pingCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := rdb.Ping(pingCtx).Err()
	cancel()
	if err != nil {
		return fmt.Errorf("ping redis at %s: %w (start redis-server or point -redis at one)", redisAddr, err)
	}

	ln, err := service.Listen(log, listen)
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	if delay > 0 {
		log.Info("injected delay", "delay", delay)
	}
	pricingpb.RegisterPricingServer(srv, &pricer{rdb: rdb, products: products, ttl: ttl, delay: delay, log: log})

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve grpc on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}

	log.Info("shutting down")
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(service.ShutdownTimeout):
		srv.Stop()
	}
	return nil
}

// pricer implements demo.Pricing on top of Redis.
type pricer struct {
	rdb      *redis.Client
	products int64
	ttl      time.Duration
	delay    time.Duration // slept in every GetPrice (-delay)
	log      *slog.Logger
}

// GetPrice returns the price of a product in cents, from Redis when cached.
func (p *pricer) GetPrice(ctx context.Context, req *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
	id, err := strconv.ParseInt(req.GetValue(), 10, 64)
	if err != nil || id < 1 || id > p.products {
		return nil, status.Errorf(codes.NotFound, "no product %q", req.GetValue())
	}
	key := "price:" + strconv.FormatInt(id, 10)
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}

	cents, err := p.rdb.Get(ctx, key).Int64()
	switch {
	case err == nil:
		return wrapperspb.Int64(cents), nil
	case !errors.Is(err, redis.Nil):
		p.log.Warn("redis get", "key", key, "err", err)
		return nil, status.Errorf(codes.Unavailable, "read %s from redis: %v", key, err)
	}

	cents = computePrice(id)
	if err := p.rdb.Set(ctx, key, cents, p.ttl).Err(); err != nil {
		p.log.Warn("redis set", "key", key, "err", err)
		return nil, status.Errorf(codes.Unavailable, "write %s to redis: %v", key, err)
	}
	return wrapperspb.Int64(cents), nil
}

// computePrice derives a stable price between 4.99 and 104.98 from the id,
// standing in for a slow pricing engine whose answers Redis caches.
func computePrice(id int64) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(strconv.FormatInt(id, 10)))
	return 499 + int64(h.Sum32()%10000)
}

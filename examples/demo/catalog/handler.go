package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/latscope/latscope/examples/demo/internal/pricingpb"
	"github.com/latscope/latscope/examples/demo/internal/service"
)

// Product is the JSON body of GET /product/{id}.
type Product struct {
	ID          int64    `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Price       int64    `json:"price"` // cents
	Reviews     []Review `json:"reviews"`
	Stock       int64    `json:"stock"` // units in stock, from inventory
}

// Review is one review, as the reviews service returns it.
type Review struct {
	Author string `json:"author"`
	Rating int    `json:"rating"`
	Text   string `json:"text"`
}

type handler struct {
	store        *store
	pricing      *pricingpb.Client
	reviewsURL   string
	inventoryURL string
	http         *http.Client // to reviews and inventory
	timeout      time.Duration
	log          *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		service.WriteError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	id, ok := service.PathID(r.URL.Path, "/product/")
	if !ok {
		service.WriteError(w, http.StatusNotFound, "want /product/{id} with a positive integer id")
		return
	}
	p, err := h.product(r.Context(), id)
	switch {
	case errors.Is(err, errNoProduct):
		service.WriteError(w, http.StatusNotFound, fmt.Sprintf("no product %d", id))
	case err != nil:
		if r.Context().Err() == nil { // else the caller gave up: not our failure
			h.log.Warn("get product", "id", id, "err", err)
		}
		service.WriteError(w, http.StatusBadGateway, err.Error())
	default:
		service.WriteJSON(w, http.StatusOK, p)
	}
}

// product reads the row from SQLite, then fetches the price, the reviews
// and the stock on three goroutines at once.
func (h *handler) product(ctx context.Context, id int64) (*Product, error) {
	name, desc, err := h.store.product(ctx, id)
	if err != nil {
		return nil, err
	}
	p := &Product{ID: id, Name: name, Description: desc}

	var wg sync.WaitGroup
	var priceErr, reviewsErr, stockErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		p.Price, priceErr = h.price(ctx, id)
	}()
	go func() {
		defer wg.Done()
		p.Reviews, reviewsErr = h.reviews(ctx, id)
	}()
	go func() {
		defer wg.Done()
		p.Stock, stockErr = h.stock(ctx, id)
	}()
	wg.Wait()
	if err := errors.Join(priceErr, reviewsErr, stockErr); err != nil {
		return nil, err
	}
	return p, nil
}

func (h *handler) price(ctx context.Context, id int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	return h.pricing.GetPrice(ctx, strconv.FormatInt(id, 10))
}

func (h *handler) reviews(ctx context.Context, id int64) ([]Review, error) {
	url := fmt.Sprintf("%s/reviews/%d", h.reviewsURL, id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build reviews request: %w", err)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer func() {
		// Read to EOF so the connection goes back to the pool: a body
		// closed unread closes its connection.
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	var reviews []Review
	if err := json.NewDecoder(resp.Body).Decode(&reviews); err != nil {
		return nil, fmt.Errorf("decode reviews from %s: %w", url, err)
	}
	if reviews == nil {
		reviews = []Review{}
	}
	return reviews, nil
}

// stock asks inventory how many units of product id are in stock. Like
// reviews, one function per call, so latscope's main.* spans name each
// upstream call by what it fetches.
func (h *handler) stock(ctx context.Context, id int64) (int64, error) {
	url := fmt.Sprintf("%s/stock/%d", h.inventoryURL, id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("build inventory request: %w", err)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", url, err)
	}
	defer func() {
		io.Copy(io.Discard, resp.Body) // to EOF: the connection goes back to the pool
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	var s struct {
		InStock int64 `json:"in_stock"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return 0, fmt.Errorf("decode stock from %s: %w", url, err)
	}
	return s.InStock, nil
}

// work serves GET /work/{id}[?rounds=N]: a fixed amount of computation
// (N SHA-256 rounds, default 256: ~170 µs of CPU on the benchmark VM; with
// the request and the call, ~200 µs), then one GET to reviews.
func (h *handler) work(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(strings.TrimPrefix(r.URL.Path, "/work/"), 10, 64)
	if err != nil || id <= 0 {
		http.Error(w, "want /work/{id} with a positive integer id", http.StatusBadRequest)
		return
	}
	rounds := 256 // ~170 µs of CPU
	if q := r.URL.Query().Get("rounds"); q != "" {
		if rounds, err = strconv.Atoi(q); err != nil || rounds < 0 || rounds > 1<<20 {
			http.Error(w, "want ?rounds= an integer from 0 to 1048576 (SHA-256 rounds of 1 KiB; 256 is ~170 µs)", http.StatusBadRequest)
			return
		}
	}
	sum := compute(rounds)
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	reviews, err := h.reviews(ctx, id)
	if err != nil {
		h.log.Warn("work", "id", id, "err", err)
		http.Error(w, "reviews unavailable", http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "%d %x\n", len(reviews), sum)
}

// compute hashes a 1 KiB block n times, feeding each digest back in.
func compute(n int) [sha256.Size]byte {
	var block [1024]byte
	var sum [sha256.Size]byte
	for i := 0; i < n; i++ {
		sum = sha256.Sum256(block[:])
		block[i%len(block)] ^= sum[0]
	}
	return sum
}
